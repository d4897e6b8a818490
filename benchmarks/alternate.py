"""One figure of `throughput.py`, for this checkout and another, alternated run by run.

    python benchmarks/alternate.py --against ../asyncq-7ebea5f              # one producer
    python benchmarks/alternate.py --against ../old --figure bulk --pairs 8
    python benchmarks/alternate.py --against ../old --pin 0   # both on CPU 0 only

`throughput.py` runs every figure three times for one checkout before the next
checkout's turn, minutes later; on a machine whose speed drifts (a shared VM) that
can make two equal releases look 10 % apart, or hide a real difference. Here each
pair runs one measurement of each checkout back to back, in the order A B, then B A
for the next pair, each in a fresh interpreter and a fresh journal (`throughput.py
--one`, with `PYTHONPATH` naming the checkout). Printed: every run, each checkout's
median and range, the median of the pairs' ratios and in how many pairs this
checkout was the faster.

`--pin CPU` runs every measurement on that one CPU (Linux: `sched_setaffinity`), the
event loop's thread and the journal's thread together. The figure then follows the
CPU time a job costs rather than the wake-ups between the threads, and runs spread
far less (about 3 % against 10 % on a shared 2-core VM): the way to see whether a
change costs CPU on a path where both threads wait on each other.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import throughput  # noqa: E402 - after the path: this checkout's benchmark

# figure -> (what `throughput.py --one` runs, the number reported, higher is better)
FIGURES: dict[str, tuple[dict[str, object], str, bool]] = {
    "single": ({"kind": "producers", "producers": 1, "per_producer": 2_000}, "rate", True),
    "producers": ({"kind": "producers", "producers": 200, "per_producer": 100}, "rate", True),
    "backlog": ({"kind": "backlog", "n": 20_000}, "processing_rate", True),
    "bulk": ({"kind": "bulk", "n": 50_000}, "seconds", False),
}


def run_once(
    checkout: Path, spec: dict[str, object], sync: str, pin: int | None = None
) -> dict[str, float]:
    """One measurement of `checkout`'s asyncq in a fresh interpreter and journal
    (on CPU `pin` alone, if given)."""
    with tempfile.TemporaryDirectory(prefix="asyncq-alternate-") as directory:
        args = {**spec, "path": str(Path(directory) / "journal.db"), "sync": sync}
        env = {**os.environ, "PYTHONPATH": str(checkout)}
        out = subprocess.run(
            [sys.executable, str(HERE / "throughput.py"), "--one", json.dumps(args)],
            env=env,
            capture_output=True,
            text=True,
            timeout=throughput.CHILD_LIMIT,
            check=False,
            preexec_fn=None if pin is None else functools.partial(_pin, pin),
        )
    if out.returncode:
        raise SystemExit(f"{checkout}: the run failed\n{out.stderr[-2000:]}")
    figures: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def _pin(cpu: int) -> None:
    os.sched_setaffinity(0, {cpu})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", type=Path, required=True, help="another asyncq checkout")
    parser.add_argument("--figure", choices=sorted(FIGURES), default="single")
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--sync", choices=("NORMAL", "FULL"), default="NORMAL")
    parser.add_argument("--pin", type=int, metavar="CPU", help="run every measurement on CPU")
    args = parser.parse_args()
    spec, key, higher_is_better = FIGURES[args.figure]
    checkouts = {"this": ROOT, "against": args.against.resolve()}
    pinned = "" if args.pin is None else f", pinned to CPU {args.pin}"
    print(f"asyncq alternated runs: {args.figure} ({key}), synchronous={args.sync}{pinned}")
    with tempfile.TemporaryDirectory() as directory:
        for name, value in throughput.machine_info(Path(directory)):
            print(f"  {name + ':':<13}{value}")
    print(f"  this:        {ROOT}\n  against:     {checkouts['against']}\n")
    values: dict[str, list[float]] = {"this": [], "against": []}
    ratios: list[float] = []
    for pair in range(args.pairs):
        order = ("this", "against") if pair % 2 == 0 else ("against", "this")
        got = {}
        for name in order:
            got[name] = run_once(checkouts[name], spec, args.sync, args.pin)[key]
            values[name].append(got[name])
            print(f"  pair {pair + 1:>2} {name:<8} {key} = {got[name]:.4g}", flush=True)
        ratios.append(got["this"] / got["against"])
    wins = sum((r > 1) == higher_is_better for r in ratios if r != 1)
    print()
    for name, found in values.items():
        print(
            f"  {name:<8} median {statistics.median(found):.4g} "
            f"(min {min(found):.4g}, max {max(found):.4g})"
        )
    print(
        f"  this / against, median of the pairs' ratios: {statistics.median(ratios):.3f}; "
        f"this was the better in {wins} of {len(ratios)} pairs"
    )


if __name__ == "__main__":
    main()
