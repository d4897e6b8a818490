"""What destinations cost: limiting overhead, many dynamic destinations, limiter precision.

    python benchmarks/destinations.py            # 5 runs per figure
    python benchmarks/destinations.py --quick    # 1 run per figure, smaller N

1. Overhead of limiting: N no-op jobs over 100 destinations, each with a generous
   rate that never binds, against the same 100 destinations with no limit.
2. 10,000 distinct dynamic destinations ("endpoint:0" ... "endpoint:9999"), a few
   jobs each: processing jobs/s, with and without a per-endpoint rate.
3. Limiter precision under load: 10 paced destinations next to an unlimited flood;
   the most calls seen in any window of W seconds against the bound burst + rate * W.

Each run uses a fresh journal file on disk (default durability) and a queue of
concurrency 64; the backlog is written by a producer first, then timed while a
worker queue drains it. Figures are medians with min-max.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path

from throughput import machine_info, remove_journal  # benchmarks/throughput.py

from asyncq import Queue, Rate
from asyncq.testing import run_until_idle

CONCURRENCY = 64
GENEROUS = Rate(1_000_000, per=1, burst=1_000)  # never binds at these speeds
PACED = Rate(200, per=1, burst=10)


async def fill(path: str, jobs: list[tuple[str, int]]) -> None:
    """Write the backlog with a producer: (destination, i) pairs."""
    producer = Queue(path, concurrency=0)

    @producer.task(name="bench.call")
    async def call(i: int) -> None:
        pass

    by_destination: dict[str, list[dict[str, int]]] = defaultdict(list)
    for destination, i in jobs:
        by_destination[destination].append({"i": i})
    async with producer:
        for destination, payloads in by_destination.items():
            await call.submit_many(payloads, destination=destination)


async def drain(path: str, total: int, declare: Callable[[Queue], None]) -> float:
    """Seconds for a worker queue to run and acknowledge `total` jobs."""
    done = asyncio.Event()
    count = 0
    queue = Queue(path, concurrency=CONCURRENCY)
    declare(queue)

    @queue.task(name="bench.call")
    async def call(i: int) -> None:
        nonlocal count
        count += 1
        if count == total:
            done.set()

    async with queue:
        started = time.perf_counter()
        await asyncio.wait_for(done.wait(), 600)
        await run_until_idle(queue, timeout=600)
        elapsed = time.perf_counter() - started
        stats = await queue.stats()
    if stats.succeeded != total:
        raise RuntimeError(f"succeeded {stats.succeeded}, expected {total}")
    return elapsed


async def spread(path: str, n: int, destinations: int, limited: bool) -> float:
    """Jobs/s for `n` jobs spread over `destinations` names, each with a generous
    rate of its own when `limited`."""
    jobs = [(f"endpoint:{i % destinations}", i) for i in range(n)]
    await fill(path, jobs)

    def declare(queue: Queue) -> None:
        if limited:
            queue.destination("endpoint:*", rate=GENEROUS)

    return n / await drain(path, n, declare)


async def precision(path: str, paced_jobs: int, flood: int) -> dict[str, float]:
    """Call times of 10 paced destinations while an unlimited flood runs beside them."""
    jobs = [(f"paced:{i % 10}", i) for i in range(paced_jobs * 10)]
    jobs += [("flood", paced_jobs * 10 + i) for i in range(flood)]
    await fill(path, jobs)
    calls: dict[str, list[float]] = defaultdict(list)
    total = len(jobs)
    done = asyncio.Event()
    queue = Queue(path, concurrency=CONCURRENCY)
    queue.destination("paced:*", rate=PACED)

    @queue.task(name="bench.call")
    async def call(i: int) -> None:
        name = "flood" if i >= paced_jobs * 10 else f"paced:{i % 10}"
        calls[name].append(time.monotonic())
        if sum(map(len, calls.values())) == total:
            done.set()

    async with queue:
        await asyncio.wait_for(done.wait(), 600)
    figures: dict[str, float] = {}
    for window in (0.1, 0.5, 1.0, 2.0):
        bound = PACED.burst + PACED.per_second * window
        worst = max(most_in_window(calls[f"paced:{d}"], window) for d in range(10))
        figures[f"W={window:g}s"] = worst
        figures[f"bound W={window:g}s"] = bound
    spans = [max(calls[f"paced:{d}"]) - min(calls[f"paced:{d}"]) for d in range(10)]
    figures["achieved rate"] = statistics.median((paced_jobs - 1) / s for s in spans)
    return figures


def most_in_window(times: list[float], window: float) -> int:
    ordered = sorted(times)
    return max(bisect.bisect_right(ordered, t + window) - i for i, t in enumerate(ordered))


def interleaved(
    runs: int,
    directory: Path,
    first: Callable[[str], Awaitable[float]],
    second: Callable[[str], Awaitable[float]],
) -> tuple[tuple[float, str], tuple[float, str]]:
    """Like `repeat` for two measurements, their runs alternating so that drift on
    the machine hits both alike."""
    figures: tuple[list[float], list[float]] = ([], [])
    for run in range(runs):
        for measure, out in ((first, figures[0]), (second, figures[1])):
            path = str(directory / f"bench-{run}.db")
            remove_journal(path)
            out.append(asyncio.run(measure(path)))
            remove_journal(path)
    return _summary(figures[0]), _summary(figures[1])


def _summary(figures: list[float]) -> tuple[float, str]:
    median = statistics.median(figures)
    return median, f"{median:>10,.0f}   ({min(figures):,.0f}-{max(figures):,.0f})"


def repeat(
    runs: int, directory: Path, measure: Callable[[str], Awaitable[float]]
) -> tuple[float, str]:
    """The median of `runs` fresh runs, and that median with min-max as text."""
    figures = []
    for run in range(runs):
        path = str(directory / f"bench-{run}.db")
        remove_journal(path)
        figures.append(asyncio.run(measure(path)))
        remove_journal(path)
    median = statistics.median(figures)
    return median, f"{median:>10,.0f}   ({min(figures):,.0f}-{max(figures):,.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one run each, smaller N")
    args = parser.parse_args()
    runs = 1 if args.quick else 5
    n = 10_000 if args.quick else 50_000
    many = 20_000 if args.quick else 50_000
    with tempfile.TemporaryDirectory(prefix="asyncq-bench-") as tmp:
        directory = Path(tmp)
        for key, value in machine_info(directory):
            print(f"{key:>12}: {value}")
        print(f"\n{'jobs/s, median (min-max) of ' + str(runs) + ' runs':<60}")
        (free, free_text), (paced, paced_text) = interleaved(
            runs,
            directory,
            lambda p: spread(p, n, 100, limited=False),
            lambda p: spread(p, n, 100, limited=True),
        )
        print(f"  1. {n:,} jobs over 100 destinations, no limits      {free_text}")
        print(f"     the same, each destination generously limited  {paced_text}")
        cost = 1 - paced / free
        verdict = "ok" if cost < 0.15 else "MISS"
        print(f"     limiting costs {cost:.1%} of unlimited throughput (target < 15%: {verdict})")
        free, free_text = repeat(runs, directory, lambda p: spread(p, many, 10_000, limited=False))
        paced, paced_text = repeat(runs, directory, lambda p: spread(p, many, 10_000, limited=True))
        print(f"  2. {many:,} jobs over 10,000 dynamic destinations      {free_text}")
        print(f"     the same, each endpoint:* with its own rate      {paced_text}")
        print("     target: at least 10,000 jobs/s")
        path = str(directory / "precision.db")
        per = 300 if args.quick else 1_000
        figures = asyncio.run(precision(path, per, 20_000))
        print(f"\n  3. limiter precision: 10 destinations at {PACED}, {per:,} jobs each,")
        print("     beside 20,000 unlimited jobs: most calls in any window vs the bound")
        for window in (0.1, 0.5, 1.0, 2.0):
            worst = figures[f"W={window:g}s"]
            bound = figures[f"bound W={window:g}s"]
            print(f"     W = {window:>4g} s: {worst:>5.0f} calls (bound {bound:.0f})")
        print(f"     achieved rate (median over destinations): {figures['achieved rate']:.1f}/s")


if __name__ == "__main__":
    main()
