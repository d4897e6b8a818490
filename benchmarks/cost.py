"""What one job costs, counted rather than timed: Python opcodes per job by function,
and (where valgrind is installed) CPU instructions per job per thread.

    python benchmarks/cost.py                       # this checkout, 100 destinations
    python benchmarks/cost.py --destinations 1      # one destination
    python benchmarks/cost.py --against ../old      # beside another checkout of asyncq
    python benchmarks/cost.py --instructions        # also valgrind's instruction counts

Wall-clock figures on a shared machine move by 15 % from one minute to the next, so a
change of a few percent cannot be seen in them. Counts can: each measurement drains N
no-op jobs (`submit_many`, then `run_until_idle`) in a fresh interpreter, runs the
same program with no jobs, and divides the difference by N, so that start-up and
imports cancel out. Opcodes are counted with `sys.settrace` (`f_trace_opcodes`) in
every thread; instructions with `valgrind --tool=callgrind --separate-threads=yes`
(thread 1 is the event loop, thread 2 the journal's writer). `--against` names the
root of another checkout (a `git worktree` of an older commit, say); the table then
shows both and the difference.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The program measured: run as `python -c DRAIN root n destinations journal_dir`.
DRAIN = """
import asyncio, sqlite3, sys
sys.path.insert(0, sys.argv[1])
from asyncq import Queue
from asyncq.testing import run_until_idle

async def main(n, destinations, directory):
    queue = Queue(directory + "/journal.db", concurrency=64)

    @queue.task(name="noop")
    async def noop(i: int) -> None:
        pass

    async with queue:
        for d in range(destinations):
            share = n // destinations
            if share:
                await queue.submit_many(
                    "noop", [{"i": i} for i in range(share)], destination=f"d{d}"
                )
        await run_until_idle(queue, timeout=300)
    # Checked in the file, not with stats(): its one call (whose cost grows with the
    # destinations, see benchmarks/stats.py) would count as a cost per job here.
    with sqlite3.connect(directory + "/journal.db") as conn:
        (done,) = conn.execute("SELECT count(*) FROM jobs WHERE state = 'succeeded'").fetchone()
    assert done == n // destinations * destinations, done

asyncio.run(main(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]))
"""

# Counts opcodes per (file, function) in every thread, then runs DRAIN.
TRACED = """
import collections, json, sys, threading
counts = collections.Counter()
def tracer(frame, event, arg):
    frame.f_trace_opcodes = True
    if event == "opcode":
        code = frame.f_code
        counts[code.co_filename + "|" + code.co_qualname] += 1
    return tracer
out = sys.argv.pop()
threading.settrace(tracer)
sys.settrace(tracer)
try:
    exec(compile(DRAIN, "drain", "exec"))
finally:
    sys.settrace(None)
    threading.settrace(None)
    with open(out, "w") as f:
        json.dump(counts, f)
"""


def opcodes(root: Path, n: int, destinations: int) -> dict[str, float]:
    """Opcodes per job by function (names relative to `root`)."""
    runs = []
    for jobs in (n, 0):
        with tempfile.TemporaryDirectory() as directory:
            out = Path(directory) / "counts.json"
            code = f"DRAIN = {DRAIN!r}\n{TRACED}"
            argv = [str(root), str(jobs), str(destinations), directory, str(out)]
            subprocess.run([sys.executable, "-c", code, *argv], check=True, timeout=600)
            runs.append(json.loads(out.read_text()))
    full, empty = runs
    per_job: dict[str, float] = {}
    for key in set(full) | set(empty):
        name = key.replace(str(root), "").replace(sys.prefix, "<python>")
        per_job[name] = per_job.get(name, 0.0) + (full.get(key, 0) - empty.get(key, 0)) / n
    return per_job


def instructions(root: Path, n: int, destinations: int) -> dict[str, float]:
    """CPU instructions per job for each thread, from callgrind."""
    totals: list[dict[str, int]] = []
    for jobs in (n, 0):
        with tempfile.TemporaryDirectory() as directory:
            out = Path(directory) / "callgrind.out"
            command = [
                "valgrind",
                "--tool=callgrind",
                "--separate-threads=yes",
                f"--callgrind-out-file={out}",
                sys.executable,
                "-c",
                DRAIN,
                str(root),
                str(jobs),
                str(destinations),
                directory,
            ]
            subprocess.run(command, check=True, capture_output=True, timeout=1200)
            found: dict[str, int] = {}
            for part in sorted(Path(directory).glob("callgrind.out-*")):
                match = re.search(r"^summary: (\d+)", part.read_text(), re.M)
                if match:
                    found[f"thread {part.name.rsplit('-', 1)[1].lstrip('0')}"] = int(match[1])
            totals.append(found)
    full, empty = totals
    return {thread: (full[thread] - empty.get(thread, 0)) / n for thread in full}


def show(title: str, mine: dict[str, float], theirs: dict[str, float] | None, top: int) -> None:
    print(f"\n{title}")
    print(f"  {'total':<70} {sum(mine.values()):>10,.0f}", end="")
    if theirs is not None:
        before = sum(theirs.values())
        print(f" {before:>10,.0f} {sum(mine.values()) - before:>+9,.0f}", end="")
    print()
    keys = set(mine) | set(theirs or {})

    def weight(key: str) -> float:
        if theirs is None:
            return mine.get(key, 0.0)
        return abs(mine.get(key, 0.0) - theirs.get(key, 0.0))

    for key in sorted(keys, key=weight, reverse=True)[:top]:
        print(f"  {key[-70:]:<70} {mine.get(key, 0.0):>10,.1f}", end="")
        if theirs is not None:
            change = mine.get(key, 0.0) - theirs.get(key, 0.0)
            print(f" {theirs.get(key, 0.0):>10,.1f} {change:>+9,.1f}", end="")
        print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=5_000, help="jobs per drain")
    parser.add_argument("--destinations", type=int, default=100)
    parser.add_argument("--against", type=Path, help="the root of another asyncq checkout")
    parser.add_argument("--instructions", action="store_true", help="also run valgrind")
    parser.add_argument("--top", type=int, default=25, help="functions to list")
    args = parser.parse_args()
    other = args.against.resolve() if args.against else None
    print(f"per job: {args.jobs} no-op jobs over {args.destinations} destination(s)")
    print(f"  this:    {ROOT}" + (f"\n  against: {other}" if other else ""))
    mine = opcodes(ROOT, args.jobs, args.destinations)
    theirs = opcodes(other, args.jobs, args.destinations) if other else None
    show("Python opcodes per job (this, against, change)", mine, theirs, args.top)
    if args.instructions:
        if shutil.which("valgrind") is None:
            sys.exit("--instructions needs valgrind (Debian: apt-get install valgrind)")
        mine_i = instructions(ROOT, args.jobs, args.destinations)
        theirs_i = instructions(other, args.jobs, args.destinations) if other else None
        show("CPU instructions per job, by thread", mine_i, theirs_i, args.top)
    counts = collections.Counter({k: v for k, v in mine.items() if "asyncq" in k})
    print(f"\nasyncq's own functions: {sum(counts.values()):,.0f} opcodes per job")


if __name__ == "__main__":
    main()
