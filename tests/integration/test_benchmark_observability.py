"""`benchmarks/observability.py` keeps working: its runs measure with metrics and
traces attached (tiny workloads; the figures themselves are not checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "observability.py"


@pytest.mark.parametrize(("mode", "workload"), [("otel", "noop"), ("prometheus", "submits")])
def test_a_run_measures_with_the_instrument_attached(mode: str, workload: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--one", mode, workload, "200", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    rate, cpu_us = json.loads(proc.stdout.strip().splitlines()[-1])
    assert rate > 0
    assert cpu_us > 0
