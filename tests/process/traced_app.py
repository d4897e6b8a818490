"""A queue traced with OpenTelemetry, for a worker subprocess of test_tracing.py.

ASYNCQ_TRACE_JOURNAL  the journal (a file, or a postgresql:// connection string)
ASYNCQ_TRACE_SPANS    the file each finished span is appended to, one JSON line each

The handler makes a span of its own, as an instrumented HTTP client would for the
request it sends.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from asyncq import Queue
from asyncq.contrib.otel import QueueTracing

TASK_NAME = "webhooks.deliver"


class SpanFile(SpanExporter):
    """Appends each span as a JSON line, flushed as it ends (SimpleSpanProcessor)."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with open(os.environ["ASYNCQ_TRACE_SPANS"], "a") as out:
            for span in spans:
                assert span.context is not None
                line = {
                    "name": span.name,
                    "kind": span.kind.name,
                    "trace_id": f"{span.context.trace_id:032x}",
                    "span_id": f"{span.context.span_id:016x}",
                    "parent_id": None if span.parent is None else f"{span.parent.span_id:016x}",
                    "attributes": dict(span.attributes or {}),
                    "pid": os.getpid(),
                }
                out.write(json.dumps(line) + "\n")
        return SpanExportResult.SUCCESS


provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(SpanFile()))

queue = Queue(
    os.environ.get("ASYNCQ_TRACE_JOURNAL", ":memory:"),
    concurrency=2,
    poll_interval=0.01,
    shutdown_timeout=5.0,
)
QueueTracing(queue, tracer_provider=provider)


@queue.task(name=TASK_NAME, destination="webhooks")
async def deliver(url: str) -> str:
    with provider.get_tracer("webhook-client").start_as_current_span(f"POST {url}"):
        return "delivered"
