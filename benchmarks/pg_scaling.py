"""asyncq on PostgreSQL: W1 drain with 1, 2 and 4 worker processes on one database,
and the cost of a hot rate bucket shared by them.

    python benchmarks/pg_scaling.py                  # 3 runs per figure
    python benchmarks/pg_scaling.py --runs 1 --jobs 10000
    python benchmarks/pg_scaling.py --dsn postgresql://postgres@127.0.0.1:5432/test

Each run: k worker processes (`asyncq` queues, concurrency 64, no-op task) start on
a fresh schema and go idle; then one `submit_many` writes N jobs, and the time
runs from its commit until `stats()` reports N succeeded. The workers hear of the
jobs by NOTIFY. Three layouts of the same N jobs:

- unpaced: one destination, no Rate;
- shared:  one destination with Rate(100,000/s, burst 1,000): never the limit, but
           every claim books its calls in the one bucket row, locked until the
           claim commits, so claims of all processes queue on that row;
- separate: the jobs spread over 4 destinations, each with such a Rate of its own.

Runs of the layouts and process counts alternate, so drift on the (shared)
machine hits all alike. Figures: median [min-max] jobs/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import time
import uuid

import asyncpg

from asyncq import Queue, Rate

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
CONCURRENCY = 64
RATE = Rate(100_000, per=1, burst=1_000)
LAYOUTS = {"unpaced": ["api"], "shared": ["api"], "separate": ["api0", "api1", "api2", "api3"]}
PROCESSES = (1, 2, 4)


def make_queue(dsn: str, layout: str, concurrency: int) -> Queue:
    queue = Queue(dsn, concurrency=concurrency)
    if layout != "unpaced":
        for name in LAYOUTS[layout]:
            queue.destination(name, rate=RATE)

    @queue.task(name="noop")
    async def noop(i: int) -> None:
        pass

    return queue


async def worker(dsn: str, layout: str) -> None:
    """A worker process: runs jobs until SIGTERM."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with make_queue(dsn, layout, CONCURRENCY):
        print("ready", flush=True)
        await stop.wait()


async def one_run(server: str, layout: str, processes: int, jobs: int) -> float:
    """jobs/s of one drain by `processes` workers on a fresh schema."""
    schema = f"asyncq_bench_{uuid.uuid4().hex[:10]}"
    dsn = f"{server}?schema={schema}"
    producer = make_queue(dsn, layout, 0)
    procs: list[asyncio.subprocess.Process] = []
    try:
        async with producer:  # creates the schema before the workers start
            for _ in range(processes):
                command = [__file__, "--worker", dsn, "--layout", layout]
                procs.append(
                    await asyncio.create_subprocess_exec(
                        sys.executable, *command, stdout=asyncio.subprocess.PIPE
                    )
                )
            for proc in procs:
                assert proc.stdout is not None
                if (await proc.stdout.readline()).strip() != b"ready":
                    raise RuntimeError(f"a worker failed to start ({proc.returncode})")
            names = LAYOUTS[layout]
            share = jobs // len(names)
            started = time.perf_counter()
            for d, name in enumerate(names):
                payloads = [{"i": i} for i in range(d * share, (d + 1) * share)]
                await producer.submit_many("noop", payloads, destination=name)
            # The work is in other processes: nothing here to wait on but the journal.
            while (await producer.stats()).succeeded < share * len(names):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            elapsed = time.perf_counter() - started
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            await asyncio.wait_for(proc.wait(), timeout=30)
        conn = await asyncpg.connect(server)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await conn.close()
    return share * len(names) / elapsed


async def main(server: str, runs: int, jobs: int) -> None:
    print(f"asyncq on PostgreSQL: {jobs:,} no-op jobs, concurrency {CONCURRENCY} per process")
    print(f"  python {sys.version.split()[0]}, {os.cpu_count()} CPUs, server {server}")
    print(f"  load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    figures: dict[tuple[str, int], list[float]] = {}
    for run in range(runs):
        for processes in PROCESSES:
            for layout in LAYOUTS:
                rate = await one_run(server, layout, processes, jobs)
                figures.setdefault((layout, processes), []).append(rate)
                print(f"  run {run + 1}: {layout:<8} {processes} process(es): {rate:,.0f} jobs/s")
    print(f"  load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print()
    print(f"{'processes':<10}" + "".join(f"{layout:>28}" for layout in LAYOUTS))
    for processes in PROCESSES:
        cells = []
        for layout in LAYOUTS:
            values = figures[layout, processes]
            cells.append(
                f"{statistics.median(values):,.0f} [{min(values):,.0f}-{max(values):,.0f}]"
            )
        print(f"{processes:<10}" + "".join(f"{c:>28}" for c in cells))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=DEFAULT_DSN, help="the server (no schema)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--layout", default="unpaced", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(worker(args.worker, args.layout))
    else:
        asyncio.run(main(args.dsn, args.runs, args.jobs))
