"""What a drain costs the SQLite journal's writer, counted on one thread: CPU
instructions per job (valgrind's callgrind), for plain jobs and for parent and child
pairs (see `cost.py`'s `pairs`).

    python benchmarks/writer_cost.py                       # this checkout
    python benchmarks/writer_cost.py --against ../old      # beside another checkout

`cost.py` counts a real drain, whose two threads share the work as timing decides: on
a loaded machine how many jobs each turn of the writer carries changes from run to
run, and so do its counts (by several percent at a load of 10 on 2 cores). This one
takes the timing out: a journal is written (N jobs, one destination), then drained in
a fresh interpreter by the writer's own functions (claim, outcomes, children settled)
in turns of 64 claims and 64 successes, on one thread. Each program runs again with
the drain left out; the difference over N is the drain's cost per job, and for pairs
the cost of a child is the drain less its parents' (taken as plain jobs). It calls the
journal's private functions, so an older checkout must have them (git eb13a06 or later).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Run as `python -c WRITE root n workload path`: the journal to drain.
WRITE = """
import asyncio, sqlite3, sys
sys.path.insert(0, sys.argv[1])
from asyncq import Queue

async def main(n, workload, path):
    queue = Queue(path, concurrency=0)

    @queue.task(name="noop")
    async def noop(i: int) -> None:
        pass

    async with queue:
        payloads = [{"i": i} for i in range(n)]
        if workload == "plain":
            await queue.submit_many("noop", payloads, destination="d")
            return
        parents = await queue.submit_many("noop", payloads[: n // 2], destination="d")
        await asyncio.gather(*(
            queue.submit("noop", i=i, after=[p], destination="d") for i, p in enumerate(parents)
        ))

asyncio.run(main(int(sys.argv[2]), sys.argv[3], sys.argv[4]))
with sqlite3.connect(sys.argv[4]) as conn:  # all of it in the file, none in the WAL
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
"""

# Run as `python -c DRAIN root path drain`: drains the journal if `drain` is "1".
DRAIN = """
import collections, sqlite3, sys, time
sys.path.insert(0, sys.argv[1])
from asyncq._journal import _sqlite_deps as deps
from asyncq._journal import _sqlite_leases as leases
from asyncq._journal import _sqlite_setup as setup
from asyncq._journal import _sqlite_writes as writes
from asyncq._journal._messages import Succeeded, micros

conn = sqlite3.connect(sys.argv[2], isolation_level=None)
setup.prepare(conn, sys.argv[2], "NORMAL", 5000)
token = 0
while sys.argv[3] == "1":
    token += 1
    now = time.time()
    conn.execute("BEGIN IMMEDIATE")
    deltas = collections.Counter()
    found, _ = leases.claim(conn, "me", token, 64, now + 60, now, None, "", deltas)
    jobs = leases.claimed_jobs(found, token)
    if not jobs:
        conn.execute("COMMIT")
        break
    done = [Succeeded(job.id, token, "null", micros(now), job.destination) for job in jobs]
    batch = writes.encode_outcomes([], done, [], [], now=now)
    every = writes.write_outcomes(conn, "me", now, batch, deltas)
    deps.settle_outcomes(conn, now, batch, deltas, every_success=every)
    writes.save_counts(conn, deltas)
    conn.execute("COMMIT")
left = conn.execute("SELECT count(*) FROM jobs WHERE state != 'succeeded'").fetchone()[0]
assert sys.argv[3] != "1" or left == 0, left
"""


def instructions(root: Path, n: int, workload: str) -> float:
    """CPU instructions per job of draining `n` jobs of `workload`."""
    counts = []
    with tempfile.TemporaryDirectory() as directory:
        journal = Path(directory) / "journal.db"
        subprocess.run(
            [sys.executable, "-c", WRITE, str(root), str(n), workload, str(journal)], check=True
        )
        original = journal.read_bytes()
        for drain in ("1", "0"):
            journal.write_bytes(original)  # the same file, the same pages, each time
            for extra in ("-wal", "-shm"):
                Path(str(journal) + extra).unlink(missing_ok=True)
            out = Path(directory) / f"callgrind.out.{drain}"
            command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
            command += [sys.executable, "-c", DRAIN, str(root), str(journal), drain]
            subprocess.run(command, check=True, capture_output=True, timeout=1200)
            match = re.search(r"^summary: (\d+)", out.read_text(), re.M)
            assert match is not None, out
            counts.append(int(match[1]))
    return (counts[0] - counts[1]) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs per drain")
    parser.add_argument("--against", type=Path, help="the root of another asyncq checkout")
    args = parser.parse_args()
    roots = {"this": ROOT} | ({"against": args.against.resolve()} if args.against else {})
    for name, root in roots.items():
        plain = instructions(root, args.jobs, "plain")
        pairs = instructions(root, args.jobs, "pairs")
        child = 2 * pairs - plain
        print(
            f"{name} ({root}): per job, {args.jobs} jobs: plain {plain:,.0f}, pairs "
            f"{pairs:,.0f}; a child {child:,.0f} = {child / plain:.3f} x a plain job "
            f"(adds {child - plain:,.0f})"
        )


if __name__ == "__main__":
    main()
