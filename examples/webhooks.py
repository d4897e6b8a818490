import asyncio
import shutil
import tempfile
from pathlib import Path

from aiohttp import web

from asyncq import Http, JobDead, Queue, Retry

workdir = Path(tempfile.mkdtemp(prefix="asyncq-webhooks-"))
queue = Queue(workdir / "webhooks.db", concurrency=8)
queue.destination(
    "partner",
    retry=Retry(schedule=[60, 300, 1800]),
    http=Http(
        # In production: signing_secret_env="PARTNER_SECRET", from the environment.
        signing_secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        allow=["127.0.0.1"],  # this example's receiver is local; the guard refuses it otherwise
        timeout=10,
    ),
)


async def receive(request: web.Request) -> web.Response:
    """A partner's endpoint (here, to try it): takes deals, refuses an unknown one."""
    event = await request.json()
    print(f"received {event} as {request.headers['webhook-id']}")
    if event["deal"] == 13:
        return web.Response(status=404, text="no such deal")
    return web.Response(status=204)


async def main() -> None:
    receiver = web.Application()
    receiver.router.add_post("/hooks", receive)
    runner = web.AppRunner(receiver)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = "http://{}:{}/hooks".format(*runner.addresses[0])
    try:
        async with queue:
            job = await queue.submit_http("partner", url, json={"deal": 42, "stage": "won"})
            result = await job.result(timeout=10)
            print(f"delivered: HTTP {result['status']} in {result['latency'] * 1000:.0f} ms")

            refused = await queue.submit_http("partner", url, json={"deal": 13})
            try:
                await refused.result(timeout=10)
            except JobDead as dead:
                print(f"dead letter: {str(dead).split(': ', 1)[1]}")

            # A destination without an allow-list: the guard refuses 127.0.0.1, as it
            # refuses every address that is not public (no connection is made).
            guarded = await queue.submit_http("elsewhere", url, json={"deal": 7})
            try:
                await guarded.result(timeout=10)
            except JobDead as dead:
                print(f"refused: {str(dead).split(': ', 1)[1][:68]}...")
    finally:
        await runner.cleanup()


try:
    asyncio.run(main())
finally:
    shutil.rmtree(workdir)
