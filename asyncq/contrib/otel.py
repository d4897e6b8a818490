"""OpenTelemetry traces of a queue (extra: `pip install 'asyncq[otel]'`).

    from asyncq.contrib.otel import QueueTracing
    QueueTracing(queue)   # before the queue starts, in every process that submits or runs

A job submitted inside a span (a web request, say) carries that span's context
in the journal: the W3C `traceparent` and `tracestate`, as the global propagator
writes them. Each attempt of the job, in whichever process runs it, is a span of
kind CONSUMER that is a child of the submitting span, so the call the job makes
(a webhook delivery) shows up in the trace of the request that caused it, each
retry beside the first attempt. The handler runs inside the attempt's span: an
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
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider
except ImportError as exc:  # pragma: no cover - what the test of the extra checks
    raise ImportError(
        "asyncq.contrib.otel needs opentelemetry-api: pip install 'asyncq[otel]'"
    ) from exc

from .. import __version__
from .._instrument import AttemptEnd, Instrument, Outcome, attach

if TYPE_CHECKING:
    from .._journal import ClaimedJob
    from .._queue import Queue

__all__ = ["QueueTracing"]

_FAILED = frozenset(("retry", "dead"))


class QueueTracing(Instrument):
    """Traces of `queue`'s jobs (see the module's docstring), made with the
    global tracer provider or `tracer_provider`. Create it before the queue starts."""

    wants_traces = True

    def __init__(self, queue: Queue, *, tracer_provider: TracerProvider | None = None) -> None:
        self._tracer = trace.get_tracer("asyncq", __version__, tracer_provider)
        attach(queue, self)

    def trace_context(self) -> str | None:
        if not trace.get_current_span().get_span_context().is_valid:
            return None  # no span: nothing to carry (the usual case outside requests)
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        return json.dumps(carrier, separators=(",", ":")) if carrier else None

    def attempt(self, job: ClaimedJob, trace_context: str | None) -> AttemptEnd:
        span = self._tracer.start_span(
            job.task,
            context=_parent(trace_context),
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "asyncq",
                "messaging.destination.name": job.destination,
                "messaging.message.id": str(job.id),
                "asyncq.task": job.task,
                "asyncq.attempt": job.attempts,
            },
        )
        # The handler runs in the worker's context: entered here, left when it ends.
        token = otel_context.attach(trace.set_span_in_context(span))

        def ended(outcome: Outcome, error: BaseException | None, seconds: float) -> None:
            otel_context.detach(token)
            if span.is_recording():
                span.set_attribute("asyncq.outcome", outcome)
                if error is not None:
                    span.record_exception(error)
                    if outcome in _FAILED:
                        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}"))
            span.end()

        return ended


def _parent(trace_context: str | None) -> otel_context.Context:
    """The submitting span's context, from what the job carries; an empty context
    (a new trace) if it carries none, or nothing readable."""
    if trace_context is None:
        return otel_context.Context()
    try:
        carrier: Any = json.loads(trace_context)
    except ValueError:
        return otel_context.Context()
    if not isinstance(carrier, dict):
        return otel_context.Context()
    fields = {k: v for k, v in carrier.items() if isinstance(v, str)}
    # Onto an empty context, not the worker's own (which the queue's start left it).
    return propagate.extract(fields, context=otel_context.Context())
