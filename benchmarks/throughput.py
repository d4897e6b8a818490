"""Throughput, latency and memory of asyncq on a durable on-disk journal.

    python benchmarks/throughput.py             # full: 3 runs per figure, a few minutes
    python benchmarks/throughput.py --quick     # 1 run per figure, smaller N
    python benchmarks/throughput.py --dir PATH  # put the journals under PATH (default: a temp dir)
    python benchmarks/throughput.py --postgres  # a third column: the PostgreSQL journal
    python benchmarks/throughput.py --postgres postgresql://user@host/db   # on that server

With --postgres, every run of the PostgreSQL column gets a fresh schema on the
server (default postgresql://postgres@127.0.0.1:5432/test), dropped after it; the
server shares this machine's cores unless it is elsewhere.

Every run is a fresh subprocess (`--one SPEC`, internal) with a fresh journal
file, so runs share no warm state but the OS page cache. Runs of the two
`synchronous` modes are interleaved, so drift on the machine hits both alike.
Each figure is the median of the runs, with min-max. Time is `time.perf_counter`.

A job counts as done when its success is in the journal, not when its handler
returns: the handler counts to N and sets an event (no polling while jobs run),
then `run_until_idle` waits for the last acks to be written and `stats()`
confirms `succeeded == N`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import psutil  # type: ignore[import-untyped, unused-ignore]

import asyncq
from asyncq import Queue
from asyncq.testing import run_until_idle

Sync = Literal["NORMAL", "FULL", "postgres"]  # SQLite's two modes, or the PostgreSQL journal
Figures = dict[str, float]

MODES: tuple[Sync, ...] = ("NORMAL", "FULL")  # with --postgres, "postgres" too
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
CONCURRENCY = 64
# jobs/s offered by the paced producers (2.): above the 15,000 jobs/s target, so one
# run shows the target's rate and its latency together (a run offered exactly 15,000
# ends a little under it: the last jobs' start-up and drain are in the time).
OFFERED = 20_000.0
FILL_CHUNK = 50_000
TASK_NAME = "bench.noop"  # fixed, so the fill process and the worker process agree
WAIT_LIMIT = 300.0  # seconds; a run that takes longer has hung
CHILD_LIMIT = 240.0  # seconds for one child process


@dataclass(frozen=True)
class Sizes:
    runs: int
    backlog: int  # 1. jobs in the submit_many backlog
    producers: int  # 2. concurrent producers ...
    per_producer: int  # ... and the jobs each submits one at a time
    single: int  # 2. jobs from one producer awaiting each submit
    bulk: int  # 3. jobs in one submit_many into an empty journal
    pending: int  # 4. jobs pending in the journal ...
    process: int  # ... and how many of them the measured worker runs


FULL = Sizes(
    runs=3,
    backlog=20_000,
    producers=200,
    per_producer=100,
    single=2_000,
    bulk=50_000,
    pending=1_000_000,
    process=50_000,
)
QUICK = Sizes(
    runs=1,
    backlog=5_000,
    producers=200,
    per_producer=25,
    single=500,
    bulk=10_000,
    pending=200_000,
    process=20_000,
)


# -- in the child process: one measurement each -------------------------------


class Countdown:
    """Counts handler calls; `done` is set when the count reaches `target`."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.count = 0
        self.done = asyncio.Event()

    def tick(self) -> None:
        self.count += 1
        if self.count == self.target:
            self.done.set()


def make_queue(path: str, sync: Sync, concurrency: int) -> Queue:
    """A queue on the journal at `path`: a SQLite file in mode `sync`, or a
    PostgreSQL connection string."""
    if sync == "postgres":
        return Queue(path, concurrency=concurrency)
    return Queue(path, concurrency=concurrency, synchronous=sync)


def noop_queue(
    path: str, sync: Sync, countdown: Countdown, concurrency: int = CONCURRENCY
) -> Queue:
    """A queue with one no-op task, `TASK_NAME`, that ticks `countdown`."""
    queue = make_queue(path, sync, concurrency)

    @queue.task(name=TASK_NAME)
    async def noop(i: int) -> None:
        countdown.tick()

    return queue


async def wait_all_succeeded(queue: Queue, countdown: Countdown) -> None:
    """Wait for the last handler, then for its ack to be in the journal; check the count."""
    async with asyncio.timeout(WAIT_LIMIT):
        await countdown.done.wait()
        await run_until_idle(queue, timeout=WAIT_LIMIT)
    stats = await queue.stats()
    if stats.succeeded != countdown.target:
        raise RuntimeError(f"succeeded = {stats.succeeded}, expected {countdown.target}")


async def measure_backlog(path: str, sync: Sync, n: int) -> Figures:
    """1. submit_many(n) into a running queue; time to all succeeded."""
    countdown = Countdown(n)
    queue = noop_queue(path, sync, countdown)
    payloads = [{"i": i} for i in range(n)]
    async with queue:
        start = time.perf_counter()
        await queue.submit_many(TASK_NAME, payloads)
        submitted = time.perf_counter()
        await wait_all_succeeded(queue, countdown)
        finished = time.perf_counter()
    return {
        "submit_s": submitted - start,
        "processing_rate": n / (finished - submitted),
        "end_to_end_rate": n / (finished - start),
    }


async def measure_producers(
    path: str, sync: Sync, producers: int, per_producer: int, offered: float | None = None
) -> Figures:
    """2. `producers` coroutines each awaiting `submit` `per_producer` times while workers run.

    With `offered` (jobs/s), the producers together submit at that rate, each on its
    own fixed schedule (latency at a given load); without it, as fast as they can
    (throughput at saturation, where latency is mostly time spent queueing).
    """
    n = producers * per_producer
    countdown = Countdown(n)
    to_start: list[float] = []  # submit called -> handler started
    to_return: list[float] = []  # submit called -> submit returned (durable)
    queue = make_queue(path, sync, CONCURRENCY)

    @queue.task(name=TASK_NAME)
    async def stamp(t: float) -> None:
        started = time.perf_counter()
        to_start.append(started - t)
        countdown.tick()

    async def producer(first: float, every: float) -> None:
        for k in range(per_producer):
            if every:
                await asyncio.sleep(max(0.0, first + k * every - time.perf_counter()))
            t = time.perf_counter()
            await stamp.submit(t=t)
            to_return.append(time.perf_counter() - t)

    async with queue:
        start = time.perf_counter()
        every = producers / offered if offered else 0.0
        async with asyncio.TaskGroup() as group:
            for p in range(producers):
                group.create_task(producer(start + every * p / producers, every))
        await wait_all_succeeded(queue, countdown)
        finished = time.perf_counter()
    return {
        "rate": n / (finished - start),
        "start_p50_ms": percentile(to_start, 50) * 1e3,
        "start_p99_ms": percentile(to_start, 99) * 1e3,
        "submit_p50_ms": percentile(to_return, 50) * 1e3,
    }


async def measure_bulk_submit(path: str, sync: Sync, n: int) -> Figures:
    """3. submit_many(n) into an empty journal from a producer (concurrency=0)."""
    queue = noop_queue(path, sync, Countdown(n), concurrency=0)
    payloads = [{"i": i} for i in range(n)]
    async with queue:
        start = time.perf_counter()
        await queue.submit_many(TASK_NAME, payloads)
        elapsed = time.perf_counter() - start
    return {"seconds": elapsed}


async def fill_journal(path: str, sync: Sync, n: int) -> Figures:
    """4a. Put `n` pending jobs in the journal, in submit_many chunks (not measured)."""
    queue = noop_queue(path, sync, Countdown(n), concurrency=0)
    start = time.perf_counter()
    async with queue:
        for first in range(0, n, FILL_CHUNK):
            chunk = [{"i": i} for i in range(first, min(first + FILL_CHUNK, n))]
            await queue.submit_many(TASK_NAME, chunk)
    return {"fill_s": time.perf_counter() - start}


async def measure_big_backlog(path: str, sync: Sync, pending: int, n: int) -> Figures:
    """4b. A worker over a journal of `pending` jobs runs `n` of them; peak RSS of this process."""
    baseline = peak_rss_mb()
    countdown = Countdown(n)
    queue = noop_queue(path, sync, countdown)
    async with queue:
        start = time.perf_counter()
        async with asyncio.timeout(WAIT_LIMIT):
            await countdown.done.wait()
        ran = time.perf_counter()
    peak = peak_rss_mb()
    await check_handed_back(path, sync, pending, n)
    stats_figures = await measure_stats(path, sync)
    return {
        "rate": n / (ran - start),
        "peak_rss_mb": peak,
        "baseline_rss_mb": baseline,
        **stats_figures,
    }


async def measure_stats(path: str, sync: Sync) -> Figures:
    """4c. On the big journal: how long stats() takes, and how long a submit waits
    while stats() runs (the submits loop until stats() returns)."""
    async with noop_queue(path, sync, Countdown(1), concurrency=0) as queue:
        await queue.stats()  # warm the read connection's cache
        waits: list[float] = []
        stats_ms: list[float] = []
        for _ in range(5):
            start = time.perf_counter()
            reading = asyncio.ensure_future(queue.stats())
            while not reading.done():
                submitted = time.perf_counter()
                await queue.submit(TASK_NAME, i=-1)
                waits.append(time.perf_counter() - submitted)
            await reading
            stats_ms.append((time.perf_counter() - start) * 1000)
    return {
        "stats_ms": statistics.median(stats_ms),
        "submit_during_stats_max_ms": max(waits) * 1000,
    }


async def check_handed_back(path: str, sync: Sync, pending: int, n: int) -> None:
    """After the worker stopped: nothing running, nothing lost, at least `n` succeeded."""
    async with noop_queue(path, sync, Countdown(1), concurrency=0) as queue:
        stats = await queue.stats()
    left = sum(d.pending for d in stats.destinations.values())
    running = sum(d.running for d in stats.destinations.values())
    if running or stats.succeeded < n or stats.succeeded + left != pending:
        raise RuntimeError(f"after stop: {stats}")


def percentile(values: list[float], pct: int) -> float:
    """The `pct`-th percentile (inclusive method)."""
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MB (2**20 bytes)."""
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 2**10  # bytes vs KiB


MEASUREMENTS: dict[str, Callable[..., Coroutine[Any, Any, Figures]]] = {
    "backlog": measure_backlog,
    "producers": measure_producers,
    "bulk": measure_bulk_submit,
    "fill": fill_journal,
    "big_backlog": measure_big_backlog,
}


def run_one(spec: str) -> None:
    """Child entry point: run one measurement, print its figures as one JSON line."""
    args = json.loads(spec)
    measure = MEASUREMENTS[args.pop("kind")]
    try:
        figures = asyncio.run(measure(**args))
    except Exception:  # noqa: BLE001 - printed, then this process exits with 1
        traceback.print_exc()
        sys.stderr.flush()
        # A queue that failed to start can leave aiosqlite's non-daemon thread
        # running, and the interpreter would wait for it forever.
        os._exit(1)
    print(json.dumps(figures))


# -- in the parent process: runs, statistics, the table ------------------------


def child(kind: str, **args: Any) -> Figures:
    """Run one measurement in a fresh interpreter and return its figures."""
    spec = json.dumps({"kind": kind, **args})
    command = [sys.executable, __file__, "--one", spec]
    try:
        proc = subprocess.run(
            command, capture_output=True, text=True, timeout=CHILD_LIMIT, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"benchmark child {kind} took over {CHILD_LIMIT:g} s") from exc
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise RuntimeError(f"benchmark child {kind} failed with exit code {proc.returncode}")
    figures: Figures = json.loads(proc.stdout.strip().splitlines()[-1])
    return figures


def fresh_journal(directory: Path, name: str, postgres: str | None = None) -> str:
    """A path for a new journal (on `postgres`: a connection string naming a new
    schema); any leftovers of an earlier run are removed."""
    if postgres is not None:
        schema = "asyncq_bench_" + "".join(c if c.isalnum() else "_" for c in name.lower())
        path = f"{postgres}?schema={schema}"
        remove_journal(path)
        return path
    path = directory / f"{name}.db"
    remove_journal(path)
    return str(path)


def remove_journal(path: str | Path) -> None:
    if str(path).startswith("postgresql://"):
        asyncio.run(drop_schema(str(path)))
        return
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


async def drop_schema(dsn: str) -> None:
    import asyncpg  # type: ignore[import-untyped, unused-ignore]

    server, schema = dsn.split("?schema=")
    conn = await asyncpg.connect(server)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await conn.close()


POSTGRES: str | None = None  # the server of the "postgres" column (--postgres)


def one_run(bench: str, sync: Sync, sizes: Sizes, directory: Path, run: int) -> Figures:
    """One run of one benchmark in its own journal, which is removed after."""
    server = POSTGRES if sync == "postgres" else None
    path = fresh_journal(directory, f"{bench}-{sync}-{run}", server)
    try:
        if bench == "backlog":
            return child("backlog", path=path, sync=sync, n=sizes.backlog)
        if bench == "producers":
            return child(
                "producers",
                path=path,
                sync=sync,
                producers=sizes.producers,
                per_producer=sizes.per_producer,
            )
        if bench == "paced":
            return child(
                "producers",
                path=path,
                sync=sync,
                producers=sizes.producers,
                per_producer=sizes.per_producer,
                offered=OFFERED,
            )
        if bench == "single":
            return child("producers", path=path, sync=sync, producers=1, per_producer=sizes.single)
        if bench == "bulk":
            return child("bulk", path=path, sync=sync, n=sizes.bulk)
        if bench == "big_backlog":
            filled = child("fill", path=path, sync=sync, n=sizes.pending)
            measured = child(
                "big_backlog", path=path, sync=sync, pending=sizes.pending, n=sizes.process
            )
            return filled | measured
        raise ValueError(bench)
    finally:
        remove_journal(path)


BENCHES = ("backlog", "producers", "paced", "single", "bulk", "big_backlog")
Results = dict[tuple[str, Sync], list[Figures]]


def run_all(sizes: Sizes, directory: Path) -> Results:
    """Every benchmark, `sizes.runs` times per mode, the modes interleaved."""
    results: Results = {}
    for bench in BENCHES:
        for run in range(sizes.runs):
            for sync in MODES:
                figures = one_run(bench, sync, sizes, directory, run)
                results.setdefault((bench, sync), []).append(figures)
                shown = ", ".join(f"{k}={v:.4g}" for k, v in figures.items())
                print(f"  {bench:<11} {sync:<6} run {run + 1}: {shown}", flush=True)
    return results


@dataclass(frozen=True)
class Target:
    op: Literal[">=", "<"]
    value: float
    full_size_only: bool = False  # the target is for the full run's N

    def met(self, figure: float) -> bool:
        return figure >= self.value if self.op == ">=" else figure < self.value


@dataclass(frozen=True)
class Metric:
    bench: str
    key: str
    label: str
    fmt: str
    target: Target | None = None


def metrics(sizes: Sizes) -> list[Metric]:
    """The table's rows, in order."""
    producers = f"{sizes.producers} producers x {sizes.per_producer:,} submits"
    pending = f"{sizes.pending:,} pending, {sizes.process:,} run"
    return [
        Metric(
            "backlog",
            "processing_rate",
            f"1. backlog {sizes.backlog:,}: processing jobs/s",
            "{:,.0f}",
            Target(">=", 25_000),
        ),
        Metric(
            "backlog",
            "end_to_end_rate",
            "   end-to-end jobs/s (incl. submit_many)",
            "{:,.0f}",
            Target(">=", 15_000),
        ),
        Metric("producers", "rate", f"2. {producers}: jobs/s", "{:,.0f}", Target(">=", 15_000)),
        Metric("producers", "start_p50_ms", "   submit->start p50 ms (queueing)", "{:.2f}"),
        Metric("producers", "start_p99_ms", "   submit->start p99 ms", "{:.2f}"),
        Metric("producers", "submit_p50_ms", "   (submit() returned p50 ms)", "{:.2f}"),
        Metric(
            "paced",
            "rate",
            f"   the same at an offered {OFFERED:,.0f} jobs/s: jobs/s",
            "{:,.0f}",
            Target(">=", 15_000),
        ),
        Metric("paced", "start_p50_ms", "   submit->start p50 ms", "{:.2f}", Target("<", 5)),
        Metric("paced", "start_p99_ms", "   submit->start p99 ms", "{:.2f}"),
        Metric("paced", "submit_p50_ms", "   (submit() returned p50 ms)", "{:.2f}"),
        Metric("single", "rate", f"   1 producer x {sizes.single:,} submits: jobs/s", "{:,.0f}"),
        Metric("single", "start_p50_ms", "   submit->start p50 ms", "{:.2f}"),
        Metric("single", "start_p99_ms", "   submit->start p99 ms", "{:.2f}"),
        Metric(
            "bulk",
            "seconds",
            f"3. submit_many {sizes.bulk:,} (producer): s",
            "{:.3f}",
            Target("<", 0.5, full_size_only=True),
        ),
        Metric(
            "big_backlog",
            "peak_rss_mb",
            f"4. {pending}: peak RSS MB",
            "{:.1f}",
            Target("<", 150, full_size_only=True),
        ),
        Metric("big_backlog", "rate", "   processing jobs/s", "{:,.0f}"),
        Metric("big_backlog", "stats_ms", "   stats() on that journal: ms", "{:.1f}"),
        Metric(
            "big_backlog",
            "submit_during_stats_max_ms",
            "   a submit during stats(): max ms",
            "{:.1f}",
        ),
    ]


def cell(metric: Metric, runs: list[Figures], full_size: bool) -> str:
    """`median [min-max] ok|MISS` for one metric and mode."""
    values = [r[metric.key] for r in runs]
    mid = statistics.median(values)
    text = metric.fmt.format(mid)
    if len(values) > 1:
        text += f" [{metric.fmt.format(min(values))}-{metric.fmt.format(max(values))}]"
    target = metric.target
    if target is not None and (full_size or not target.full_size_only):
        text += "  ok" if target.met(mid) else "  MISS"
    return text


def target_text(metric: Metric, full_size: bool) -> str:
    target = metric.target
    if target is None:
        return ""
    text = f"{target.op} {metric.fmt.format(target.value)}"
    return text if full_size or not target.full_size_only else f"({text} at full N)"


def print_table(results: Results, sizes: Sizes) -> None:
    full_size = sizes == FULL
    rows = [("measurement", *(f"{m} median [min-max]" for m in MODES), "target")]
    for metric in metrics(sizes):
        cells = (cell(metric, results[metric.bench, sync], full_size) for sync in MODES)
        rows.append((metric.label, *cells, target_text(metric, full_size)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        line = "  ".join(text.ljust(width) for text, width in zip(row, widths, strict=True))
        print(line.rstrip())
        if i == 0:
            print("  ".join("-" * width for width in widths))


# -- the machine ---------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def filesystem_of(directory: Path) -> str:
    """The mount point and type of the filesystem holding `directory`."""
    best = max(
        (p for p in psutil.disk_partitions(all=True) if directory.is_relative_to(p.mountpoint)),
        key=lambda p: len(p.mountpoint),
        default=None,
    )
    return "unknown" if best is None else f"{best.fstype} on {best.device} ({best.mountpoint})"


def source_fingerprint() -> str:
    """A hash of asyncq's source files, to tell whether it changed during a run."""
    digest = hashlib.sha256()
    for path in sorted(Path(asyncq.__file__).parent.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def asyncq_source() -> str:
    """The git commit of the asyncq checkout ("+dirty" if edited) and the source hash."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty=+dirty"],
            cwd=Path(asyncq.__file__).parent,
            capture_output=True,
            text=True,
            check=True,
        )
        commit = f"git {out.stdout.strip()}"
    except (OSError, subprocess.CalledProcessError):
        commit = "not a git checkout"
    return f"{commit}, source sha256 {source_fingerprint()}"


def machine_info(directory: Path) -> list[tuple[str, str]]:
    memory = psutil.virtual_memory().total / 2**30
    return [
        ("date", datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("CPU", cpu_model()),
        ("cores", f"{psutil.cpu_count(logical=False)} physical, {os.cpu_count()} logical"),
        ("RAM", f"{memory:.1f} GiB"),
        ("OS", platform.platform()),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("SQLite", sqlite3.sqlite_version),
        ("asyncq", f"{metadata.version('asyncq')} ({asyncq_source()})"),
        ("aiosqlite", metadata.version("aiosqlite")),
        ("anyio", metadata.version("anyio")),
        ("journals in", f"{directory} [{filesystem_of(directory)}]"),
        ("load avg", load_average()),
    ]


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: other work on the machine skews the figures."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min)"


# -- main ------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one run each, smaller N")
    parser.add_argument("--dir", type=Path, help="directory for the journal files")
    parser.add_argument(
        "--postgres",
        nargs="?",
        const=DEFAULT_POSTGRES,
        metavar="DSN",
        help=f"also run on the PostgreSQL journal (default server: {DEFAULT_POSTGRES})",
    )
    parser.add_argument("--one", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        run_one(args.one)
        return
    if args.postgres:
        global MODES, POSTGRES
        MODES, POSTGRES = (*MODES, "postgres"), args.postgres
    sizes = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory(prefix="asyncq-bench-", dir=args.dir) as tmp:
        directory = Path(tmp).resolve()
        print(f"asyncq throughput benchmark ({'quick' if args.quick else 'full'})")
        for name, value in machine_info(directory):
            print(f"  {name + ':':<12} {value}")
        print(f"  {'settings:':<12} concurrency={CONCURRENCY}, {sizes.runs} run(s) per figure")
        print()
        fingerprint = source_fingerprint()
        started = time.perf_counter()
        results = run_all(sizes, directory)
    elapsed = time.perf_counter() - started
    print(f"\nfinished in {elapsed:.0f} s; load avg now {load_average()}\n")
    print_table(results, sizes)
    if source_fingerprint() != fingerprint:
        print("\nWARNING: asyncq's source changed during the run; the figures mix versions.")


if __name__ == "__main__":
    main()
