"""The journal's size after 1,000,000 processed jobs, with the default retention.

    python benchmarks/journal_size.py               # 1,000,000 jobs, a few minutes
    python benchmarks/journal_size.py --jobs 50000  # a shorter run
    python benchmarks/journal_size.py --dir PATH    # the journal under PATH (default: a temp dir)

One queue (concurrency 64, the defaults otherwise: keep_finished 7 days,
keep_finished_jobs 100,000, a WAL bound of 16 MiB) on a fresh journal file drains
no-op jobs submitted in chunks with `submit_many`: a chunk is submitted once the
one before has run. After each chunk the script samples the file and WAL sizes;
at the end it waits for a whole retention round (they run every second), then
prints:

- the sizes (file and WAL) at the end and at their peaks during the run;
- the rows by state, and the time it took (jobs/s);
- pruning: rows deleted, the rate of its calls (rows per second of their own
  time), the longest call (its share of one writer turn), and the writer's
  turns (p50, p99, the longest), to show that pruning does not stall the writer;
- the size after `asyncq vacuum` (once the queue has closed).

Time is `time.perf_counter`; the retention rounds run on the real clock.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from throughput import load_average, machine_info, remove_journal  # benchmarks/throughput.py

from asyncq import Queue
from asyncq._journal import SqliteJournal
from asyncq._journal._sqlite_retention import MAX_WAL_BYTES
from asyncq._retention import DEFAULT_KEEP_FINISHED, DEFAULT_KEEP_FINISHED_JOBS
from asyncq.testing import run_until_idle

CONCURRENCY = 64
CHUNK = 10_000
TASK_NAME = "bench.noop"


class TimedJournal(SqliteJournal):
    """The SQLite journal, timing each writer turn and each prune call on its thread."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.turns: list[float] = []  # seconds
        self.prunes: list[tuple[float, int]] = []  # (seconds, rows deleted)
        prune = self._pruner.prune

        def timed_prune(*args: Any) -> Any:
            started = time.perf_counter()
            pruned = prune(*args)
            self.prunes.append((time.perf_counter() - started, pruned.deleted))
            return pruned

        self._pruner.prune = timed_prune  # type: ignore[method-assign]

    def _transaction(self, conn: sqlite3.Connection, turn: Any) -> list[Any]:
        started = time.perf_counter()
        try:
            return super()._transaction(conn, turn)
        finally:
            self.turns.append(time.perf_counter() - started)


def sizes(path: str) -> tuple[int, int]:
    wal = Path(path + "-wal")
    return Path(path).stat().st_size, wal.stat().st_size if wal.exists() else 0


def rows_by_state(path: str) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT state, count(*) FROM jobs GROUP BY state ORDER BY state")
        return dict(rows.fetchall())


def mb(size: float) -> str:
    return f"{size / 1e6:,.1f} MB"


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


async def drain(path: str, jobs: int, chunk: int) -> dict[str, Any]:
    journal = TimedJournal(path)
    queue = Queue(path, concurrency=CONCURRENCY, journal=journal)
    ran = 0
    chunk_done = asyncio.Event()
    target = 0

    @queue.task(name=TASK_NAME)
    async def noop(i: int) -> None:
        nonlocal ran
        ran += 1
        if ran == target:
            chunk_done.set()

    peak_file = peak_wal = 0
    started = time.perf_counter()
    async with queue:
        for first in range(0, jobs, chunk):
            size = min(chunk, jobs - first)
            target += size
            chunk_done.clear()
            await noop.submit_many([{"i": first + i} for i in range(size)])
            await chunk_done.wait()
            file_size, wal_size = sizes(path)
            peak_file, peak_wal = max(peak_file, file_size), max(peak_wal, wal_size)
        await run_until_idle(queue, timeout=300)
        elapsed = time.perf_counter() - started
        assert queue._engine is not None
        for _ in range(2):  # a whole retention round after the last job (they run every second)
            await queue._engine.retention.next_round()
        open_sizes = sizes(path)
        states = rows_by_state(path)
        stats = await queue.stats()
    return {
        "elapsed": elapsed,
        "peak_file": peak_file,
        "peak_wal": peak_wal,
        "open_sizes": open_sizes,
        "closed_sizes": sizes(path),
        "states": states,
        "succeeded_counted": stats.succeeded,
        "turns": journal.turns,
        "prunes": journal.prunes,
    }


def vacuum(path: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "asyncq.cli", "vacuum", path],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def report(path: str, jobs: int, result: dict[str, Any]) -> None:
    elapsed = result["elapsed"]
    print(f"processed {jobs:,} jobs in {elapsed:.1f} s ({jobs / elapsed:,.0f} jobs/s)")
    file_size, wal_size = result["open_sizes"]
    print(f"  journal while open:    file {mb(file_size)}, WAL {mb(wal_size)}")
    print(f"  peak during the run:   file {mb(result['peak_file'])}, WAL {mb(result['peak_wal'])}")
    file_size, wal_size = result["closed_sizes"]
    print(f"  after the queue closed: file {mb(file_size)}, WAL {mb(wal_size)}")
    states = ", ".join(f"{state} {n:,}" for state, n in result["states"].items())
    counted = result["succeeded_counted"]
    print(f"  rows by state: {states or 'none'} (stats() says succeeded {counted:,})")
    prunes: list[tuple[float, int]] = result["prunes"]
    deleted = sum(n for _, n in prunes)
    spent = sum(t for t, _ in prunes)
    working = [t for t, n in prunes if n]
    print(
        f"  pruning: {deleted:,} rows deleted in {len(prunes):,} calls, "
        f"{deleted / spent:,.0f} rows/s of their own time ({spent:.2f} s, "
        f"{spent / elapsed:.1%} of the run)"
        if deleted
        else f"  pruning: nothing deleted ({len(prunes):,} calls)"
    )
    if working:
        print(
            f"  a prune call that deletes: median {ms(statistics.median(working))}, "
            f"longest {ms(max(working))} (its share of one writer turn)"
        )
    turns = sorted(result["turns"])
    if turns:
        p99 = turns[min(len(turns) - 1, int(len(turns) * 0.99))]
        print(
            f"  writer turns: {len(turns):,}, median {ms(statistics.median(turns))}, "
            f"p99 {ms(p99)}, longest {ms(turns[-1])}"
        )
    print(f"  asyncq vacuum: {vacuum(path)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000, help="jobs to process")
    parser.add_argument("--chunk", type=int, default=CHUNK, help="jobs per submit_many")
    parser.add_argument("--dir", type=Path, help="directory for the journal file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="asyncq-bench-", dir=args.dir) as tmp:
        directory = Path(tmp).resolve()
        path = str(directory / "journal-size.db")
        print("asyncq journal size benchmark")
        for name, value in machine_info(directory):
            print(f"  {name + ':':<12} {value}")
        print(
            f"  {'settings:':<12} {args.jobs:,} no-op jobs, chunks of {args.chunk:,}, "
            f"concurrency={CONCURRENCY}, keep_finished={DEFAULT_KEEP_FINISHED / 86400:g} days, "
            f"keep_finished_jobs={DEFAULT_KEEP_FINISHED_JOBS:,}, "
            f"WAL bound {MAX_WAL_BYTES / 2**20:g} MiB"
        )
        print()
        try:
            result = asyncio.run(drain(path, args.jobs, args.chunk))
            report(path, args.jobs, result)
        finally:
            remove_journal(path)
    print(f"\nload avg now {load_average()}")


if __name__ == "__main__":
    main()
