"""The comparison benchmark keeps working as asyncq changes: its asyncq adapter runs.

The peers themselves are not installed in CI (they live in their own venv); this runs
the asyncq side of `benchmarks/peers.py` on tiny workloads, as the full script does.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PEERS = ROOT / "benchmarks" / "peers.py"


def run_one(spec: dict[str, object]) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, str(PEERS), "--one", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    figures: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return figures


@pytest.mark.parametrize(
    ("workload", "keys"),
    [
        ("drain", {"enqueue_rate", "processing_rate", "total_s"}),
        ("steady", {"rate", "p50_ms", "p99_ms"}),
    ],
)
def test_asyncq_side_of_peers_benchmark_runs(tmp_path: Path, workload: str, keys: set[str]) -> None:
    spec = {"peer": "asyncq", "workload": workload, "path": str(tmp_path / "j.db"), "n": 200}
    figures = run_one(spec)
    assert set(figures) == keys
    assert all(value > 0 for value in figures.values())


def test_worst_window_counts_starts_in_any_one_second() -> None:
    sys.path.insert(0, str(PEERS.parent))
    try:
        from peers import worst_window
    finally:
        sys.path.remove(str(PEERS.parent))
    assert worst_window([0.0, 0.5, 0.99, 1.0, 1.98], 1.0) == 3
    assert worst_window([0.0, 1.0, 2.0], 1.0) == 1


def test_the_cost_counter_counts_every_job() -> None:
    """`benchmarks/cost.py` runs, and what it counts per job is the engine's work."""
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "cost.py"),
            "--jobs",
            "300",
            "--destinations",
            "3",
            "--top",
            "40",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    total = re.search(r"^  total\s+([\d,]+)", proc.stdout, re.M)
    assert total is not None, proc.stdout
    # A no-op job goes through the pool, whatever else it costs.
    assert int(total[1].replace(",", "")) > 100
    assert "WorkerPool._execute" in proc.stdout
