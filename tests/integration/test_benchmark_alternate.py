"""benchmarks/alternate.py keeps working as asyncq changes: one pair, pinned."""

from __future__ import annotations

import os

import pytest

from tests.benchmarks import ROOT, run_script


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="pinning needs Linux")
def test_one_alternated_pair_runs_pinned_to_one_cpu() -> None:
    cpu = min(os.sched_getaffinity(0))
    args = ("--against", str(ROOT), "--figure", "bulk", "--pairs", "1", "--pin", str(cpu))
    done = run_script("alternate.py", *args)
    assert done.returncode == 0, done.stderr
    assert f"pinned to CPU {cpu}" in done.stdout
    assert "this / against, median of the pairs' ratios: " in done.stdout
    assert "in 0 of 1 pairs" in done.stdout or "in 1 of 1 pairs" in done.stdout
