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

With the SDK's default sampler, `ParentBased` (its default for a parent that was not
sampled: always off), an attempt of a job whose submitting span was not sampled asks
the SDK for nothing, which would only make a span that records nothing: the handler
runs in the carried context, so the trace goes on, not sampled, as before. (What an
outbound call then carries as its parent is the submitting span's id, where the SDK
would have made up one of its own for a span that is never recorded.)

A submitting context is read once for the jobs it submits, and a stored context once
for the attempts that carry it: at most 256 of each are remembered, and all are
forgotten when the global propagator is replaced.
"""

from __future__ import annotations

import json
import re
from contextvars import ContextVar, Token
from functools import partial
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.context import Context
    from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
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
    from collections.abc import Callable

    from .._journal import ClaimedJob
    from .._queue import Queue

__all__ = ["QueueTracing"]

_FAILED = frozenset(("retry", "dead"))
_EMPTY = Context()
# The key under which a context holds its span (the API's own, read off a context
# it made rather than imported from a private module).
(_SPAN_KEY,) = trace.set_span_in_context(INVALID_SPAN, Context())

# The W3C propagators' fields: with these alone (the default: trace context and
# baggage), a span's context is written and read here directly, which costs a
# tenth of going through the propagators' layers.
_W3C_FIELDS = frozenset(("traceparent", "tracestate", "baggage"))

# What a submit stores when the context holds a span and nothing else, and the
# span has no trace state: its W3C `traceparent` alone, as text (version 00, trace
# id, span id, flags). Anything else is stored as a JSON object (it starts with "{").
_HEX = [f"{flags:02x}" for flags in range(256)]
_FLAGS = [TraceFlags(flags) for flags in range(256)]
_TRACEPARENT = re.compile("00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")

# Contexts and stored texts remembered (see `_Seen`); all are forgotten when full.
_REMEMBERED = 256


def _context_var() -> ContextVar[Context] | None:
    """The variable behind OpenTelemetry's current context when it is the default
    runtime context (contextvars), for the hot paths to read and set it without
    the API's two layers of calls; None for another runtime context."""
    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    variable = getattr(runtime, "_current_context", None)
    if type(runtime) is ContextVarsRuntimeContext and isinstance(variable, ContextVar):
        return variable
    return None


_VARIABLE = _context_var()
_current: Callable[[], Context] = otel_context.get_current if _VARIABLE is None else _VARIABLE.get
_enter: Callable[[Context], Token[Context]] = (
    otel_context.attach if _VARIABLE is None else _VARIABLE.set
)
_reset: Callable[[Token[Context]], None] = (
    otel_context.detach if _VARIABLE is None else _VARIABLE.reset
)


class _Carried:
    """What a job's stored trace context stands for, read once per text: the
    submitting span (INVALID_SPAN if none), a context holding it alone (the parent
    of an attempt's span), whether the sampler would drop an attempt's span under
    it, and the context a handler last entered on a worker context (`base`)."""

    __slots__ = ("alone", "base", "dropped", "entered", "span")

    def __init__(self, span: Span, dropped: bool) -> None:
        self.span = span
        self.alone: Context | None = None  # made when first needed
        self.dropped = dropped
        self.base: Context | None = None
        self.entered: Context | None = None


class QueueTracing(Instrument):
    """Traces of `queue`'s jobs (see the module's docstring), made with the
    global tracer provider or `tracer_provider`. Create it before the queue starts."""

    wants_traces = True

    def __init__(self, queue: Queue, *, tracer_provider: TracerProvider | None = None) -> None:
        self._provider = tracer_provider
        self._tracer = trace.get_tracer("asyncq", __version__, tracer_provider)
        self._records = self._provider_records()
        self._drops_unsampled = _drops_unsampled(self._tracer)
        self._textmap: TextMapPropagator | None = None  # the global one last looked at
        self._w3c = False  # whether it is the W3C one (see `_is_w3c`)
        # Read under `_textmap` (forgotten when it is replaced): the text each
        # submitting context gave, by id (the context is kept: its id stays its own),
        # and what each stored text stands for.
        self._captured: dict[int, tuple[Context, str | None]] = {}
        self._carried: dict[str, _Carried] = {}
        self._none = _Carried(INVALID_SPAN, False)  # a job that carries nothing
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
        if self._provider is None:
            self._tracer = trace.get_tracer("asyncq", __version__)
        self._drops_unsampled = _drops_unsampled(self._tracer)
        self._carried.clear()
        return []

    def _is_w3c(self, textmap: TextMapPropagator) -> bool:
        """Whether `textmap`, the global propagator, writes and reads W3C trace
        context and nothing else (baggage aside); looked at again when it is
        replaced, which forgets what was read under the one before."""
        if textmap is not self._textmap:
            fields = textmap.fields
            self._w3c = (
                isinstance(textmap, TraceContextTextMapPropagator | CompositePropagator)
                and "traceparent" in fields
                and fields <= _W3C_FIELDS
            )
            self._textmap = textmap
            self._captured.clear()
            self._carried.clear()
        return self._w3c

    # -- a submit ----------------------------------------------------------------

    def trace_context(self) -> str | None:
        context = _current()
        seen = self._captured.get(id(context))
        # Contexts do not change: the same one gives the same text (a span that
        # submits many jobs is read once), while the global propagator is the same.
        textmap = propagate.get_global_textmap()
        if seen is not None and seen[0] is context and textmap is self._textmap:
            return seen[1]
        text = self._capture(context, self._is_w3c(textmap))
        if len(self._captured) >= _REMEMBERED:
            self._captured.clear()
        self._captured[id(context)] = (context, text)
        return text

    def _capture(self, context: Context, w3c: bool) -> str | None:
        """The text that carries `context`: its span's traceparent (`w3c`: the
        global propagator is W3C's), or what the global propagator writes, as JSON;
        None without a span."""
        span = context.get(_SPAN_KEY)  # as `trace.get_current_span` reads it
        if not isinstance(span, Span):
            return None
        span_context = span.get_span_context()
        if not span_context.is_valid:
            return None  # no span: nothing to carry (the usual case outside requests)
        if len(context) == 1 and not span_context.trace_state and w3c:
            # The span alone (no baggage): what the propagators would write.
            # (Bytes to hex: twice as quick as formatting the numbers.)
            trace_id = span_context.trace_id.to_bytes(16).hex()
            span_id = span_context.span_id.to_bytes(8).hex()
            flags = _HEX[span_context.trace_flags & 0xFF]
            return f"00-{trace_id}-{span_id}-{flags}"
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context)
        return json.dumps(carrier, separators=(",", ":")) if carrier else None

    # -- an attempt ------------------------------------------------------------------

    def attempt(self, job: ClaimedJob, trace_context: str | None) -> AttemptEnd | None:
        carried = self._none if trace_context is None else self._read(trace_context)
        if not self._records or carried.dropped:
            # No span of its own: the API alone, or a sampler that would drop it
            # (its parent was not sampled). The handler runs in the submitting
            # span's context, for an instrumented client to carry onwards.
            base = _current()
            if base is not carried.base:
                self._enter_on(carried, base)
            entered = carried.entered
            return None if entered is None else partial(_left, _enter(entered))
        # Attributes at the start, in one call: a sampler sees them, and a recording
        # span takes them at once.
        alone = carried.alone
        if alone is None:
            span = carried.span
            alone = carried.alone = _EMPTY if span is INVALID_SPAN else Context({_SPAN_KEY: span})
        span = self._tracer.start_span(
            job.task,
            alone,
            SpanKind.CONSUMER,
            {
                "messaging.system": "asyncq",
                "messaging.destination.name": job.destination,
                "messaging.message.id": str(job.id),
                "asyncq.task": job.task,
                "asyncq.attempt": job.attempts,
            },
        )
        # The handler runs in the worker's context with the span in it: entered
        # here, left when it ends. Even a span that records nothing is entered: it
        # carries the trace onwards.
        token = _enter(Context({**_current(), _SPAN_KEY: span}))
        if span.is_recording():
            return partial(_ended, span, token)
        return partial(_left, token)

    def _read(self, trace_context: str) -> _Carried:
        """What `trace_context` stands for, read once per text (see `_Carried`)."""
        carried = self._carried.get(trace_context)
        textmap = propagate.get_global_textmap()
        if carried is not None and textmap is self._textmap:
            return carried
        w3c = self._is_w3c(textmap)
        span = _stored_span(trace_context) if w3c else None
        if span is None:
            span = trace.get_current_span(_extracted(trace_context))
        context = span.get_span_context()
        # A parent not sampled, under a sampler that drops whatever has one: the SDK
        # would only make a span that records nothing (and a span id of its own).
        dropped = self._drops_unsampled and context.is_valid and not context.trace_flags & 1
        if len(self._carried) >= _REMEMBERED:
            self._carried.clear()
        carried = self._carried[trace_context] = _Carried(span, dropped)
        return carried

    def _enter_on(self, carried: _Carried, base: Context) -> None:
        """What a handler enters on the worker's context `base`: the submitting
        span in it, or without a span (a job submitted outside one runs without the
        span its worker may have started in); None if that is `base` itself."""
        entered: Context | None = None
        if carried.span is not INVALID_SPAN or trace.get_current_span(base) is not INVALID_SPAN:
            entered = Context({**base, _SPAN_KEY: carried.span})
        carried.base, carried.entered = base, entered


def _stored_span(trace_context: str) -> Span | None:
    """The submitting span, read directly from a stored `traceparent` (INVALID_SPAN
    if its ids are not valid); None if the job carries a JSON object: for the
    propagator to read."""
    if (found := _TRACEPARENT.fullmatch(trace_context)) is None:
        return None
    trace_id, span_id, flags = found.groups()
    parent = SpanContext(int(trace_id, 16), int(span_id, 16), True, _FLAGS[int(flags, 16)])
    return NonRecordingSpan(parent) if parent.is_valid else INVALID_SPAN


def _drops_unsampled(tracer: trace.Tracer) -> bool:
    """Whether `tracer` drops every span whose parent is not sampled: the SDK's
    default sampler, `ParentBased`, with the default (always off) for a parent not
    sampled, remote or local (a handler's own spans have a local one)."""
    sampler = getattr(tracer, "sampler", None)
    try:
        from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
    except ImportError:  # the API alone: no sampler to ask
        return False
    return type(sampler) is ParentBased and all(
        getattr(sampler, name, None) is ALWAYS_OFF
        for name in ("_remote_parent_not_sampled", "_local_parent_not_sampled")
    )


def _ended(
    span: Span,
    token: Token[Context],
    outcome: Outcome,
    error: BaseException | None,
    seconds: float,
) -> None:
    """The end of a recorded attempt: its outcome, and its error if any."""
    _left(token, outcome, error, seconds)
    span.set_attribute("asyncq.outcome", outcome)
    if error is not None:
        span.record_exception(error)
        if outcome in _FAILED:
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}"))
    span.end()


def _left(
    token: Token[Context],
    outcome: Outcome,
    error: BaseException | None,
    seconds: float,
) -> None:
    """The end of an attempt whose span records nothing: only its context is left
    (as `otel_context.detach` leaves it, which logs rather than raises if it cannot)."""
    try:
        _reset(token)
    except (ValueError, RuntimeError):
        otel_context.detach(token)  # fails again, and logs it


def _extracted(trace_context: str) -> Context:
    """What the global propagator reads from a stored carrier: a JSON object of
    its fields, or a `traceparent` alone."""
    if not trace_context.startswith("{"):
        return propagate.extract({"traceparent": trace_context}, context=Context())
    try:
        carrier: Any = json.loads(trace_context)
    except ValueError:
        return _EMPTY
    if not isinstance(carrier, dict):
        return _EMPTY
    fields = {k: v for k, v in carrier.items() if isinstance(v, str)}
    # Onto an empty context, not the worker's own (which the queue's start left it).
    return propagate.extract(fields, context=Context())
