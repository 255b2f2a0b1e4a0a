"""Telemetry in one process: spans for submit, run and job; metrics; Prometheus text on /metrics."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest
import trio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import wireframe as wf
from wireframe import durable, jobs, telemetry
from wireframe.jobs import instrument
from wireframe.telemetry import TelemetryLayer


@attrs.frozen
class Square(jobs.Operation[int, int], name="telemetry-square"):
    async def execute(self, x: int) -> int:
        if x < 0:
            raise ValueError("no negatives")
        return x * x


@attrs.frozen
class Observed:
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    tracer: TracerProvider


@pytest.fixture
def observed() -> Observed:
    exporter = InMemorySpanExporter()
    tracer = TracerProvider()
    tracer.add_span_processor(SimpleSpanProcessor(exporter))
    return Observed(exporter, InMemoryMetricReader(), tracer)


@attrs.frozen
class RuntimeIn:
    runtime: jobs.Runtime
    endpoint: wf.HealthEndpoint


@attrs.frozen
class ClientOut:
    client: wf.Task


async def http_get(port: int, path: str) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(
            f"GET {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    return data.partition(b"\r\n\r\n")[2]


def spans_named(exporter: InMemorySpanExporter, prefix: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name.startswith(prefix)]


async def run_client(observed: Observed, body: object) -> None:
    """A service: memory broker with an emulated worker, telemetry, health, and ``body``."""

    @attrs.frozen
    class Client(wf.WiringLayer[RuntimeIn, ClientOut]):
        name = "client"

        async def wire(self, input: RuntimeIn) -> ClientOut:
            @wf.task(kind=wf.TaskKind.TASK, id="client")
            async def client(stop: wf.StopReceiver) -> None:
                await body(input.runtime, input.endpoint)  # type: ignore[operator]

            return ClientOut(client)

    meter = MeterProvider(metric_readers=[observed.metrics])
    builder = wf.ServiceBuilder(handle_signals=False, graceful_shutdown_timeout=5)
    builder.add_layer(jobs.JobRuntimeLayer("memory://telemetry?workers=1"))
    builder.add_layer(TelemetryLayer(tracer_provider=observed.tracer, meter_provider=meter))
    builder.add_layer(wf.HealthLayer(port=0))
    builder.add_layer(Client())
    with trio.fail_after(30):
        report = await builder.build().run()
    assert report.ok, report.failures
    assert instrument.listener is None  # uninstalled at shutdown


async def test_a_job_span_is_the_child_of_its_submit_span(observed: Observed) -> None:
    tracer = observed.tracer.get_tracer("test")

    async def body(rt: jobs.Runtime, endpoint: wf.HealthEndpoint) -> None:
        with tracer.start_as_current_span("http request"):
            handle = await rt.submit(Square(), 7)
        assert await handle.result() == 49
        failing = await rt.submit(Square(), -1)
        with pytest.raises(jobs.JobFailed):
            await failing.result()

    await run_client(observed, body)
    [request] = spans_named(observed.spans, "http request")
    submits = spans_named(observed.spans, "submit telemetry-square")
    job_spans = spans_named(observed.spans, "job telemetry-square")
    assert len(submits) == 2 and len(job_spans) == 2
    first_submit = next(s for s in submits if s.parent is not None)
    assert first_submit.parent.span_id == request.context.span_id
    first_job = next(s for s in job_spans if s.context.trace_id == request.context.trace_id)
    assert first_job.parent is not None
    assert first_job.parent.span_id == first_submit.context.span_id
    assert first_job.attributes is not None
    assert first_job.attributes["wireframe.queue"] == "default"
    assert first_job.attributes["wireframe.job.attempt"] == 1
    assert first_job.attributes["wireframe.job.id"] == first_submit.attributes["wireframe.job.id"]  # type: ignore[index]
    assert "wireframe.worker" in first_job.attributes
    failed = next(s for s in job_spans if s is not first_job)
    assert failed.status.status_code is StatusCode.ERROR
    assert any(e.name == "exception" for e in failed.events)


async def test_a_directive_run_is_the_parent_of_its_jobs(observed: Observed) -> None:
    async def body(rt: jobs.Runtime, endpoint: wf.HealthEndpoint) -> None:
        assert await jobs.from_iter([1, 2, 3]).map(Square()).collect().run(rt) == [1, 4, 9]

    await run_client(observed, body)
    [run] = spans_named(observed.spans, "run ")
    job_spans = spans_named(observed.spans, "job telemetry-square")
    assert len(job_spans) == 3
    assert all(s.parent is not None and s.parent.span_id == run.context.span_id for s in job_spans)
    # a run's jobs wait in its window, not only in the queue: no queue wait is told for them
    waits = metric_points(observed.metrics).get("wireframe.job.queue_wait", [])
    assert sum(p.count for p in waits) == 0  # type: ignore[attr-defined]


def metric_points(reader: InMemoryMetricReader) -> dict[str, list[object]]:
    data = reader.get_metrics_data()
    found: dict[str, list[object]] = {}
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found.setdefault(metric.name, []).extend(metric.data.data_points)
    return found


async def test_metrics_and_prometheus_text(observed: Observed) -> None:
    texts: list[str] = []

    async def body(rt: jobs.Runtime, endpoint: wf.HealthEndpoint) -> None:
        for x in (2, 3, -1):
            handle = await rt.submit(Square(), x)
            with pytest.raises(jobs.JobFailed) if x < 0 else contextlib.nullcontext():
                await handle.result()
        texts.append((await http_get(endpoint.port, "/metrics")).decode())

    await run_client(observed, body)
    points = metric_points(observed.metrics)
    submitted = points["wireframe.jobs.submitted"]
    assert sum(p.value for p in submitted) == 3  # type: ignore[attr-defined]
    assert sum(p.value for p in points["wireframe.jobs.completed"]) == 2  # type: ignore[attr-defined]
    assert sum(p.value for p in points["wireframe.jobs.failed"]) == 1  # type: ignore[attr-defined]
    assert sum(p.count for p in points["wireframe.job.duration"]) == 3  # type: ignore[attr-defined]
    assert sum(p.count for p in points["wireframe.job.queue_wait"]) == 3  # type: ignore[attr-defined]
    [text] = texts
    labels = 'operation="telemetry-square",queue="default"'
    assert f"wireframe_jobs_submitted_total{{{labels}}} 3.0" in text
    assert f"wireframe_jobs_completed_total{{{labels}}} 2.0" in text
    assert f"wireframe_jobs_failed_total{{{labels}}} 1.0" in text
    assert "wireframe_job_duration_seconds_bucket" in text
    assert 'wireframe_task_restarts{task="client"} 0.0' in text


async def test_nothing_installed_carries_no_metadata(tmp_path: Path) -> None:
    assert instrument.listener is None
    seen: list[dict[str, str]] = []

    @contextlib.asynccontextmanager
    async def look(job: jobs.JobContext) -> AsyncIterator[None]:
        seen.append(dict(job.metadata))
        yield

    url = f"sqlite:///{tmp_path / 'off.db'}"
    builder = wf.ServiceBuilder(handle_signals=False, graceful_shutdown_timeout=5)
    service = builder.add_layer(jobs.WorkerLayer(url, middleware=[look])).build()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(service.run)
        async with jobs.connect(url) as rt:
            with trio.fail_after(20):
                assert await (await rt.submit(Square(), 3)).result() == 9
        service.stop()
    assert seen == [{}]


@attrs.frozen
class Shout(jobs.Operation[str, str], name="telemetry-shout"):
    async def execute(self, x: str) -> str:
        return x.upper()


@durable.orchestrator(name="telemetry-twice")
async def shout_twice(ctx: durable.Context, x: str) -> list[str]:
    first = await ctx.call(Shout(), x)
    return [first, await ctx.call(Shout(), x + "!")]


async def test_orchestration_turns_have_spans_and_activities_are_job_spans(
    observed: Observed, autojump_clock: trio.abc.Clock
) -> None:
    telemetry.instrument(tracer_provider=observed.tracer)
    try:
        async with durable.connect(
            f"memory://telemetry-durable-{id(observed)}?workers=1"
        ) as client:
            iid = await client.start(shout_twice, "hey")
            done = await client.wait_completed(iid, timeout=60)
    finally:
        instrument.install_listener(None)
    assert done.output == ["HEY", "HEY!"]
    turns = spans_named(observed.spans, "orchestration telemetry-twice")
    assert len(turns) >= 3  # start, after each activity
    assert all(s.attributes and s.attributes["wireframe.instance.id"] == iid for s in turns)
    assert len(spans_named(observed.spans, "job telemetry-shout")) == 2


def test_without_a_tracer_provider_no_span_is_made_but_numbers_are_kept() -> None:
    listener = telemetry.Telemetry()  # the API's default provider: spans would go nowhere
    with listener.submitting("op", "q", "job-1") as metadata:
        assert set(metadata) == {telemetry.SUBMITTED_AT}  # no trace context to carry
    text = listener.prometheus_text()[0].decode()
    assert 'wireframe_jobs_submitted_total{operation="op",queue="q"} 1.0' in text
    traced = telemetry.Telemetry(tracer_provider=TracerProvider())
    with traced.submitting("op", "q", "job-2") as metadata:
        assert "traceparent" in metadata
