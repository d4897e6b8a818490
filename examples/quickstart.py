import asyncio
import shutil
import tempfile
from pathlib import Path

from asyncq import Queue, Rate, Retry

# A real service keeps its journal at a fixed path ("outbound.db"); this example
# uses a fresh directory, so that it leaves nothing behind and each run starts empty.
workdir = Path(tempfile.mkdtemp(prefix="asyncq-quickstart-"))
queue = Queue(workdir / "quickstart.db", concurrency=8)
queue.destination(
    "crm",
    rate=Rate(20, per=1, burst=5),  # at most 5 at once, then 20 a second
    retry=Retry(schedule=[60, 300, 1800]),  # then the dead letters
)


# An explicit name: a worker process that imports this module finds the task by it
# (the default, module.qualname, would be "__main__.post_deal" in a script).
@queue.task(name="post_deal", destination="crm")
async def post_deal(url: str, deal: dict[str, object]) -> int:
    print(f"POST {url} {deal}")  # a real handler would call the CRM here
    return 200


async def main() -> None:
    async with queue:  # opens the journal, starts the workers
        job = await post_deal.submit("https://crm.example/hooks", {"id": 42, "stage": "won"})
        print(f"job {job.id} returned {await job.result(timeout=10)}")

        rows = [{"url": "https://crm.example/hooks", "deal": {"id": i}} for i in range(3)]
        jobs = await post_deal.submit_many(rows)  # one transaction
        statuses = [await job.result(timeout=10) for job in jobs]
        print(f"{1 + len(statuses)} jobs succeeded in this run")
        stats = await queue.stats()
        print(f"the journal holds {stats.succeeded} succeeded and {stats.pending} pending jobs")


try:
    asyncio.run(main())
finally:
    shutil.rmtree(workdir)
