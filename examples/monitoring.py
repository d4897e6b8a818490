import asyncio
import shutil
import tempfile
from pathlib import Path

from asyncq import BacklogEvent, Circuit, Queue, Retry

workdir = Path(tempfile.mkdtemp(prefix="asyncq-monitoring-"))
queue = Queue(workdir / "monitoring.db", concurrency=8)
queue.destination("crm", retry=Retry(schedule=[0.5] * 20), circuit=Circuit(5, cooldown=1))
crm_is_up = asyncio.Event()  # the CRM is down when the example starts
cleared = asyncio.Event()


@queue.task(name="post_deal", destination="crm")
async def post_deal(deal: int) -> None:
    if not crm_is_up.is_set():  # a real handler would POST the deal to the CRM here
        raise ConnectionError("crm.example: connection refused")


def alert(event: BacklogEvent) -> None:  # page someone, post to a channel ...
    if event.cleared:
        print(f"cleared: {event.destination}: {event.depth} waiting")
        cleared.set()
    else:
        print(f"ALERT {event.destination}: {event.cause}: {event.detail}")


queue.on_backlog(alert, depth=20)  # for each destination; or oldest_age=, growing_for=


async def main() -> None:
    async with queue:
        for deal in range(40):  # 20 deals a second for 2 s, while the CRM is down
            await post_deal.submit(deal)
            await asyncio.sleep(0.05)
        crm_is_up.set()  # it comes back: the retries drain the backlog
        await asyncio.wait_for(cleared.wait(), timeout=30)
        crm = (await queue.stats()).destinations["crm"]
        print(f"crm: {crm.succeeded} succeeded, {crm.retries_per_minute:.0f} retries a minute")


try:
    asyncio.run(main())
finally:
    shutil.rmtree(workdir)
