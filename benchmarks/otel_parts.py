"""Whose work a traced job is: Python opcodes per submit and per attempt of
`asyncq.contrib.otel`, by package (asyncq's own code, the OpenTelemetry API, its SDK,
the standard library), counted with `sys.settrace` (`f_trace_opcodes`): the same on
every run, whatever the machine's load.

    python benchmarks/otel_parts.py

Each case calls the instrument's hooks directly, as the engine does, N times after a
warm-up: a submit (`trace_context`, inside a span) and an attempt (`attempt`, then
the end it returns). Cases: the API alone (no SDK) and the SDK recording every span
or sampling a tenth (`ParentBased(TraceIdRatioBased(0.1))`, the random ids seeded);
an attempt of a job submitted outside any span (no parent) or inside one (a parent,
sampled, or for the tenth not sampled); each "again" (the same span submits every job, or
every job carries the same parent, as when a request submits many) and "first" (each
submit in a span not seen before, each parent not seen before: what asyncq remembers
does not help); and, for comparison, `QueueMetrics`'s hooks. The SDK's spans go to a
`BatchSpanProcessor`
whose exporter drops them, as in `observability.py`. A no-op job costs about 950
opcodes (`cost.py`); opcodes are not equal in cost (a call into C is one), so this
says whose work it is, and `observability.py --instructions` what it costs.
"""

from __future__ import annotations

import random
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from opentelemetry import trace  # noqa: E402
from opentelemetry.context import Context  # noqa: E402
from opentelemetry.sdk.trace import Span as SdkSpan  # noqa: E402
from opentelemetry.sdk.trace import Tracer as SdkTracer  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import (  # noqa: E402
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, TraceIdRatioBased  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from asyncq._journal import ClaimedJob  # noqa: E402
from asyncq.contrib.otel import _VARIABLE, QueueTracing  # noqa: E402
from asyncq.contrib.prometheus import QueueMetrics  # noqa: E402

N = 2000
PARTS = ("asyncq", "for asyncq", "SDK spans")

# The SDK's own work on a span: whatever runs inside these (ids, sampling, the span's
# attributes, its processor). The rest is asyncq's part: its own code, and what it
# calls of the API and the standard library (the trace context, entering the span).
SDK_ENTRIES = {
    SdkTracer.start_span.__code__,
    SdkSpan.end.__code__,
    SdkSpan.set_attribute.__code__,
    SdkSpan.record_exception.__code__,
    SdkSpan.set_status.__code__,
}


class Dropped(SpanExporter):
    def export(self, spans: Any) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class Unstarted:
    """What `attach` asks of a queue: not started, nothing attached yet."""

    _open = False
    _instrument = None


def count(call: Callable[[], object], n: int) -> Counter[str]:
    """Opcodes per call of `call`, by part (`n` calls after as many to warm up)."""
    for _ in range(n):
        call()
    counted: Counter[str] = Counter()
    inside = 0  # SDK entries on the stack
    asyncq = str(ROOT / "asyncq")
    this = call.__code__

    def tracer(frame: FrameType, event: str, arg: object) -> Any:
        nonlocal inside
        code = frame.f_code
        if event == "call":
            frame.f_trace_opcodes = True
            if code in SDK_ENTRIES:
                inside += 1
        elif event == "return":
            if code in SDK_ENTRIES:
                inside -= 1
        elif event == "opcode" and code is not this:
            if inside:
                counted["SDK spans"] += 1
            elif code.co_filename.startswith(asyncq):
                counted["asyncq"] += 1
            else:
                counted["for asyncq"] += 1
        return tracer

    sys.settrace(tracer)
    try:
        for _ in range(n):
            call()
    finally:
        sys.settrace(None)
    return Counter({name: round(value / n) for name, value in counted.items()})


def tracing(sdk: str | None) -> tuple[QueueTracing, Any]:
    if sdk is None:
        return QueueTracing(Unstarted()), None  # type: ignore[arg-type]
    sampler = ParentBased(TraceIdRatioBased(0.1)) if sdk == "10%" else ALWAYS_ON
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(BatchSpanProcessor(Dropped(), max_queue_size=1 << 17))
    return QueueTracing(Unstarted(), tracer_provider=provider), provider  # type: ignore[arg-type]


def show(label: str, counted: Counter[str]) -> None:
    print(f"  {label:<56}" + "".join(f"{counted[p]:>12}" for p in PARTS) + f"{counted.total():>12}")


def traceparents(flags: str) -> list[str]:
    """2N stored trace contexts, each of another span: for a cache, each seen first."""
    return [
        f"00-{random.getrandbits(128):032x}-{random.getrandbits(64):016x}-{flags}"
        for _ in range(2 * N)
    ]


def main() -> None:
    random.seed(7)
    job = ClaimedJob(1, "noop", {}, "default", 0, 1, 0.0, None)
    sampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"  # as stored
    unsampled = sampled[:-2] + "00"
    remote = trace.NonRecordingSpan(
        trace.SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True)
    )
    cases = [
        ("API alone", None, None),
        ("API alone", None, sampled),
        ("SDK, every span", "all", None),
        ("SDK, every span", "all", sampled),
        ("SDK, a tenth", "10%", None),
        ("SDK, a tenth", "10%", unsampled),
    ]
    print(f"opcodes per call, by part ({N:,} calls each)")
    print("(again: the same span submits each job, or the jobs carry the same parent;")
    print(" first: each submit in a span not seen before, each parent not seen before)\n")
    print(f"  {'case':<56}" + "".join(f"{name:>12}" for name in PARTS) + f"{'total':>12}")
    shown_submits = set()
    for name, sdk, parent in cases:
        instrument, provider = tracing(sdk)
        if name not in shown_submits:
            shown_submits.add(name)
            tracer = provider.get_tracer("app") if provider is not None else None
            with trace.use_span(remote) if tracer is None else tracer.start_as_current_span("r"):
                show(
                    f"{name}: a submit in a span, again",
                    count(lambda i=instrument: i.trace_context(), N),
                )
            # Contexts made beforehand, each entered (in C) before its submit.
            if tracer is None:
                spans = [
                    trace.NonRecordingSpan(trace.SpanContext(i, i, True))
                    for i in range(1, 2 * N + 1)
                ]
            else:
                spans = [tracer.start_span("r") for _ in range(2 * N)]
            contexts = iter([trace.set_span_in_context(span, Context()) for span in spans])
            token = _VARIABLE.set(Context())

            def submit_first(
                instrument: QueueTracing = instrument, contexts: Any = contexts
            ) -> None:
                _VARIABLE.set(next(contexts))
                instrument.trace_context()

            show(f"{name}: a submit in a span, first", count(submit_first, N))
            _VARIABLE.reset(token)

        def attempt(instrument: QueueTracing = instrument, parent: str | None = parent) -> None:
            end = instrument.attempt(job, parent)
            if end is not None:
                end("succeeded", None, 0.0)

        what = "a parent" if parent == sampled else "a parent not sampled"
        if parent is None:
            show(f"{name}: an attempt, no parent", count(attempt, N))
            continue
        show(f"{name}: an attempt, {what}, again", count(attempt, N))
        parents = iter(traceparents(parent[-2:]))

        def attempt_first(instrument: QueueTracing = instrument, parents: Any = parents) -> None:
            end = instrument.attempt(job, next(parents))
            if end is not None:
                end("succeeded", None, 0.0)

        show(f"{name}: an attempt, {what}, first", count(attempt_first, N))
        if provider is not None:
            provider.shutdown()
    # For comparison, the metrics' hooks (all "asyncq": counting is its own code).
    metrics = QueueMetrics(Unstarted(), registry=CollectorRegistry())  # type: ignore[arg-type]
    show("Prometheus: a submit", count(lambda: metrics.submitted("noop", "default", 1), N))

    def counted_attempt() -> None:
        metrics.attempt(job, None)("succeeded", None, 0.003)

    show("Prometheus: an attempt", count(counted_attempt, N))


if __name__ == "__main__":
    main()
