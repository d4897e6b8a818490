"""benchmarks/http_delivery.py keeps working as asyncq changes: a tiny run of it."""

from __future__ import annotations

import subprocess
import sys

from tests.integration.test_readme import ROOT


def test_the_http_delivery_benchmark_runs() -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "http_delivery.py"),
            "--requests",
            "200",
            "--runs",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert "submit_http / bare: " in done.stdout
    assert "by CPU per delivery, submit_http / bare: " in done.stdout
    assert "a handler that makes no call (durable)" in done.stdout
    assert "bound, by CPU: bare / (bare + a no-op job's share): " in done.stdout
