"""Deliveries per second: asyncq's built-in HTTP delivery next to a bare aiohttp
client loop, at the same concurrency, to one local receiver in another process.

    python benchmarks/http_delivery.py            # 3 runs of each, alternating
    python benchmarks/http_delivery.py --quick    # 1 run of each, fewer requests

The receiver is an aiohttp server in its own process on 127.0.0.1 that reads each
body and answers 204. The bare client: `concurrency` coroutines sending POSTs of
the same JSON body on one session, reading each answer (no journal, no signing).
asyncq: the same number of jobs, written beforehand by a producer, drained by a
queue of the same concurrency on an on-disk journal with its default durability
(survives kill -9), each delivery signed (Standard Webhooks) and guarded (the
address guard, with 127.0.0.1 allowed), its result written to the journal. A run
of asyncq counts from `start()` to the journal holding every success.

Runs alternate (bare, asyncq, bare, asyncq ...), so drift on the machine hits
both alike; the figure is the ratio of the medians. The target is asyncq at
>= 80 % of the bare client's rate.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import aiohttp

from asyncq import Http, Queue

SECRET = "whsec_" + "YmVuY2htYXJrIHNlY3JldCwgMzIgYnl0ZXMgbG9uZyE="
BODY = {"type": "deal.won", "deal": 42, "amount": 1250, "currency": "EUR", "owner": "sam"}

RECEIVER = textwrap.dedent(
    """
    import asyncio, sys
    from aiohttp import web

    async def hook(request):
        await request.read()
        return web.Response(status=204)

    async def main():
        app = web.Application()
        app.router.add_post("/hook", hook)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        print(site._server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


async def bare(url: str, n: int, concurrency: int) -> float:
    """Deliveries/s of a plain aiohttp loop."""
    left = n

    async def sender(session: aiohttp.ClientSession) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            async with session.post(url, json=BODY) as answer:
                await answer.read()
                assert answer.status == 204

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(sender(session) for _ in range(concurrency)))
        return n / (time.perf_counter() - started)


async def with_asyncq(url: str, n: int, concurrency: int, workdir: Path) -> float:
    """Deliveries/s of asyncq draining `n` signed deliveries from a durable journal."""
    path = workdir / f"deliveries-{time.monotonic_ns()}.db"
    async with Queue(path, concurrency=0) as producer:
        for start in range(0, n, 1000):
            await asyncio.gather(
                *(
                    producer.submit_http("hooks", url, json=BODY)
                    for _ in range(start, min(n, start + 1000))
                )
            )
    queue = Queue(path, concurrency=concurrency)
    queue.destination("hooks", http=Http(allow=["127.0.0.1"], signing_secret=SECRET))
    started = time.perf_counter()
    async with queue:
        while True:
            stats = await queue.stats()
            if stats.succeeded + stats.dead >= n:
                break
            await asyncio.sleep(0.005)
        elapsed = time.perf_counter() - started
        if stats.dead:
            raise SystemExit(f"{stats.dead} deliveries failed")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)  # noqa: ASYNC240 - after the timing
    return n / elapsed


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {cpu}, {os.cpu_count()} cores, "
        f"load average {load}, Python {platform.python_version()}, "
        f"aiohttp {metadata.version('aiohttp')}, git {commit or '?'}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--requests", type=int, default=None)
    parser.add_argument("--runs", type=int, default=None)
    args = parser.parse_args()
    n = args.requests or (2_000 if args.quick else 10_000)
    runs = args.runs or (1 if args.quick else 3)
    print(machine())
    print(f"{n:,} deliveries per run, concurrency {args.concurrency}, {runs} runs of each")
    command = [sys.executable, "-c", RECEIVER]
    # Blocking, before anything is timed.
    receiver = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)  # noqa: ASYNC220
    try:
        assert receiver.stdout is not None
        url = f"http://127.0.0.1:{int(receiver.stdout.readline())}/hook"
        await bare(url, 200, args.concurrency)  # warm up the receiver
        figures: dict[str, list[float]] = {"bare": [], "asyncq": []}
        with tempfile.TemporaryDirectory(prefix="asyncq-http-bench-") as workdir:
            for run in range(runs):
                figures["bare"].append(await bare(url, n, args.concurrency))
                print(f"run {run + 1}: bare aiohttp loop  {figures['bare'][-1]:8,.0f} deliveries/s")
                rate = await with_asyncq(url, n, args.concurrency, Path(workdir))
                figures["asyncq"].append(rate)
                print(f"run {run + 1}: asyncq (durable, signed) {rate:8,.0f} deliveries/s")
    finally:
        receiver.terminate()
        receiver.wait()
    bare_median = statistics.median(figures["bare"])
    asyncq_median = statistics.median(figures["asyncq"])
    print(f"median: bare {bare_median:,.0f}/s, asyncq {asyncq_median:,.0f}/s")
    print(f"asyncq / bare: {asyncq_median / bare_median:.0%} (target >= 80%)")


if __name__ == "__main__":
    asyncio.run(main())
