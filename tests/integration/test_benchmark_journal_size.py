"""The journal size benchmark keeps working as asyncq changes: a small run of it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "journal_size.py"


def test_a_small_run_reports_sizes_states_pruning_and_vacuum(tmp_path: Path) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--jobs", "3000", "--chunk", "1000", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "processed 3,000 jobs in" in out
    assert "rows by state: succeeded 3,000 (stats() says succeeded 3,000)" in out
    assert "pruning: nothing deleted" in out  # 3,000 is under the default 100,000
    assert "writer turns:" in out
    assert "asyncq vacuum: " in out
    assert list(tmp_path.iterdir()) == []  # the journal went with its temp dir
