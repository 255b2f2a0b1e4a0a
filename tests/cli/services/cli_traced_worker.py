"""A worker module with telemetry: spans go to a JSON-lines file ($SPANS_FILE), for ``wireframe worker``.

``WIREFRAME_WORKER_LAYERS`` lists a :class:`~wireframe.telemetry.TelemetryLayer`
with an SDK tracer provider whose exporter appends each finished span (name,
trace id, span id, parent span id, attributes) to the file, so a test in
another process can check that the worker's job span is a child of the span
that submitted the job.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import attrs
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

import wireframe as wf
from wireframe import jobs
from wireframe.telemetry import TelemetryLayer


class FileExporter(SpanExporter):
    """Appends finished spans to $SPANS_FILE as JSON lines."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with open(os.environ["SPANS_FILE"], "a") as out:
            for span in spans:
                record = {
                    "name": span.name,
                    "trace_id": span.context.trace_id,
                    "span_id": span.context.span_id,
                    "parent_id": span.parent.span_id if span.parent else None,
                    "attributes": dict(span.attributes or {}),
                }
                out.write(json.dumps(record) + "\n")
        return SpanExportResult.SUCCESS


@attrs.frozen
class Traced(jobs.Operation[str, str], name="tests.cli.traced"):
    async def execute(self, x: str) -> str:
        return x[::-1]


@attrs.frozen
class Refuses(jobs.Operation[str, str], name="tests.cli.refuses"):
    async def execute(self, x: str) -> str:
        raise ValueError(f"refused {x!r}")


provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(FileExporter()))
WIREFRAME_WORKER_LAYERS: list[wf.WiringLayer[Any, Any]] = [TelemetryLayer(tracer_provider=provider)]
