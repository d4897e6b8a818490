"""What a destination's concurrency cap costs: W1 (drain N no-op jobs) through an
uncapped destination and capped ones, on PostgreSQL and SQLite.

    python benchmarks/caps.py                       # 5 runs per figure, both backends
    python benchmarks/caps.py --backends postgres --runs 3 --n 5000
    python benchmarks/caps.py --source /tmp/base    # run the asyncq found there instead
                                                    # (a checkout of another commit)
    python benchmarks/caps.py --workers 3           # W1 by 3 worker processes at once
    python benchmarks/caps.py --call-ms 20          # each job waits 20 ms (a call's wait)

A cap is shared by every process on the journal: the claim locks the capped
destination's row and counts its jobs claimed and not finished. This measures
what that costs a single process (`--workers 1`), where nothing is gained, and
how a capped destination drains when several processes share it.

Each run is a fresh process (or processes) on a fresh journal (a new schema on
the server, or a new file); the variants are interleaved run by run, so drift on
the machine hits them alike. A run ends when the last job's success is in the
journal. Figures are medians with min-max, in jobs/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

CONCURRENCY = 50
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
VARIANTS = {"uncapped": None, "cap 50": 50, "cap 8": 8}


async def _drain(
    journal: str, cap: int | None, n: int, submit: bool, start_at: float, call: float
) -> None:
    from asyncq import Queue
    from asyncq.testing import run_until_idle

    def made(concurrency: int) -> Queue:
        queue = Queue(journal, concurrency=concurrency)
        if cap is not None:
            queue.destination("api", concurrency=cap)

        @queue.task(name="noop", destination="api")
        async def noop(i: int) -> None:
            if call:
                await asyncio.sleep(call)  # an outbound call's wait

        return queue

    if submit:
        async with made(0) as producer:
            await producer.submit_many("noop", [{"i": i} for i in range(n)])
        return
    queue = made(CONCURRENCY)
    # Processes that share a run start together (`start_at`, this machine's clock).
    await asyncio.sleep(max(0.0, start_at - time.time()))
    async with queue:
        while True:
            await run_until_idle(queue, timeout=600)
            stats = await queue.stats()
            if stats.succeeded >= n:
                break
            await asyncio.sleep(0.01)  # another process still holds some jobs


def _child(args: argparse.Namespace) -> None:
    cap = None if args.cap == "none" else int(args.cap)
    asyncio.run(_drain(args.journal, cap, args.n, args.submit, args.start_at, args.call_ms / 1e3))


async def _drop(dsn: str) -> None:
    import asyncpg  # type: ignore[import-untyped, unused-ignore]

    server, schema = dsn.split("?schema=")
    conn = await asyncpg.connect(server)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await conn.close()


def _one_run(
    backend: str, cap: int | None, n: int, workers: int, args: argparse.Namespace
) -> float:
    """jobs/s of one drain on a fresh journal."""
    if backend == "postgres":
        journal = f"{args.postgres}?schema=asyncq_caps_{uuid.uuid4().hex[:10]}"
    else:
        journal = str(Path(args.dir) / f"caps-{uuid.uuid4().hex[:10]}.db")
    env = dict(os.environ)
    if args.source:
        env["PYTHONPATH"] = str(args.source)
    base = [sys.executable, __file__, "--child", "--journal", journal, "--n", str(n)]
    base += ["--cap", "none" if cap is None else str(cap), "--call-ms", str(args.call_ms)]
    try:
        subprocess.run([*base, "--submit"], env=env, check=True)
        start_at = time.time() + 1.5  # after the workers' imports and opens
        procs = [
            subprocess.Popen([*base, "--start-at", str(start_at)], env=env) for _ in range(workers)
        ]
        codes = [proc.wait() for proc in procs]
        ended = time.time()
        if any(codes):
            raise SystemExit(f"a worker failed: {codes}")
        return n / (ended - start_at)
    finally:
        if backend == "postgres":
            asyncio.run(_drop(journal))
        else:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{journal}{suffix}").unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="postgres,sqlite")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=1, help="worker processes per run")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--call-ms", type=float, default=0.0, help="each job waits this long")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    parser.add_argument("--source", help="a directory to import asyncq from")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--submit", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--journal", help=argparse.SUPPRESS)
    parser.add_argument("--cap", help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    variants = {name: VARIANTS[name] for name in args.variants.split(",")}
    source = args.source or str(Path(__file__).resolve().parents[1])
    commit = subprocess.run(
        ["git", "-C", source, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    one, five, fifteen = os.getloadavg()
    print(
        f"asyncq from {source} (git {commit or 'unknown'}), N={args.n}, "
        f"concurrency={CONCURRENCY}, "
        f"call {args.call_ms:g} ms, {args.workers} worker process(es), {args.runs} runs"
    )
    print(f"load average before: {one:.2f} {five:.2f} {fifteen:.2f}")
    for backend in args.backends.split(","):
        figures: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.runs):
            for name, cap in variants.items():
                figures[name].append(_one_run(backend, cap, args.n, args.workers, args))
        for name, values in figures.items():
            print(
                f"  {backend:<9} {name:<9} {statistics.median(values):>8,.0f} jobs/s "
                f"[{min(values):,.0f}-{max(values):,.0f}]"
            )
    one, five, fifteen = os.getloadavg()
    print(f"load average after: {one:.2f} {five:.2f} {fifteen:.2f}")


if __name__ == "__main__":
    main()
