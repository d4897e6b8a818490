"""stats() on a journal of a million jobs, and the latency of submits while it runs.

    python benchmarks/stats.py                       # builds a journal in a temp dir
    python benchmarks/stats.py --journal big.db      # builds it there once, reuses it after
    python benchmarks/stats.py --jobs 200000         # a smaller journal
    python benchmarks/stats.py --postgres            # the PostgreSQL journal, on the local server
    python benchmarks/stats.py --postgres postgresql://user@host/db --schema big

With --postgres the journal is the schema `--schema` (default asyncq_bench_stats)
on that server (default postgresql://postgres@127.0.0.1:5432/test); like a
--journal file, it is built once and reused while it holds enough jobs, and left
in place after the run (DROP SCHEMA ... CASCADE removes it).

The journal holds `--jobs` jobs over 10 destinations: 90 % ready, 5 % delayed by an
hour, and the rest run by a worker just before the measurements (so the last
minute's activity, rates and latency histograms are there for stats() to read; a
few of those calls fail and wait to retry). It is filled with `submit_many` in
chunks of 50,000 and reused when `--journal` names a file that holds enough jobs.

Then, from a queue that runs no jobs (a web process, say):
1. stats(): the median, p99 and longest of `--calls` calls, one after another;
2. submits, one after another for `--seconds`, alone, while another task calls
   stats() without pause, and while it calls stats() every 100 ms, alternately (3
   rounds each): each submit's latency (until durable), p50, p99 and the longest.
   stats() reads on the journal's second connection (WAL readers never wait for
   the writer), so a submit should not wait for it; both share the process (the
   GIL, 2 cores here) all the same.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from throughput import DEFAULT_POSTGRES, load_average, machine_info  # benchmarks/throughput.py

from asyncq import Queue, Rate, Retry

TASK = "bench.call"
DESTINATIONS = [f"api-{n}" for n in range(10)]
CHUNK = 50_000
ROUNDS = 3


def producer(path: str) -> Queue:
    queue = Queue(path, concurrency=0)
    queue.task(name=TASK)(call)
    return queue


async def call(i: int) -> None:
    """A call that takes 1-5 ms; one in 50 fails (and waits an hour to retry)."""
    await asyncio.sleep(0.001 + (i % 5) / 1000)
    if i % 50 == 0:
        raise ConnectionError("connection reset")


def jobs_in(path: str) -> int:
    if not os.path.exists(path):
        return 0
    with sqlite3.connect(path) as conn:
        (n,) = conn.execute("SELECT coalesce(sum(n), 0) FROM counts").fetchone()
    return int(n)


async def postgres_jobs(dsn: str) -> int:
    """The jobs in the schema that `dsn` names (0 if it holds no journal)."""
    import asyncpg  # type: ignore[import-untyped, unused-ignore]

    server, schema = dsn.split("?schema=")
    conn = await asyncpg.connect(server)
    try:
        if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{schema}.jobs"):
            return 0
        return int(await conn.fetchval(f"SELECT count(*) FROM {schema}.jobs"))
    finally:
        await conn.close()


async def postgres_size(dsn: str) -> float:
    """The bytes of the jobs table of the schema that `dsn` names, with its indexes."""
    import asyncpg  # type: ignore[import-untyped, unused-ignore]

    server, schema = dsn.split("?schema=")
    conn = await asyncpg.connect(server)
    try:
        return float(await conn.fetchval("SELECT pg_total_relation_size($1)", f"{schema}.jobs"))
    finally:
        await conn.close()


async def fill(path: str, jobs: int) -> float:
    """Submit `jobs` jobs over the destinations: 95 % ready, 5 % an hour away."""
    start = time.perf_counter()
    async with producer(path) as queue:
        per_destination = jobs // len(DESTINATIONS)
        for destination in DESTINATIONS:
            delayed = per_destination // 20
            for first in range(0, per_destination, CHUNK):
                last = min(first + CHUNK, per_destination)
                payloads = [{"i": i} for i in range(first, last)]
                held = max(0, min(last, delayed) - first)
                if held:
                    await queue.submit_many(
                        TASK, payloads[:held], destination=destination, delay=3600
                    )
                if payloads[held:]:
                    await queue.submit_many(TASK, payloads[held:], destination=destination)
    return time.perf_counter() - start


async def work(path: str, seconds: float) -> int:
    """A worker runs jobs for `seconds`: the last minute's activity. The calls made."""
    queue = Queue(path, concurrency=64)
    for destination in DESTINATIONS:
        queue.destination(destination, rate=Rate(500), retry=Retry(schedule=[3600]))
    queue.task(name=TASK)(call)
    async with queue:
        before = await queue.stats()
        await asyncio.sleep(seconds)
        after = await queue.stats()
    return (after.succeeded + after.scheduled) - (before.succeeded + before.scheduled)


async def time_stats(queue: Queue, calls: int) -> list[float]:
    await queue.stats()  # warm the read connection's cache
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        await queue.stats()
        times.append(time.perf_counter() - start)
    return times


async def submit_latencies(
    queue: Queue, seconds: float, *, stats_every: float | None
) -> tuple[list[float], int]:
    """Submit one job after another for `seconds` (delayed a day, to a destination
    of their own: the backlog the worker would see is left as it is); with
    `stats_every` (seconds; 0: without pause), another task calls stats()
    meanwhile. The latencies, and the number of stats() calls made."""
    stop = asyncio.Event()
    reads = 0

    async def read_stats(every: float) -> None:
        nonlocal reads
        while not stop.is_set():
            await queue.stats()
            reads += 1
            await asyncio.sleep(every)

    reader = None if stats_every is None else asyncio.create_task(read_stats(stats_every))
    latencies = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        await queue.submit(TASK, i=1, destination="bench-submits", delay=86_400)
        latencies.append(time.perf_counter() - start)
    stop.set()
    if reader is not None:
        await reader
    return latencies, reads


def summary(seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
    return (
        f"p50 {statistics.median(ms):.3f} ms, p99 {p99:.3f} ms, max {ms[-1]:.3f} ms "
        f"({len(ms):,} calls)"
    )


async def main(path: str, jobs: int, calls: int, seconds: float, warm: float) -> None:
    held = await postgres_jobs(path) if path.startswith("postgresql://") else jobs_in(path)
    if held >= jobs:
        print(f"journal: reusing {path} ({held:,} jobs)")
    else:
        print(f"journal: filling {path} with {jobs:,} jobs ...", flush=True)
        print(f"  filled in {await fill(path, jobs):.1f} s")
    ran = await work(path, warm)
    print(f"  a worker made {ran:,} calls in {warm:g} s (the last minute's activity)")
    if path.startswith("postgresql://"):
        size, where = await postgres_size(path) / 1e6, "jobs table and indexes"
    else:
        size, where = (await asyncio.to_thread(os.path.getsize, path)) / 1e6, "file"
    async with producer(path) as queue:
        stats = await queue.stats()
        print(
            f"  {stats.ready + stats.scheduled + stats.succeeded + stats.dead:,} jobs: "
            f"{stats.ready:,} ready, {stats.scheduled:,} scheduled, {stats.succeeded:,} "
            f"succeeded, {stats.dead:,} dead, over {len(stats.destinations)} destinations; "
            f"{where} {size:.0f} MB; stats.workers = {stats.workers} after the worker stopped"
        )
        print()
        times = await time_stats(queue, calls)
        print(f"{'stats() on that journal:':<37}{summary(times)}")
        # Alone, then beside stats() without pause, then every 100 ms (a busy
        # dashboard), in rounds that alternate so that drift hits all alike.
        modes = {"alone": None, "while stats() loops": 0.0, "with stats() every 0.1 s": 0.1}
        latencies: dict[str, list[float]] = {mode: [] for mode in modes}
        reads = dict.fromkeys(modes, 0)
        for _ in range(ROUNDS):
            for mode, every in modes.items():
                measured, made = await submit_latencies(queue, seconds, stats_every=every)
                latencies[mode] += measured
                reads[mode] += made
        for mode in modes:
            print(f"a submit, {mode + ':':<27}{summary(latencies[mode])}")
            if reads[mode]:
                print(f"  ({reads[mode]:,} stats() calls meanwhile)")
        print(f"  ({ROUNDS} rounds of {seconds:g} s each, alternating)")


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--journal", type=Path, help="build the journal here, or reuse it")
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=200, help="stats() calls timed")
    parser.add_argument("--seconds", type=float, default=2.0, help="per round of submits")
    parser.add_argument("--warm", type=float, default=3.0, help="seconds the worker runs")
    parser.add_argument(
        "--postgres",
        nargs="?",
        const=DEFAULT_POSTGRES,
        metavar="DSN",
        help=f"the PostgreSQL journal on this server (default {DEFAULT_POSTGRES})",
    )
    parser.add_argument(
        "--schema", default="asyncq_bench_stats", help="with --postgres: the journal's schema"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="asyncq-stats-") as tmp:
        path = str(args.journal or Path(tmp) / "stats.db")
        if args.postgres:
            path = f"{args.postgres}?schema={args.schema}"
        directory = Path(tmp) if args.postgres else Path(path).resolve().parent
        print("asyncq stats() benchmark")
        for name, value in machine_info(directory):
            print(f"  {name + ':':<12} {value}")
        print()
        asyncio.run(main(path, args.jobs, args.calls, args.seconds, args.warm))
        print(f"\nload avg now {load_average()}")


if __name__ == "__main__":
    run()
