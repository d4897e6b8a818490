"""The README's HTTP example is examples/webhooks.py, and it runs as written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.integration.test_readme import ROOT, readme_python_blocks


def test_the_readme_shows_examples_webhooks() -> None:
    assert (ROOT / "examples" / "webhooks.py").read_text() in readme_python_blocks()


def test_examples_webhooks_runs_as_written(tmp_path: Path) -> None:
    script = ROOT / "examples" / "webhooks.py"
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("received {'deal': 42, 'stage': 'won'} as msg_")
    assert lines[1].startswith("delivered: HTTP 204 in ")
    assert lines[3].startswith("dead letter: HttpRejected: HTTP 404 Not Found from POST http")
    assert lines[3].endswith("/hooks: no such deal")
    assert (
        lines[4]
        == "refused: AddressRefused: refused to connect to 127.0.0.1: a loopback address...."
    )
    assert len(lines) == 5  # the refused delivery never reached the receiver
    assert list(tmp_path.iterdir()) == []
