import asyncio
import shutil
import tempfile
from pathlib import Path

from asyncq import Queue, current_job

# A fresh journal for this example; a real service keeps one at a fixed path.
workdir = Path(tempfile.mkdtemp(prefix="asyncq-periodic-"))
queue = Queue(workdir / "periodic.db", concurrency=4)


@queue.task(name="send_digest")
async def send_digest(team: str) -> None:
    print(f"job {current_job().id}: the digest for {team}")


# At every fifth minute of the hour, UTC (tz="Europe/Berlin" reads it in Berlin).
queue.periodic(send_digest, cron="*/5 * * * *", kwargs={"team": "ops"})
# At every whole second; a second schedule of one task needs a name of its own.
queue.periodic(send_digest, every=1, kwargs={"team": "sre"}, name="sre-digest")


async def main() -> None:
    async with queue:  # every queue that runs jobs runs the schedules
        await asyncio.sleep(2.5)  # a service runs for as long as it runs


try:
    asyncio.run(main())
finally:
    shutil.rmtree(workdir)
