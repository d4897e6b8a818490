"""The journal size benchmark keeps working as asyncq changes: a small run of it."""

from __future__ import annotations

from pathlib import Path

from tests.benchmarks import run_script


def test_a_small_run_reports_sizes_states_pruning_and_vacuum(tmp_path: Path) -> None:
    args = ("--jobs", "3000", "--chunk", "1000", "--dir", str(tmp_path))
    proc = run_script("journal_size.py", *args)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "processed 3,000 jobs in" in out
    assert "rows by state: succeeded 3,000 (stats() says succeeded 3,000)" in out
    assert "pruning: nothing deleted" in out  # 3,000 is under the default 100,000
    assert "writer turns:" in out
    assert "asyncq vacuum: " in out
    assert list(tmp_path.iterdir()) == []  # the journal went with its temp dir
