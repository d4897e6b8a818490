"""asyncq.contrib.otel: a span per attempt, a child of the span that submitted the
job, whose context the job carries in the journal; recorded with the SDK's
in-memory exporter, on both journals (a SQLite file, a fresh PostgreSQL schema).
(A worker in another process: tests/process/test_tracing.py.)"""

from __future__ import annotations

import importlib
import json
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import SpanKind, StatusCode

from asyncq import Queue, Retry
from asyncq.contrib.otel import QueueTracing
from asyncq.testing import ManualClock, run_until_idle
from tests.postgres import fresh_schema, postgres_dsn_or_skip, query

MakeQueue = Callable[..., Queue]


@pytest.fixture(params=["sqlite", "postgres"])
async def db_path(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The journal every queue of a test shares: a SQLite file, or a fresh schema
    on the PostgreSQL server that tests/postgres.py finds."""
    if request.param == "sqlite":
        yield str(tmp_path / "jobs.db")
        return
    async with fresh_schema(postgres_dsn_or_skip()) as dsn:
        yield dsn


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    # Not the global provider (it can be set once per process): each test has its own.
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def attempts(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    spans = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CONSUMER]
    return sorted(spans, key=lambda s: (s.attributes or {}).get("asyncq.attempt", 0))


def traces(db_path: str) -> dict[int, str | None]:
    if db_path.startswith("postgresql://"):
        return dict(query(db_path, "SELECT id, trace FROM jobs"))  # type: ignore[arg-type]
    with sqlite3.connect(db_path) as conn:
        return dict(conn.execute("SELECT id, trace FROM jobs").fetchall())


def set_trace(db_path: str, job_id: int, text: str) -> None:
    """Write a job's stored trace context by hand."""
    if db_path.startswith("postgresql://"):
        query(db_path, "UPDATE jobs SET trace = $1 WHERE id = $2", text, job_id)
        return
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE jobs SET trace = ? WHERE id = ?", (text, job_id))


async def test_an_attempt_is_a_child_of_the_span_that_submitted_its_job(
    make_queue: MakeQueue, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    queue = make_queue()
    QueueTracing(queue, tracer_provider=provider)
    tracer = provider.get_tracer("app")

    @queue.task(name="post_deal", destination="crm")
    async def post_deal(deal: int) -> int:
        # The handler runs in the attempt's span: its own spans are children of it.
        with tracer.start_as_current_span("POST https://crm.example/hooks"):
            return 200

    async with queue:
        with tracer.start_as_current_span("POST /deals/7/won") as request:
            job = await post_deal.submit(7)
        await run_until_idle(queue)
    (attempt,) = attempts(exporter)
    context = request.get_span_context()
    assert attempt.context is not None
    assert attempt.context.trace_id == context.trace_id  # in the request's trace
    assert attempt.parent is not None
    assert attempt.parent.span_id == context.span_id  # a child of the request's span
    assert attempt.name == "post_deal"
    assert dict(attempt.attributes or {}) == {
        "messaging.system": "asyncq",
        "messaging.destination.name": "crm",
        "messaging.message.id": str(job.id),
        "asyncq.task": "post_deal",
        "asyncq.attempt": 1,
        "asyncq.outcome": "succeeded",
    }
    assert attempt.status.status_code is StatusCode.UNSET
    (call,) = [s for s in exporter.get_finished_spans() if s.name.startswith("POST https")]
    assert call.parent is not None
    assert call.parent.span_id == attempt.context.span_id


async def test_every_retry_is_a_child_of_the_request_and_errors_are_recorded(
    make_queue: MakeQueue,
    clock: ManualClock,
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    queue = make_queue()
    queue.destination("crm", retry=Retry(schedule=[60]))
    QueueTracing(queue, tracer_provider=provider)

    @queue.task(name="post_deal", destination="crm")
    async def post_deal() -> None:
        raise ConnectionError("connection refused")

    async with queue:
        with provider.get_tracer("app").start_as_current_span("request") as request:
            await post_deal.submit()
        await run_until_idle(queue)
        clock.advance(60)
        await run_until_idle(queue)
    first, second = attempts(exporter)
    for span, number, outcome in ((first, 1, "retry"), (second, 2, "dead")):
        assert span.parent is not None
        assert span.parent.span_id == request.get_span_context().span_id
        assert (span.attributes or {})["asyncq.attempt"] == number
        assert (span.attributes or {})["asyncq.outcome"] == outcome
        assert span.status.status_code is StatusCode.ERROR
        (event,) = span.events
        assert event.name == "exception"
        assert (event.attributes or {})["exception.type"] == "ConnectionError"
        assert (event.attributes or {})["exception.message"] == "connection refused"


async def test_the_trace_state_travels_with_the_job(
    make_queue: MakeQueue, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    queue = make_queue()
    QueueTracing(queue, tracer_provider=provider)

    @queue.task(name="step")
    async def step() -> None:
        pass

    # A request that came in with a traceparent and a tracestate (W3C).
    incoming = propagate.extract(
        {
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "tracestate": "vendor=opaque-value",
        }
    )
    async with queue:
        with provider.get_tracer("app").start_as_current_span("request", context=incoming):
            await step.submit()
            await queue.submit_many(step, [{}])
        await run_until_idle(queue)
    spans = attempts(exporter)
    assert len(spans) == 2
    for span in spans:
        assert span.context is not None
        assert span.context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
        assert span.context.trace_state.get("vendor") == "opaque-value"


async def test_a_job_submitted_outside_a_span_carries_nothing_and_starts_its_own_trace(
    make_queue: MakeQueue,
    db_path: str,
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    queue = make_queue()
    QueueTracing(queue, tracer_provider=provider)

    @queue.task(name="step")
    async def step() -> None:
        pass

    # The queue starts inside a span: its workers must not make every attempt a child of it.
    with provider.get_tracer("app").start_as_current_span("startup") as startup:
        async with queue:
            with trace.use_span(trace.INVALID_SPAN):
                job = await step.submit()
            await run_until_idle(queue)
    assert traces(db_path) == {job.id: None}
    (attempt,) = attempts(exporter)
    assert attempt.parent is None
    assert attempt.context is not None
    assert attempt.context.trace_id != startup.get_span_context().trace_id


async def test_without_tracing_nothing_is_captured_even_inside_a_span(
    make_queue: MakeQueue, db_path: str, provider: TracerProvider
) -> None:
    queue = make_queue()

    @queue.task(name="step")
    async def step() -> None:
        pass

    async with queue:
        with provider.get_tracer("app").start_as_current_span("request"):
            job = await step.submit()
            many = await queue.submit_many(step, [{}])
        await run_until_idle(queue)
    assert traces(db_path) == {job.id: None, many[0].id: None}


async def test_a_worker_on_the_same_journal_continues_the_producers_trace(
    make_queue: MakeQueue,
    db_path: str,
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    producer = make_queue(concurrency=0)
    QueueTracing(producer, tracer_provider=provider)
    worker_exporter = InMemorySpanExporter()
    worker_provider = TracerProvider()
    worker_provider.add_span_processor(SimpleSpanProcessor(worker_exporter))
    worker = make_queue()
    QueueTracing(worker, tracer_provider=worker_provider)
    for queue in (producer, worker):

        @queue.task(name="deliver", destination="webhooks")
        async def deliver() -> None:
            pass

    async with producer:
        with provider.get_tracer("app").start_as_current_span("request") as request:
            job = await producer.submit("deliver")
    stored = traces(db_path)[job.id]
    assert stored is not None
    context = request.get_span_context()
    # W3C's traceparent: version, trace id, the submitting span's id, flags (sampled,
    # and the trace id random).
    assert stored == f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    async with worker:
        await run_until_idle(worker)
    assert attempts(exporter) == []  # the producer made no attempt
    (attempt,) = attempts(worker_exporter)
    assert attempt.context is not None
    assert attempt.context.trace_id == context.trace_id
    assert attempt.parent is not None
    assert attempt.parent.span_id == context.span_id


async def test_a_trace_context_that_cannot_be_read_starts_a_new_trace(
    make_queue: MakeQueue,
    db_path: str,
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    producer = make_queue(concurrency=0)

    @producer.task(name="step")
    async def step() -> None:
        pass

    unreadable = [
        "not json",
        "[1, 2]",
        '{"traceparent": 7}',
        '{"traceparent":"00-00000000000000000000000000000000-b7ad6b7169203331-01"}',  # no trace
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",  # capitals
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
    ]
    async with producer:
        jobs = await producer.submit_many(step, [{} for _ in unreadable])
    for job, text in zip(jobs, unreadable, strict=True):
        set_trace(db_path, job.id, text)
    worker = make_queue()
    QueueTracing(worker, tracer_provider=provider)
    worker.task(name="step")(step.fn)
    async with worker:
        await run_until_idle(worker)
    spans = attempts(exporter)
    assert len(spans) == len(unreadable)
    assert [s.parent for s in spans] == [None] * len(unreadable)
    assert {(s.attributes or {})["asyncq.outcome"] for s in spans} == {"succeeded"}


async def test_what_a_job_carries_is_what_the_global_propagator_writes(
    make_queue: MakeQueue, db_path: str, provider: TracerProvider
) -> None:
    queue = make_queue(concurrency=0)
    QueueTracing(queue, tracer_provider=provider)

    @queue.task(name="step")
    async def step() -> None:
        pass

    written: list[str] = []

    def propagated() -> str:
        """What the global propagator writes: the traceparent alone as it is, else
        every field, as JSON."""
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        if list(carrier) == ["traceparent"]:
            return carrier["traceparent"]
        return json.dumps(carrier, separators=(",", ":"))

    incoming = propagate.extract(
        {
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "tracestate": "vendor=opaque-value",
        }
    )
    tracer = provider.get_tracer("app")
    async with queue:
        with tracer.start_as_current_span("plain"):  # a span alone
            jobs = [await step.submit()]
            written.append(propagated())
        # Flags other than sampled (a span that is not recorded, say), a remote span.
        unsampled = trace.SpanContext(0xABC, 0xDEF, True, trace.TraceFlags(0x02))
        with trace.use_span(trace.NonRecordingSpan(unsampled)):
            jobs.append(await step.submit())
            written.append(propagated())
        with tracer.start_as_current_span("traced", context=incoming):  # a trace state
            jobs.append(await step.submit())
            written.append(propagated())
        token = otel_context.attach(baggage.set_baggage("tenant", "acme"))
        try:
            with tracer.start_as_current_span("with baggage"):
                jobs.append(await step.submit())
                written.append(propagated())
        finally:
            otel_context.detach(token)
    stored = traces(db_path)
    assert [stored[job.id] for job in jobs] == written
    assert written[0].startswith("00-")
    assert written[1].endswith("-02")
    assert "tracestate" in json.loads(written[2])
    assert json.loads(written[3])["baggage"] == "tenant=acme"


def unsampled_parent(trace_id: int) -> trace.NonRecordingSpan:
    """A remote parent that its caller did not sample (a request that came in with
    flags 00)."""
    return trace.NonRecordingSpan(trace.SpanContext(trace_id, 0xB7AD6B7169203331, True))


async def test_a_parent_not_sampled_makes_no_span_but_its_context_goes_on(
    make_queue: MakeQueue, exporter: InMemorySpanExporter
) -> None:
    # The SDK's default sampler: ParentBased, which drops a span whose parent was
    # not sampled. asyncq asks the SDK for no span then, but the handler still runs
    # in the carried context, so an outbound call carries the trace on (not sampled).
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    assert isinstance(provider.sampler, ParentBased)
    queue = make_queue()
    QueueTracing(queue, tracer_provider=provider)
    tracer = provider.get_tracer("app")
    outbound: list[dict[str, str]] = []

    @queue.task(name="deliver")
    async def deliver() -> None:
        with tracer.start_as_current_span("POST https://crm.example/hooks"):
            headers: dict[str, str] = {}
            propagate.inject(headers)  # what an instrumented client sends
            outbound.append(headers)

    async with queue:
        with trace.use_span(unsampled_parent(0xABC)):
            await deliver.submit()
        await run_until_idle(queue)
        with tracer.start_as_current_span("request") as request:
            await deliver.submit()
        await run_until_idle(queue)
    first, second = outbound
    assert first["traceparent"].startswith(f"00-{0xABC:032x}-")
    assert first["traceparent"].endswith("-00")
    context = request.get_span_context()
    assert second["traceparent"].startswith(f"00-{context.trace_id:032x}-")
    # Nothing of the trace not sampled was recorded: neither the attempt nor the
    # handler's own span. The sampled one: the attempt, a child of the request.
    spans = exporter.get_finished_spans()
    assert {s.context.trace_id for s in spans if s.context is not None} == {context.trace_id}
    (attempt,) = attempts(exporter)
    assert attempt.parent is not None
    assert attempt.parent.span_id == context.span_id


async def test_a_sampler_that_records_under_a_parent_not_sampled_is_asked(
    make_queue: MakeQueue, exporter: InMemorySpanExporter
) -> None:
    sampler = ParentBased(ALWAYS_ON, remote_parent_not_sampled=ALWAYS_ON)
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    queue = make_queue()
    QueueTracing(queue, tracer_provider=provider)

    @queue.task(name="deliver")
    async def deliver() -> None:
        pass

    async with queue:
        with trace.use_span(unsampled_parent(0xABC)):
            await deliver.submit()
        await run_until_idle(queue)
    (attempt,) = attempts(exporter)
    assert attempt.context is not None
    assert attempt.context.trace_id == 0xABC
    assert attempt.parent is not None
    assert attempt.parent.span_id == 0xB7AD6B7169203331


async def test_a_propagator_set_while_the_queue_runs_writes_the_next_submits(
    make_queue: MakeQueue, db_path: str, provider: TracerProvider
) -> None:
    # What a submitting context gave is remembered, but not past a new propagator.
    queue = make_queue(concurrency=0)
    QueueTracing(queue, tracer_provider=provider)

    @queue.task(name="step")
    async def step() -> None:
        pass

    before = propagate.get_global_textmap()
    async with queue:
        with provider.get_tracer("app").start_as_current_span("request") as request:
            first = await step.submit()
            again = await step.submit()
            propagate.set_global_textmap(Custom())
            try:
                custom = await step.submit()
            finally:
                propagate.set_global_textmap(before)
    context = request.get_span_context()
    stored = traces(db_path)
    assert stored[first.id] == stored[again.id]
    assert (stored[first.id] or "").startswith(f"00-{context.trace_id:032x}-")
    assert json.loads(stored[custom.id] or "") == {
        "x-trace": f"{context.trace_id:x}:{context.span_id:x}"
    }


class Custom(TextMapPropagator):
    """Not W3C: the trace and span ids in one field of its own."""

    def extract(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> Context:
        (value,) = getter.get(carrier, "x-trace") or ["-"]
        trace_id, _, span_id = value.partition(":")
        parent = trace.SpanContext(int(trace_id, 16), int(span_id, 16), True, trace.TraceFlags(1))
        return trace.set_span_in_context(trace.NonRecordingSpan(parent), context)

    def inject(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        span = trace.get_current_span(context).get_span_context()
        setter.set(carrier, "x-trace", f"{span.trace_id:x}:{span.span_id:x}")

    @property
    def fields(self) -> set[str]:
        return {"x-trace"}


@pytest.fixture
def custom_propagator() -> Iterator[None]:
    before = propagate.get_global_textmap()
    propagate.set_global_textmap(Custom())
    yield
    propagate.set_global_textmap(before)


@pytest.mark.usefixtures("custom_propagator")
async def test_another_global_propagator_writes_and_reads_what_a_job_carries(
    make_queue: MakeQueue, db_path: str, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    queue = make_queue()
    QueueTracing(queue, tracer_provider=provider)

    @queue.task(name="step")
    async def step() -> None:
        pass

    async with queue:
        with provider.get_tracer("app").start_as_current_span("request") as request:
            job = await step.submit()
        await run_until_idle(queue)
    context = request.get_span_context()
    assert json.loads(traces(db_path)[job.id] or "") == {
        "x-trace": f"{context.trace_id:x}:{context.span_id:x}"
    }
    (attempt,) = attempts(exporter)
    assert attempt.parent is not None
    assert (attempt.parent.trace_id, attempt.parent.span_id) == (
        context.trace_id,
        context.span_id,
    )


async def test_with_the_api_alone_a_handler_runs_in_the_context_that_submitted_its_job(
    make_queue: MakeQueue, db_path: str
) -> None:
    # No SDK: the global provider is the API's own, which records nothing. The
    # context still travels, for instrumented clients to carry it onwards.
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    queue = make_queue()
    QueueTracing(queue)
    seen: list[trace.SpanContext] = []

    @queue.task(name="step")
    async def step() -> None:
        seen.append(trace.get_current_span().get_span_context())

    incoming = propagate.extract(
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    )
    startup = propagate.extract(
        {"traceparent": "00-11111111111111111111111111111111-2222222222222222-01"}
    )
    token = otel_context.attach(startup)  # the workers start inside a span
    try:
        async with queue:
            with trace.use_span(trace.get_current_span(incoming)):
                carried = await step.submit()
            await run_until_idle(queue)
            with trace.use_span(trace.INVALID_SPAN):
                alone = await step.submit()
            await run_until_idle(queue)
    finally:
        otel_context.detach(token)
    stored = traces(db_path)
    assert stored[alone.id] is None
    assert stored[carried.id] == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    first, second = seen
    assert (first.trace_id, first.span_id) == (
        0x0AF7651916CD43DD8448EB211C80319C,
        0xB7AD6B7169203331,
    )
    assert not second.is_valid  # not the span the workers started in


def test_without_the_extra_the_import_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    monkeypatch.delitem(sys.modules, "asyncq.contrib.otel")
    with pytest.raises(ImportError, match=r"pip install 'asyncq\[otel\]'"):
        importlib.import_module("asyncq.contrib.otel")


def test_the_private_context_variable_hook_still_matches_opentelemetry() -> None:
    """Pin test: the hot paths set OpenTelemetry's context variable directly, read
    through its private `_RUNTIME_CONTEXT`. With the installed release the fast path
    must be the one taken, and what it sets must be what the API reads; if a release
    moves it, this fails (the code falls back to the API by itself)."""
    from asyncq.contrib import otel

    assert otel._VARIABLE is not None, "OpenTelemetry moved its runtime context"
    marked = otel_context.set_value("asyncq-pin", 1, Context())
    token = otel._enter(marked)
    try:
        assert otel_context.get_current() is marked
        assert otel._current() is otel_context.get_current()
    finally:
        otel._reset(token)
    assert otel_context.get_value("asyncq-pin") is None
