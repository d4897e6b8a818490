"""asyncq.contrib.prometheus: the journal's figures as gauges, what this process ran
as counters and a histogram; and the FastAPI example serving them."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from asyncq import DestinationCounts, JournalStats, Queue, QueueFailed, Rate, Retry, RetryAfter
from asyncq.contrib import prometheus
from asyncq.contrib.prometheus import QueueMetrics
from asyncq.testing import ManualClock, run_until_idle

MakeQueue = Callable[..., Queue]
ROOT = Path(__file__).resolve().parents[2]


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


class Refreshes(QueueMetrics):
    """QueueMetrics that says when a refresh has read the journal."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.refreshed = asyncio.Event()

    async def refresh(self) -> None:
        await super().refresh()
        self.refreshed.set()


async def test_counters_and_the_histogram_count_what_this_process_ran(
    make_queue: MakeQueue, clock: ManualClock
) -> None:
    registry = CollectorRegistry()
    queue = make_queue(concurrency=1)
    queue.destination("crm", retry=Retry(schedule=[60]), circuit=None)
    metrics = QueueMetrics(queue, registry=registry, buckets=[0.1, 1, 10])

    @queue.task(name="post", destination="crm")
    async def post(seconds: float, fail: bool = False) -> None:
        clock.advance(seconds)  # the call takes this long on the queue's clock
        if fail:
            raise ConnectionError("refused")

    @queue.task(name="enrich", destination="enrichment")
    async def enrich() -> None:
        raise RetryAfter(30)

    async with queue:
        await post.submit_many([{"seconds": 0.05}, {"seconds": 0.5}, {"seconds": 5}])
        await post.submit(seconds=0.5, fail=True)
        await enrich.submit()
        await run_until_idle(queue)
        clock.advance(60)
        await run_until_idle(queue)  # the failing one fails again: dead
    assert metrics.interval == 5.0

    def attempts(destination: str, outcome: str) -> float | None:
        return sample(registry, "asyncq_attempts_total", destination=destination, outcome=outcome)

    assert attempts("crm", "succeeded") == 3
    assert attempts("crm", "retry") == 1
    assert attempts("crm", "dead") == 1
    assert attempts("crm", "cancelled") == 0
    assert attempts("enrichment", "snoozed") == 2  # once, and again 60 s later
    assert sample(registry, "asyncq_retries_total", destination="crm") == 1
    assert sample(registry, "asyncq_dead_letters_total", destination="crm") == 1
    assert sample(registry, "asyncq_jobs_submitted_total", destination="crm") == 4
    assert sample(registry, "asyncq_jobs_submitted_total", destination="enrichment") == 1
    buckets = {
        le: sample(registry, "asyncq_attempt_duration_seconds_bucket", destination="crm", le=le)
        for le in ("0.1", "1.0", "10.0", "+Inf")
    }
    assert buckets == {"0.1": 1, "1.0": 4, "10.0": 5, "+Inf": 5}  # 0.05, 0.5 x3, 5
    assert sample(registry, "asyncq_attempt_duration_seconds_count", destination="crm") == 5
    total = sample(registry, "asyncq_attempt_duration_seconds_sum", destination="crm")
    assert total == pytest.approx(0.05 + 0.5 * 3 + 5)


async def test_successes_bucketed_in_batches_count_the_same_at_every_scrape(
    make_queue: MakeQueue, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prometheus, "_FOLD_AT", 4)  # a batch every 4 successes
    registry = CollectorRegistry()
    queue = make_queue(concurrency=1)
    QueueMetrics(queue, registry=registry, buckets=[0.1, 1, 10])

    @queue.task(name="post", destination="crm")
    async def post(seconds: float) -> None:
        clock.advance(seconds)

    def histogram() -> dict[str, float | None]:
        name = "asyncq_attempt_duration_seconds"
        figures = {
            le: sample(registry, f"{name}_bucket", destination="crm", le=le)
            for le in ("0.1", "1.0", "10.0", "+Inf")
        }
        figures["count"] = sample(registry, f"{name}_count", destination="crm")
        figures["sum"] = sample(registry, f"{name}_sum", destination="crm")
        figures["succeeded"] = sample(
            registry, "asyncq_attempts_total", destination="crm", outcome="succeeded"
        )
        return figures

    durations = [0.05, 0.1, 0.5, 1.0, 5.0, 20.0, 0.05, 0.5, 5.0, 0.1]  # two batches and two
    async with queue:
        await post.submit_many([{"seconds": s} for s in durations])
        await run_until_idle(queue)
        first = histogram()
        await post.submit_many([{"seconds": s} for s in (0.01, 2.0, 50.0)])  # a third batch
        await run_until_idle(queue)
        second = histogram()
    assert first == {
        "0.1": 4,  # le: 0.05, 0.1, 0.05, 0.1
        "1.0": 7,
        "10.0": 9,
        "+Inf": 10,
        "count": 10,
        "sum": pytest.approx(sum(durations)),
        "succeeded": 10,
    }
    assert second == {
        "0.1": 5,  # and 0.01
        "1.0": 8,
        "10.0": 11,  # and 0.01, 2.0
        "+Inf": 13,
        "count": 13,
        "sum": pytest.approx(sum(durations) + 52.01),
        "succeeded": 13,
    }


async def test_the_gauges_show_the_journal_refreshed_in_the_background(
    make_queue: MakeQueue, clock: ManualClock
) -> None:
    registry = CollectorRegistry()
    queue = make_queue(concurrency=0)  # a producer: the figures are the journal's
    queue.destination("crm", rate=Rate(10, per=1))
    metrics = Refreshes(queue, registry=registry, interval=15)

    @queue.task(name="post", destination="crm")
    async def post() -> None:
        pass

    async with queue:
        await metrics.refreshed.wait()  # at start: an empty journal
        assert sample(registry, "asyncq_jobs", destination="crm", state="ready") is None
        await post.submit_many([{}] * 3)
        await queue.submit(post, delay=600)
        await queue.pause("crm")
        metrics.refreshed.clear()
        clock.advance(10)
        clock.advance(5)  # the interval is up: refreshed
        await metrics.refreshed.wait()
    assert sample(registry, "asyncq_jobs", destination="crm", state="ready") == 3
    assert sample(registry, "asyncq_jobs", destination="crm", state="scheduled") == 1
    assert sample(registry, "asyncq_jobs", destination="crm", state="dead") == 0
    assert sample(registry, "asyncq_oldest_ready_age_seconds", destination="crm") == 15
    assert sample(registry, "asyncq_paused", destination="crm") == 1
    assert sample(registry, "asyncq_circuit", destination="crm", state="closed") == 1
    assert sample(registry, "asyncq_circuit", destination="crm", state="open") == 0
    assert sample(registry, "asyncq_hold_remaining_seconds", destination="crm") == 0
    assert sample(registry, "asyncq_stats_timestamp_seconds") == clock.now()
    assert sample(registry, "asyncq_workers") == 0  # no worker process on this journal


_MEASURED = {"arrival_rate", "limit", "latency_p50"} <= set(DestinationCounts.__dataclass_fields__)


@pytest.mark.skipif(not _MEASURED, reason="the journal's stats do not measure rates yet")
def test_the_measured_figures_become_gauges(make_queue: MakeQueue) -> None:
    registry = CollectorRegistry()
    metrics = QueueMetrics(make_queue(), registry=registry)
    counts: Any = DestinationCounts
    metrics._stats = JournalStats(
        destinations={
            "crm": counts(
                ready=300,
                oldest_ready_at=1000.0,
                oldest_ready_age=120.0,
                arrival_rate=5.0,
                completion_rate=1.5,
                call_rate=1.7,
                retries_per_minute=12.0,
                dead_per_minute=1.0,
                latency_p50=0.08,
                latency_p95=0.4,
                latency_p99=None,  # not enough calls: no sample
                limit=2.0,
                limit_used=0.85,
                held_until=1150.0,
                circuit="open",
            ),
            "email": counts(limit=None, limit_used=None),
        },
        at=1120.0,  # type: ignore[call-arg]
        workers=2,  # type: ignore[call-arg]
    )
    expected = {
        "asyncq_arrivals_per_second": 5.0,
        "asyncq_completions_per_second": 1.5,
        "asyncq_calls_per_second": 1.7,
        "asyncq_retries_per_minute": 12.0,
        "asyncq_dead_letters_per_minute": 1.0,
        "asyncq_rate_limit_calls_per_second": 2.0,
        "asyncq_rate_limit_used_ratio": 0.85,
        "asyncq_oldest_ready_age_seconds": 120.0,
        "asyncq_hold_remaining_seconds": 30.0,
    }
    assert {name: sample(registry, name, destination="crm") for name in expected} == expected
    quantiles = {
        q: sample(registry, "asyncq_call_latency_seconds", destination="crm", quantile=q)
        for q in ("0.5", "0.95", "0.99")
    }
    assert quantiles == {"0.5": 0.08, "0.95": 0.4, "0.99": None}
    assert sample(registry, "asyncq_circuit", destination="crm", state="open") == 1
    assert sample(registry, "asyncq_rate_limit_calls_per_second", destination="email") is None
    assert sample(registry, "asyncq_workers") == 2


async def test_a_refresh_that_breaks_fails_the_queue(make_queue: MakeQueue) -> None:
    registry = CollectorRegistry()
    queue = make_queue(concurrency=0)

    class Broken(QueueMetrics):
        async def refresh(self) -> None:
            raise RuntimeError("a bug in the refresh")

    Broken(queue, registry=registry)
    with pytest.raises(QueueFailed, match="prometheus metrics"):
        async with queue:
            await queue._until_failed()


async def test_a_scrape_does_not_wait_for_the_journal(make_queue: MakeQueue) -> None:
    registry = CollectorRegistry()
    queue = make_queue(concurrency=0)
    metrics = Refreshes(queue, registry=registry)
    async with queue:
        await metrics.refreshed.wait()
        # From another thread, as start_http_server's scrapes come, while the loop is busy.
        text = await asyncio.to_thread(generate_latest, registry)
    assert b"asyncq_workers" in text


def test_names_taken_in_a_registry_leave_nothing_attached(make_queue: MakeQueue) -> None:
    registry = CollectorRegistry()
    first, second = make_queue(), make_queue()
    QueueMetrics(first, registry=registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        QueueMetrics(second, registry=registry)
    assert second._instrument is None
    assert first._instrument is not None


def test_bad_settings_are_refused(make_queue: MakeQueue) -> None:
    queue = make_queue()
    with pytest.raises(ValueError, match="interval"):
        QueueMetrics(queue, registry=None, interval=0)
    with pytest.raises(ValueError, match="buckets"):
        QueueMetrics(queue, registry=None, buckets=[0.1, float("inf")])
    assert queue._instrument is None


def test_without_the_extra_the_import_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.delitem(sys.modules, "asyncq.contrib.prometheus")
    with pytest.raises(ImportError, match=r"pip install 'asyncq\[prometheus\]'"):
        importlib.import_module("asyncq.contrib.prometheus")


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """examples/prometheus_fastapi.py, imported on a journal in tmp_path."""
    monkeypatch.setenv("ASYNCQ_JOURNAL", str(tmp_path / "outbound.db"))
    spec = importlib.util.spec_from_file_location(
        "prometheus_fastapi_example", ROOT / "examples" / "prometheus_fastapi.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        yield module
    finally:
        REGISTRY.unregister(module.metrics)  # the example registers in the default registry


def test_the_fastapi_example_serves_the_metrics(example: Any) -> None:
    from fastapi.testclient import TestClient

    for run in (1, 2):  # each TestClient runs the app in a new event loop
        with TestClient(example.app) as client:
            answer = client.post(f"/deals/{run}/won")
            assert answer.status_code == 202
            assert client.portal.call(_result, example.queue, answer.json()["job"]) == 200
            page = client.get("/metrics")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/plain")
        text = page.text
        assert f'asyncq_jobs{{destination="crm",state="succeeded"}} {run}.0' in text
        assert f'asyncq_attempts_total{{destination="crm",outcome="succeeded"}} {run}.0' in text
        assert f'asyncq_attempt_duration_seconds_count{{destination="crm"}} {run}.0' in text
        assert 'asyncq_jobs{destination="crm",state="ready"} 0.0' in text
        assert "process_cpu_seconds_total" in text  # the default registry's own series


async def _result(queue: Queue, job_id: int) -> Any:
    from asyncq import Job

    return await Job(queue, job_id).result(timeout=10)


def test_the_readmes_metrics_snippet_is_taken_from_the_example() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    (block,) = [b for b in blocks if "QueueMetrics(queue)" in b]
    example = (ROOT / "examples" / "prometheus_fastapi.py").read_text().splitlines()
    lines = [line for line in block.splitlines() if line.strip()]
    assert len(lines) > 5
    assert [line for line in lines if line not in example] == []
