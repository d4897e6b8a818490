"""benchmarks/http_delivery.py keeps working as asyncq changes: a tiny run of it."""

from __future__ import annotations

from tests.benchmarks import run_script


def test_the_http_delivery_benchmark_runs() -> None:
    done = run_script("http_delivery.py", "--requests", "200", "--runs", "1")
    assert done.returncode == 0, done.stderr
    assert "submit_http / bare: " in done.stdout
    assert "by CPU per delivery, submit_http / bare: " in done.stdout
    assert "a handler that makes no call (durable)" in done.stdout
    assert "bound, by CPU: bare / (bare + a no-op job's share): " in done.stdout
