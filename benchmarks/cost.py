"""What one job costs, counted rather than timed: Python opcodes per job by function,
and (where valgrind is installed) CPU instructions per job per thread.

    python benchmarks/cost.py                       # this checkout, 100 destinations
    python benchmarks/cost.py --destinations 1      # one destination
    python benchmarks/cost.py --against ../old      # beside another checkout of asyncq
    python benchmarks/cost.py --instructions        # also valgrind's instruction counts
    python benchmarks/cost.py --workload pairs --drain-only --destinations 1
                                                    # a child after its parent, run only

Wall-clock figures on a shared machine move by 15 % from one minute to the next, so a
change of a few percent cannot be seen in them. Counts can: each measurement drains N
no-op jobs (`submit_many`, then `run_until_idle`) in a fresh interpreter, runs the
same program with no jobs, and divides the difference by N, so that start-up and
imports cancel out. Opcodes are counted with `sys.settrace` (`f_trace_opcodes`) in
every thread; instructions with `valgrind --tool=callgrind --separate-threads=yes`
(thread 1 is the event loop, thread 2 the journal's writer). `--against` names the
root of another checkout (a `git worktree` of an older commit, say); the table then
shows both and the difference.

`single`: one producer awaiting each `submit` while the workers run (as in
`throughput.py`'s "one producer"): a transaction per submit, with the claims and
acks in turns of their own or in the next submit's. Workloads with dependencies
(`after=`, as in `workflow.py`): `succeeded`, N jobs after one parent that already
succeeded; `pairs`, N/2 parents and a child after each (one `submit` per child);
`fan-out`, N children of one parent that runs first (N + 1 jobs in all). With
`--drain-only` the jobs are written while their destinations are paused, and the
baseline is the same program that writes them and never runs them: what is left is
the drain. Several `--workload`s are counted one after another, and each is set
beside the first (plain, say): the cost of its job against the first's, and for
pairs, the cost of a child (its drain less the parents', taken as plain jobs).
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

# The program measured: run as `python -c DRAIN root n destinations journal_dir
# workload mode`; mode "all" runs the jobs as they are written, "drain" writes them
# all (destinations paused) and then runs them, "none" writes them and never runs them.
DRAIN = """
import asyncio, sqlite3, sys
sys.path.insert(0, sys.argv[1])
from asyncq import Queue
from asyncq.testing import run_until_idle

async def write(queue, workload, share, destination, paused):
    \"\"\"Write a destination's share of the workload; the number of jobs to run.\"\"\"
    payloads = [{"i": i} for i in range(share)]
    if workload == "plain":
        await queue.submit_many("noop", payloads, destination=destination)
        return share
    if workload == "single":  # one producer awaiting each submit, workers running
        for i in range(share):
            await queue.submit("noop", i=i, destination=destination)
        return share
    if workload == "pairs":
        parents = await queue.submit_many("noop", payloads[: share // 2], destination=destination)
        await asyncio.gather(*(
            queue.submit("noop", i=i, after=[p], destination=destination)
            for i, p in enumerate(parents)
        ))
        return 2 * len(parents)
    parent = await queue.submit("noop", i=-1, destination=destination)
    if workload == "succeeded":  # its parent runs first, outside the count
        if paused:
            await queue.resume(destination)
        await parent.result(timeout=60)
        if paused:
            await queue.pause(destination)
    await queue.submit_many("noop", payloads, destination=destination, after=[parent])
    return share + 1

async def main(n, destinations, directory, workload, mode):
    queue = Queue(directory + "/journal.db", concurrency=64)

    @queue.task(name="noop")
    async def noop(i: int) -> None:
        pass

    names = [f"d{d}" for d in range(destinations)] if n else []
    paused = mode != "all"
    async with queue:
        for name in names:
            if paused:
                await queue.pause(name)
        jobs = 0
        for name in names:
            jobs += await write(queue, workload, n // destinations, name, paused)
        if mode != "none":
            for name in names:
                if paused:
                    await queue.resume(name)
            await run_until_idle(queue, timeout=300)
    if mode != "none":
        # Checked in the file, not with stats(): its one call (whose cost grows with
        # the destinations, see benchmarks/stats.py) would count as a cost per job here.
        with sqlite3.connect(directory + "/journal.db") as conn:
            (done,) = conn.execute(
                "SELECT count(*) FROM jobs WHERE state = 'succeeded'"
            ).fetchone()
            (blocked,) = conn.execute(
                "SELECT count(*) FROM jobs WHERE state = 'blocked'"
            ).fetchone()
        assert done == jobs and not blocked, (jobs, done, blocked)

asyncio.run(main(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]))
"""
WORKLOADS = ("plain", "single", "succeeded", "pairs", "fan-out")

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


def programs(n: int, drain_only: bool) -> list[tuple[int, str]]:
    """The measured run and its baseline, as (jobs, mode) for DRAIN."""
    return [(n, "drain"), (n, "none")] if drain_only else [(n, "all"), (0, "all")]


def opcodes(
    root: Path, n: int, destinations: int, workload: str = "plain", drain_only: bool = False
) -> dict[str, float]:
    """Opcodes per job by function (names relative to `root`)."""
    runs = []
    for jobs, mode in programs(n, drain_only):
        with tempfile.TemporaryDirectory() as directory:
            out = Path(directory) / "counts.json"
            code = f"DRAIN = {DRAIN!r}\n{TRACED}"
            argv = [str(root), str(jobs), str(destinations), directory, workload, mode, str(out)]
            subprocess.run([sys.executable, "-c", code, *argv], check=True, timeout=600)
            runs.append(json.loads(out.read_text()))
    full, empty = runs
    per_job: dict[str, float] = {}
    for key in set(full) | set(empty):
        name = key.replace(str(root), "").replace(sys.prefix, "<python>")
        per_job[name] = per_job.get(name, 0.0) + (full.get(key, 0) - empty.get(key, 0)) / n
    return per_job


def instructions(
    root: Path, n: int, destinations: int, workload: str = "plain", drain_only: bool = False
) -> dict[str, float]:
    """CPU instructions per job for each thread, from callgrind."""
    totals: list[dict[str, int]] = []
    for jobs, mode in programs(n, drain_only):
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
                workload,
                mode,
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


def beside_first(unit: str, totals: dict[str, float]) -> None:
    """Each workload's cost per job against the first workload's (the "plain" one)."""
    (first, base), *others = totals.items()
    for workload, total in others:
        line = f"  {workload}: {total / base:.3f} x a {first} job ({unit} per job)"
        if workload == "pairs":  # half its jobs are parents, which cost a plain job each
            line += f"; a child {(2 * total - base) / base:.3f} x"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=5_000, help="jobs per drain")
    parser.add_argument("--destinations", type=int, default=100)
    parser.add_argument("--against", type=Path, help="the root of another asyncq checkout")
    parser.add_argument("--instructions", action="store_true", help="also run valgrind")
    parser.add_argument("--top", type=int, default=25, help="functions to list")
    parser.add_argument(
        "--workload", nargs="+", choices=WORKLOADS, default=["plain"], help="what the jobs are"
    )
    parser.add_argument(
        "--drain-only", action="store_true", help="count running the jobs, not writing them"
    )
    args = parser.parse_args()
    if args.instructions and shutil.which("valgrind") is None:
        sys.exit("--instructions needs valgrind (Debian: apt-get install valgrind)")
    other = args.against.resolve() if args.against else None
    totals: dict[str, dict[str, float]] = {"opcodes": {}, "instructions": {}}
    for workload in args.workload:
        what = "run only" if args.drain_only else "written and run"
        print(
            f"{workload}: per job: {args.jobs} no-op jobs over {args.destinations} "
            f"destination(s), {what}"
        )
        print(f"  this:    {ROOT}" + (f"\n  against: {other}" if other else ""))
        measure = (args.jobs, args.destinations, workload, args.drain_only)
        mine = opcodes(ROOT, *measure)
        theirs = opcodes(other, *measure) if other else None
        show("Python opcodes per job (this, against, change)", mine, theirs, args.top)
        totals["opcodes"][workload] = sum(mine.values())
        if args.instructions:
            mine_i = instructions(ROOT, *measure)
            theirs_i = instructions(other, *measure) if other else None
            show("CPU instructions per job, by thread", mine_i, theirs_i, args.top)
            totals["instructions"][workload] = sum(mine_i.values())
        counts = collections.Counter({k: v for k, v in mine.items() if "asyncq" in k})
        print(f"\nasyncq's own functions: {sum(counts.values()):,.0f} opcodes per job\n")
    if len(args.workload) > 1:
        print(f"beside {args.workload[0]} (this checkout):")
        for unit, by_workload in totals.items():
            if by_workload:
                beside_first(unit, by_workload)


if __name__ == "__main__":
    main()
