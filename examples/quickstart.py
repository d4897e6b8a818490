import asyncio

from asyncq import Queue, Rate, Retry

queue = Queue("quickstart.db", concurrency=8)
queue.destination(
    "crm",
    rate=Rate(20, per=1, burst=5),  # at most 5 at once, then 20 a second
    retry=Retry(schedule=[60, 300, 1800]),  # then the dead letters
)


@queue.task(destination="crm")
async def post_deal(url: str, deal: dict[str, object]) -> int:
    print(f"POST {url} {deal}")  # a real handler would call the CRM here
    return 200


async def main() -> None:
    async with queue:  # opens the journal, starts the workers
        job = await post_deal.submit("https://crm.example/hooks", {"id": 42, "stage": "won"})
        print(f"job {job.id} returned {await job.result(timeout=10)}")

        rows = [{"url": "https://crm.example/hooks", "deal": {"id": i}} for i in range(3)]
        jobs = await post_deal.submit_many(rows)  # one transaction
        for job in jobs:
            await job.result(timeout=10)
        stats = await queue.stats()
        print(f"{stats.succeeded} jobs succeeded")


asyncio.run(main())
