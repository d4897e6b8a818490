"""The README's Monitoring example is examples/monitoring.py, and it runs as written."""

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.integration.test_readme import ROOT, readme_python_blocks


def test_the_monitoring_example_in_the_readme_is_examples_monitoring() -> None:
    example = (ROOT / "examples" / "monitoring.py").read_text()
    assert example in readme_python_blocks()


def test_the_alert_fires_while_the_crm_is_down_and_clears_when_it_is_back(
    tmp_path: Path,
) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))  # this checkout's asyncq
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "monitoring.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    alert, cleared, summary = done.stdout.splitlines()
    assert alert.startswith("ALERT crm: failing: 'crm' is failing: its circuit is open")
    assert re.fullmatch(r"cleared: crm: \d+ waiting", cleared)
    assert re.fullmatch(r"crm: 40 succeeded, \d+ retries a minute", summary)
    # The same, logged as warnings on the asyncq logger.
    assert "asyncq backlog of 'crm': 'crm' is failing" in done.stderr
    assert "asyncq backlog of 'crm' cleared" in done.stderr
    assert list(tmp_path.iterdir()) == []
