"""OpenTelemetry traces of a queue (extra: `pip install 'asyncq[otel]'`).

    from asyncq.contrib.otel import QueueTracing
    QueueTracing(queue)   # before the queue starts, in every process that submits or runs

A job submitted inside a span (a web request, say) carries that span's context
in the journal: its W3C `traceparent` as text when that is all there is (the
usual case, written and read here directly), or else a JSON object of what the
global propagator writes (`traceparent` and `tracestate`, baggage, or another
propagator's fields). Each attempt of the job, in whichever process runs it, is a
span of kind CONSUMER that is a child of the submitting span, so the call the job
makes (a webhook delivery) shows up in the trace of the request that caused it,
each retry beside the first attempt. The handler runs inside the attempt's span: an
instrumented HTTP client's request is a child of it.

Why a child, not only a link: a span that is merely linked starts a trace of its
own, and the request's trace would not show the delivery. OpenTelemetry's
messaging conventions allow the creation context as the parent when a message is
processed on its own, as a job is. The price: a job retried hours later makes
that trace hours long.

A job submitted outside any span carries nothing (its `trace` column is NULL) and
its attempts start traces of their own. Attributes: `messaging.system`
("asyncq"), `messaging.destination.name`, `messaging.message.id` (the job id),
`asyncq.task`, `asyncq.attempt`, and at the end `asyncq.outcome`; a failed
attempt records its exception and, if it is to run again or is dead, an error
status. Without `QueueTracing`, nothing is captured or stored.

With the OpenTelemetry API alone (no SDK configured when the queue starts: the
API's own provider, which records nothing), attempts make no spans, but a job's
handler still runs in the context that submitted it, for instrumented clients to
carry onwards. Configure the SDK before the queue starts.
"""

from __future__ import annotations

import json
import re
from contextvars import Token
from functools import partial
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.propagators.composite import CompositePropagator
    from opentelemetry.propagators.textmap import TextMapPropagator
    from opentelemetry.trace import (
        INVALID_SPAN,
        NonRecordingSpan,
        NoOpTracerProvider,
        ProxyTracerProvider,
        Span,
        SpanContext,
        SpanKind,
        Status,
        StatusCode,
        TraceFlags,
        TracerProvider,
    )
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError as exc:  # pragma: no cover - what the test of the extra checks
    raise ImportError(
        "asyncq.contrib.otel needs opentelemetry-api: pip install 'asyncq[otel]'"
    ) from exc

from .. import __version__
from .._instrument import AttemptEnd, Instrument, Outcome, Part, attach

if TYPE_CHECKING:
    from .._journal import ClaimedJob
    from .._queue import Queue

__all__ = ["QueueTracing"]

_FAILED = frozenset(("retry", "dead"))
_EMPTY = otel_context.Context()

# The W3C propagators' fields: with these alone (the default: trace context and
# baggage), a span's context is written and read here directly, which costs a
# tenth of going through the propagators' layers.
_W3C_FIELDS = frozenset(("traceparent", "tracestate", "baggage"))

# What a submit stores when the context holds a span and nothing else, and the
# span has no trace state: its W3C `traceparent` alone, as text (version 00, trace
# id, span id, flags). Anything else is stored as a JSON object (it starts with "{").
_HEX = [f"{flags:02x}" for flags in range(256)]
_TRACEPARENT = re.compile("00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


class QueueTracing(Instrument):
    """Traces of `queue`'s jobs (see the module's docstring), made with the
    global tracer provider or `tracer_provider`. Create it before the queue starts."""

    wants_traces = True

    def __init__(self, queue: Queue, *, tracer_provider: TracerProvider | None = None) -> None:
        self._provider = tracer_provider
        self._tracer = trace.get_tracer("asyncq", __version__, tracer_provider)
        self._records = self._provider_records()
        self._textmap: TextMapPropagator | None = None  # the global one last looked at
        self._w3c = False  # whether it is the W3C one (see `_is_w3c`)
        attach(queue, self)

    def _provider_records(self) -> bool:
        """Whether the tracer provider can record spans: not the API's own
        (no SDK configured), which makes none."""
        provider = self._provider or trace.get_tracer_provider()
        return not isinstance(provider, ProxyTracerProvider | NoOpTracerProvider)

    def background(self, queue: Queue) -> list[Part]:
        # The provider in effect when the queue starts decides for its run: an SDK
        # configured later is not seen (configure it first, as OpenTelemetry asks).
        self._records = self._provider_records()
        return []

    def _is_w3c(self) -> bool:
        """Whether the global propagator writes and reads W3C trace context and
        nothing else (baggage aside); looked at again when it is replaced."""
        textmap = propagate.get_global_textmap()
        if textmap is not self._textmap:
            fields = textmap.fields
            self._w3c = (
                isinstance(textmap, TraceContextTextMapPropagator | CompositePropagator)
                and "traceparent" in fields
                and fields <= _W3C_FIELDS
            )
            self._textmap = textmap
        return self._w3c

    def trace_context(self) -> str | None:
        context = otel_context.get_current()
        span_context = trace.get_current_span(context).get_span_context()
        if not span_context.is_valid:
            return None  # no span: nothing to carry (the usual case outside requests)
        if len(context) == 1 and not span_context.trace_state and self._is_w3c():
            # The span alone (no baggage): what the propagators would write.
            # (Bytes to hex: twice as quick as formatting the numbers.)
            trace_id = span_context.trace_id.to_bytes(16).hex()
            span_id = span_context.span_id.to_bytes(8).hex()
            flags = _HEX[span_context.trace_flags & 0xFF]
            return f"00-{trace_id}-{span_id}-{flags}"
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context)
        return json.dumps(carrier, separators=(",", ":")) if carrier else None

    def attempt(self, job: ClaimedJob, trace_context: str | None) -> AttemptEnd | None:
        if not self._records:
            return self._carried(trace_context)
        # Attributes at the start, in one call: a sampler sees them, and a recording
        # span takes them at once.
        span = self._tracer.start_span(
            job.task,
            _EMPTY if trace_context is None else self._parent(trace_context),
            SpanKind.CONSUMER,
            {
                "messaging.system": "asyncq",
                "messaging.destination.name": job.destination,
                "messaging.message.id": str(job.id),
                "asyncq.task": job.task,
                "asyncq.attempt": job.attempts,
            },
        )
        # The handler runs in the worker's context: entered here, left when it ends.
        # Even a span that records nothing is entered: it carries the trace onwards.
        token = otel_context.attach(trace.set_span_in_context(span))
        if span.is_recording():
            return partial(_ended, span, token)
        return partial(_left, token)

    def _carried(self, trace_context: str | None) -> AttemptEnd | None:
        """An attempt without a provider that records (the API alone): no span of
        its own, but the handler runs in the submitting span's context, which an
        instrumented client carries onwards, or in none."""
        parent: Span = INVALID_SPAN
        if trace_context is not None:
            stored = self._stored_span(trace_context)
            parent = trace.get_current_span(_extracted(trace_context)) if stored is None else stored
        if parent is INVALID_SPAN and trace.get_current_span() is INVALID_SPAN:
            return None  # no span before, none in the handler: nothing to do
        token = otel_context.attach(trace.set_span_in_context(parent))
        return partial(_left, token)

    def _parent(self, trace_context: str) -> otel_context.Context:
        """The submitting span's context, from what the job carries; an empty
        context (a new trace) if it carries nothing readable."""
        stored = self._stored_span(trace_context)
        if stored is None:
            return _extracted(trace_context)
        return _EMPTY if stored is INVALID_SPAN else trace.set_span_in_context(stored, _EMPTY)

    def _stored_span(self, trace_context: str) -> Span | None:
        """The submitting span, read directly from a stored `traceparent` (INVALID_SPAN
        if its ids are not valid); None if the job carries a JSON object, or the
        propagator is not W3C's: for the propagator to read."""
        if not self._is_w3c() or (found := _TRACEPARENT.fullmatch(trace_context)) is None:
            return None
        trace_id, span_id, flags = found.groups()
        parent = SpanContext(int(trace_id, 16), int(span_id, 16), True, TraceFlags(int(flags, 16)))
        return NonRecordingSpan(parent) if parent.is_valid else INVALID_SPAN


def _ended(
    span: Span,
    token: Token[otel_context.Context],
    outcome: Outcome,
    error: BaseException | None,
    seconds: float,
) -> None:
    """The end of a recorded attempt: its outcome, and its error if any."""
    otel_context.detach(token)
    span.set_attribute("asyncq.outcome", outcome)
    if error is not None:
        span.record_exception(error)
        if outcome in _FAILED:
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}"))
    span.end()


def _left(
    token: Token[otel_context.Context],
    outcome: Outcome,
    error: BaseException | None,
    seconds: float,
) -> None:
    """The end of an attempt whose span records nothing: only its context is left."""
    otel_context.detach(token)


def _extracted(trace_context: str) -> otel_context.Context:
    """What the global propagator reads from a stored carrier: a JSON object of
    its fields, or a `traceparent` alone."""
    if not trace_context.startswith("{"):
        return propagate.extract({"traceparent": trace_context}, context=otel_context.Context())
    try:
        carrier: Any = json.loads(trace_context)
    except ValueError:
        return _EMPTY
    if not isinstance(carrier, dict):
        return _EMPTY
    fields = {k: v for k, v in carrier.items() if isinstance(v, str)}
    # Onto an empty context, not the worker's own (which the queue's start left it).
    return propagate.extract(fields, context=otel_context.Context())
