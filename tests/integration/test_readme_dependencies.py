"""The README's Dependencies example is examples/pipeline.py, and it runs as written."""

import os
import subprocess
import sys
from pathlib import Path

from tests.integration.test_readme import ROOT, readme_python_blocks


def test_the_pipeline_in_the_readme_is_examples_pipeline() -> None:
    pipeline = (ROOT / "examples" / "pipeline.py").read_text()
    assert pipeline in readme_python_blocks()


def test_the_pipeline_runs_each_step_after_the_one_before(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))  # this checkout's asyncq
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "pipeline.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    # notify reads what enrich made of what fetch_contact returned.
    assert lines[0] == "#sales: contact7@example.com works at Example Inc."
    assert sorted(lines[1:3]) == [
        "#exec: contact7@example.com works at Example Inc.",
        "#ops: contact7@example.com works at Example Inc.",
    ]
    assert lines[3] == "5 jobs succeeded, 0 blocked"
    assert list(tmp_path.iterdir()) == []
