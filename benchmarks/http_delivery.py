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

A third figure separates the queue's own cost from the delivery's: asyncq running
a handler of one's own that makes the bare loop's call (same session settings, no
signing, no guard, no classification), from the same durable journal. A fourth runs
the same jobs through a handler that makes no call: the queue's own share of a job.
With it the script prints a bound: the bare loop's CPU per delivery over that plus
the no-op job's, what any delivery through this queue could reach if the delivery's
own work were free and a job waiting on I/O cost the queue no more than one that
returns at once.

Runs alternate (bare, submit_http, own handler, no call, bare ...), so drift on the machine
hits all alike; the figure is the ratio of the medians, and each run's ratio is
printed too. The target is submit_http at >= 80 % of the bare client's rate.
Beside each rate, the CPU time this process spent per delivery (all its threads,
`time.process_time`): on a machine shared with other work, rates swing by half
from one run to the next, CPU per delivery much less.

    python benchmarks/http_delivery.py --instructions   # CPU instructions a delivery

`--instructions` counts instead of timing: each of the three drains, in a process
of its own under valgrind's callgrind (every thread), with N deliveries and with
N/10; the difference over the difference in deliveries is the client's CPU
instructions per delivery, which does not depend on the machine's load. For
asyncq the journal is written beforehand by another process (not counted): what
is counted is the queue draining it, from `start()` to idle with every result
written. Valgrind runs the client some fifty times slower than the receiver, so
the client's figures are those of a receiver that answers at once.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asyncq import Http, Queue, current_job  # noqa: E402 - after the path: this checkout's
from asyncq.testing import run_until_idle  # noqa: E402

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


KINDS = ("bare", "asyncq", "own", "noop")
NAMES = {
    "bare": "bare aiohttp loop",
    "asyncq": "asyncq submit_http (durable, signed, guarded)",
    "own": "asyncq, a handler of one's own (durable, unsigned)",
    "noop": "asyncq, a handler that makes no call (durable)",
}
TASKS = {"own": "own_handler", "noop": "noop_handler"}

Figure = tuple[float, float]  # deliveries/s, CPU seconds of this process per delivery


async def bare(url: str, n: int, concurrency: int) -> Figure:
    """Deliveries/s of a plain aiohttp loop, and its CPU time per delivery."""
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
        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(sender(session) for _ in range(concurrency)))
        return n / (time.perf_counter() - started), (time.process_time() - cpu) / n


def declare(queue: Queue) -> None:
    """The destination and the handler of one's own, in every queue of a run."""
    queue.destination("hooks", http=Http(allow=["127.0.0.1"], signing_secret=SECRET))

    @queue.task(name="own_handler", destination="hooks")
    async def own_handler(url: str, event: dict[str, object]) -> int:
        http = current_job().state["http"]
        async with http.post(url, json=event) as answer:
            await answer.read()
            return answer.status

    @queue.task(name="noop_handler", destination="hooks")
    async def noop_handler(url: str, event: dict[str, object]) -> int:
        return 204  # the queue's share alone: the same jobs, no call


@asynccontextmanager
async def own_session(queue: Queue) -> AsyncIterator[dict[str, object]]:
    """The lifespan of the handler of one's own: the bare loop's session."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        yield {"http": http}


async def produce(path: Path, url: str, n: int, kind: str) -> list[int]:
    """Write `n` deliveries of `kind` to the journal at `path`; their ids."""
    producer = Queue(path, concurrency=0)
    declare(producer)
    async with producer:
        ids = []
        for start in range(0, n, 1000):
            count = min(n, start + 1000) - start
            if kind == "asyncq":
                jobs = [producer.submit_http("hooks", url, json=BODY) for _ in range(count)]
                ids += [job.id for job in await asyncio.gather(*jobs)]
            else:
                rows = [{"url": url, "event": BODY}] * count
                ids += [job.id for job in await producer.submit_many(TASKS[kind], rows)]
    return ids


def draining_queue(path: Path, concurrency: int, kind: str) -> Queue:
    queue = Queue(path, concurrency=concurrency, lifespan=own_session if kind == "own" else None)
    declare(queue)
    return queue


async def with_asyncq(url: str, n: int, concurrency: int, workdir: Path, kind: str) -> Figure:
    """Deliveries/s of asyncq draining `n` deliveries from a durable journal: through
    the built-in delivery (`asyncq`: signed, guarded, classified), through a handler
    of one's own that makes the same call on a session from the lifespan (`own`), or
    through a handler that makes no call (`noop`: the queue's own share)."""
    path = workdir / f"deliveries-{time.monotonic_ns()}.db"
    builtin = kind == "asyncq"
    ids = await produce(path, url, n, kind)
    queue = draining_queue(path, concurrency, kind)
    started, cpu = time.perf_counter(), time.process_time()
    async with queue:
        # The journal's counts, 50 times a second (waiting on 10,000 results would
        # cost more than the deliveries: each waiter looks at its job).
        while (stats := await queue.stats()).succeeded + stats.dead < n:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu  # every thread: the journal's too
        if stats.dead:
            raise SystemExit(f"{stats.dead} deliveries failed")
        last = await queue.get(ids[-1])
    assert (last.result["status"] if builtin else last.result) == 204
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)  # noqa: ASYNC240 - after the timing
    return n / elapsed, cpu / n


# -- --instructions: one drain per process, counted by callgrind ---------------------


async def drain(kind: str, url: str, n: int, concurrency: int, path: Path) -> None:
    """One drain of `kind`, for callgrind: the bare loop, or a queue draining the
    journal at `path` until idle (no polling: its cost would grow with the time
    valgrind takes, not with the deliveries)."""
    if kind == "bare":
        await bare(url, n, concurrency)
        return
    queue = draining_queue(path, concurrency, kind)
    async with queue:
        await run_until_idle(queue, timeout=3600)
        stats = await queue.stats()
    if stats.succeeded != n:
        raise SystemExit(f"{stats.succeeded} of {n} deliveries succeeded ({stats.dead} dead)")


def callgrind_totals(directory: Path) -> tuple[int, int]:
    """The instructions of a callgrind run, from its files: the main thread's (the
    event loop's) and the other threads' (the journal's connections)."""
    main = others = 0
    for part in directory.glob("callgrind.out-*"):
        found = re.search(r"^summary: (\d+)", part.read_text(), re.M)
        count = int(found[1]) if found else 0
        if part.name.endswith("-01"):
            main += count
        else:
            others += count
    return main, others


async def instructions(kind: str, url: str, n: int, concurrency: int) -> tuple[float, float]:
    """CPU instructions of the client process per delivery (see the docstring): in
    the event loop's thread, and in the others."""
    totals = []
    small = max(1, n // 10)
    for count in (n, small):
        with tempfile.TemporaryDirectory(prefix="asyncq-http-count-") as directory:
            path = Path(directory) / "deliveries.db"
            if kind != "bare":
                await produce(path, url, count, kind)
            out = Path(directory) / "callgrind.out"
            command = [
                "valgrind",
                "--tool=callgrind",
                "--separate-threads=yes",
                f"--callgrind-out-file={out}",
                sys.executable,
                __file__,
                "--drain",
                kind,
                url,
                str(count),
                str(concurrency),
                str(path),
            ]
            run = functools.partial(subprocess.run, check=True, capture_output=True)
            await asyncio.to_thread(run, command)
            totals.append(callgrind_totals(Path(directory)))
    (main, others), (main_small, others_small) = totals
    return (main - main_small) / (n - small), (others - others_small) / (n - small)


async def count_instructions(
    url: str, n: int, concurrency: int, runs: int, kinds: list[str]
) -> None:
    """Print each kind's instructions per delivery, run by run, and their medians:
    how a run's work is cut into journal turns moves with timing, so a count moves
    by a few per cent from one run to the next."""
    print(f"CPU instructions per delivery ({n:,} less {n // 10:,}), callgrind:")
    print(f"  {'':52s} {'all':>10s} {'loop':>10s} {'others':>10s}")
    counted: dict[str, list[tuple[float, float]]] = {kind: [] for kind in kinds}
    for run in range(runs):
        for kind in kinds:
            main, others = await instructions(kind, url, n, concurrency)
            counted[kind].append((main, others))
            figures = f"{main + others:10,.0f} {main:10,.0f} {others:10,.0f}"
            print(f"  run {run + 1}: {NAMES[kind]:45s} {figures}", flush=True)
    if runs > 1:
        for kind, figures in counted.items():
            total = statistics.median(a + b for a, b in figures)
            main = statistics.median(a for a, _ in figures)
            others = statistics.median(b for _, b in figures)
            print(f"  median: {NAMES[kind]:44s} {total:10,.0f} {main:10,.0f} {others:10,.0f}")


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
    parser.add_argument(
        "--instructions", action="store_true", help="count CPU instructions (valgrind)"
    )
    parser.add_argument(
        "--kinds", nargs="+", default=list(KINDS), choices=KINDS, help="with --instructions"
    )
    parser.add_argument("--drain", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drain:  # a child of --instructions
        kind, url, count, concurrency, path = args.drain
        await drain(kind, url, int(count), int(concurrency), Path(path))
        return
    n = args.requests or (2_000 if args.quick or args.instructions else 10_000)
    runs = args.runs or (1 if args.quick or args.instructions else 3)
    print(machine())
    print(f"{n:,} deliveries per run, concurrency {args.concurrency}, {runs} runs of each")
    command = [sys.executable, "-c", RECEIVER]
    # Blocking, before anything is timed.
    receiver = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)  # noqa: ASYNC220
    try:
        assert receiver.stdout is not None
        url = f"http://127.0.0.1:{int(receiver.stdout.readline())}/hook"
        await bare(url, 200, args.concurrency)  # warm up the receiver
        if args.instructions:
            await count_instructions(url, n, args.concurrency, runs, args.kinds)
            return
        figures: dict[str, list[float]] = {kind: [] for kind in KINDS}
        cpus: dict[str, list[float]] = {kind: [] for kind in KINDS}
        names = NAMES
        with tempfile.TemporaryDirectory(prefix="asyncq-http-bench-") as workdir:
            for run in range(runs):
                for kind in KINDS:
                    if kind == "bare":
                        rate, cpu = await bare(url, n, args.concurrency)
                    else:
                        rate, cpu = await with_asyncq(url, n, args.concurrency, Path(workdir), kind)
                    figures[kind].append(rate)
                    cpus[kind].append(cpu)
                    print(
                        f"run {run + 1}: {names[kind]:52s} {rate:7,.0f} deliveries/s, "
                        f"{cpu * 1e6:5.0f} us CPU each"
                    )
    finally:
        receiver.terminate()
        receiver.wait()
    medians = {kind: statistics.median(rates) for kind, rates in figures.items()}
    cpu_medians = {kind: statistics.median(cpu) for kind, cpu in cpus.items()}
    for kind, median in medians.items():
        print(
            f"median: {names[kind]:52s} {median:7,.0f} deliveries/s, "
            f"{cpu_medians[kind] * 1e6:5.0f} us CPU each"
        )
    print(f"submit_http / bare: {medians['asyncq'] / medians['bare']:.0%} (target >= 80%)")
    print(f"a handler of one's own / bare: {medians['own'] / medians['bare']:.0%}")
    paired = [a / b for a, b in zip(figures["asyncq"], figures["bare"], strict=True)]
    print("submit_http / bare, run by run: " + ", ".join(f"{r:.0%}" for r in paired))
    # On a loaded machine wall-clock rates swing from one run to the next; the CPU
    # this process spends per delivery hardly moves. Its ratio is the rate asyncq
    # reaches against the bare loop when the client's CPU is what limits both.
    cpu_ratio = cpu_medians["bare"] / cpu_medians["asyncq"]
    print(f"by CPU per delivery, submit_http / bare: {cpu_ratio:.0%}")
    print(
        f"by CPU per delivery, own handler / bare: {cpu_medians['bare'] / cpu_medians['own']:.0%}"
    )
    # The most any delivery through this queue could reach if the delivery's own
    # work (signing, guard, classification, result) were free and a job that waits
    # on I/O cost the queue no more than one that returns at once: the bare call
    # plus the no-op job's share, by CPU per delivery.
    bound = cpu_medians["bare"] / (cpu_medians["bare"] + cpu_medians["noop"])
    print(f"bound, by CPU: bare / (bare + a no-op job's share): {bound:.0%}")


if __name__ == "__main__":
    asyncio.run(main())
