"""A queue at work, to look at with the `asyncq` command while it runs.

    python examples/operations.py ops.db            # works for 30 s, then stops
    asyncq top ops.db                               # in another terminal, meanwhile

Three destinations: "email" is paced at 5 calls a second and has a backlog of
300; "crm" fails every call, retries twice, then dead-letters; "enrich" answers
one call in twenty with a RetryAfter of 2 s, as an API does with a 429. The README's
`asyncq top` excerpt was taken from this, 15 s into a run.
"""

import argparse
import asyncio
import random

from asyncq import Queue, Rate, Retry, RetryAfter

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("journal", help="the journal file (created if missing)")
parser.add_argument("--seconds", type=float, default=30.0, help="how long to work (30)")
args = parser.parse_args()

queue = Queue(args.journal, concurrency=32)
queue.destination("email", rate=Rate(5, per=1))
queue.destination("crm", retry=Retry(schedule=[1, 2]))
queue.destination("enrich", rate=Rate(20, per=1))


@queue.task(name="send_email", destination="email")
async def send_email(to: str) -> None:
    await asyncio.sleep(random.uniform(0.02, 0.08))


@queue.task(name="post_deal", destination="crm")
async def post_deal(deal: int) -> None:
    await asyncio.sleep(0.05)
    raise ConnectionError("crm.example: connection refused")


@queue.task(name="enrich_company", destination="enrich")
async def enrich_company(domain: str) -> None:
    await asyncio.sleep(random.uniform(0.01, 0.03))
    if random.random() < 0.05:
        raise RetryAfter(2)


async def main() -> None:
    async with queue:
        await send_email.submit_many([{"to": f"user{i}@example.test"} for i in range(300)])
        loop = asyncio.get_running_loop()
        end = loop.time() + args.seconds
        while loop.time() < end:  # a steady trickle on top of the backlog
            await post_deal.submit(random.randrange(1000))
            await enrich_company.submit_many([{"domain": f"company{i}.example"} for i in range(4)])
            await asyncio.sleep(0.5)


asyncio.run(main())
