"""A webhook delivery shows up in the trace of the request that caused it, when
the job runs in another process: a real `asyncq worker` subprocess, traced with
the OpenTelemetry SDK, reads the submitting span's context from the journal (a
SQLite file, or a fresh schema on the PostgreSQL server of tests/postgres.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from asyncq import Queue
from asyncq.contrib.otel import QueueTracing
from tests.postgres import fresh_schema, postgres_dsn_or_skip

from .conftest import wait_until
from .traced_app import TASK_NAME

REPO_ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.process


def spans_in(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


@pytest.fixture(params=["sqlite", "postgres"])
async def journal(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "jobs.db")
        return
    async with fresh_schema(postgres_dsn_or_skip()) as dsn:
        yield dsn


async def test_an_attempt_in_a_worker_process_joins_the_submitting_request_trace(
    tmp_path: Path, journal: str
) -> None:
    spans_file, output = tmp_path / "spans.jsonl", tmp_path / "out"
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    producer = Queue(journal, concurrency=0, poll_interval=0.01)
    QueueTracing(producer, tracer_provider=provider)

    @producer.task(name=TASK_NAME, destination="webhooks")
    async def deliver(url: str) -> str:
        raise AssertionError("the producer runs nothing")

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env["ASYNCQ_TRACE_JOURNAL"] = journal
    env["ASYNCQ_TRACE_SPANS"] = str(spans_file)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    async with producer:
        with provider.get_tracer("web").start_as_current_span("POST /deals/42/won") as request:
            job = await deliver.submit("https://crm.example/hooks")
        with output.open("wb") as out:
            worker = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "asyncq.cli",
                "worker",
                "tests.process.traced_app:queue",
                cwd=REPO_ROOT,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
        try:
            assert await job.result(timeout=60) == "delivered"
            await wait_until(
                lambda: len(spans_in(spans_file)) == 2,
                deadline=deadline,
                what="the worker's two spans",
                explain=lambda: output.read_text(errors="replace"),
            )
            worker.send_signal(signal.SIGTERM)
            async with asyncio.timeout(20):
                assert await worker.wait() == 0
        finally:
            if worker.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.kill()
                await worker.wait()
    context = request.get_span_context()
    attempt, call = sorted(spans_in(spans_file), key=lambda s: s["kind"] != "CONSUMER")
    assert attempt["pid"] == worker.pid != os.getpid()
    assert attempt["kind"] == "CONSUMER"
    assert attempt["trace_id"] == call["trace_id"] == f"{context.trace_id:032x}"
    assert attempt["parent_id"] == f"{context.span_id:016x}"  # the request's span
    assert call["parent_id"] == attempt["span_id"]  # the delivery, inside the attempt
    assert call["name"] == "POST https://crm.example/hooks"
    assert attempt["attributes"] == {
        "messaging.system": "asyncq",
        "messaging.destination.name": "webhooks",
        "messaging.message.id": str(job.id),
        "asyncq.task": TASK_NAME,
        "asyncq.attempt": 1,
        "asyncq.outcome": "succeeded",
    }
    assert [s.name for s in exporter.get_finished_spans()] == ["POST /deals/42/won"]
