"""OpenTelemetry traces and metrics for jobs, and Prometheus text for ``/metrics``.

``pip install wireframe[telemetry]``. This is the only module that imports
OpenTelemetry or prometheus-client; the job runtime knows nothing of them and
calls the one :class:`~wireframe.jobs.instrument.JobListener` installed in the
process. Add :class:`TelemetryLayer` to a service (or call :func:`instrument`
in a script) to install :class:`Telemetry` as that listener:

* **Traces.** Submitting a job opens a ``submit <operation>`` span (producer)
  and writes its trace context (W3C ``traceparent``, through the global
  propagator) into the job's envelope; the worker, in whatever process,
  opens ``job <operation>`` (consumer) as its child, with the attributes
  ``wireframe.queue``, ``wireframe.job.id``, ``wireframe.job.attempt``,
  ``wireframe.operation`` and ``wireframe.worker``. A directive run is a
  ``run <name>`` span, the parent of its jobs' spans.
* **Metrics**, by operation and queue, through the OpenTelemetry metrics API
  and, the same numbers, in a private prometheus-client registry rendered by
  ``/metrics`` (:class:`~wireframe.HealthLayer`): jobs submitted, completed,
  failed, retried, dead and cancelled; job duration and queue wait
  histograms; queue depth and live workers (sampled from the broker every
  ``sample_every`` seconds when the service has a job runtime); task restarts.

With nothing installed, the job path pays one ``is None`` check per hook.
"""

from __future__ import annotations

import bisect
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

import attrs
import trio
from opentelemetry import metrics as otel_metrics
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

import wireframe as wf
from wireframe.jobs import instrument as hooks
from wireframe.jobs.broker import BrokerError, QueueStats
from wireframe.jobs.middleware import JobContext, JobOutcome, Middleware
from wireframe.jobs.runtime import Runtime

__all__ = [
    "SUBMITTED_AT",
    "Telemetry",
    "TelemetryInput",
    "TelemetryLayer",
    "TelemetryOutput",
    "instrument",
]

#: Envelope metadata key: the wall-clock time a job was submitted (for the queue-wait histogram).
SUBMITTED_AT = "wf-submitted-at"
_OUTCOMES = ("completed", "failed", "retried", "dead", "cancelled")
_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


_HELP = {
    "submitted": "Jobs submitted on their own",
    **{outcome: f"Job deliveries that ended {outcome}" for outcome in _OUTCOMES},
}


@attrs.define
class _Histogram:
    """Bucket counts (cumulative at export), their sum and count: plain numbers."""

    counts: list[int] = attrs.field(factory=lambda: [0] * (len(_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(_BUCKETS, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        running, out = 0, []
        for bound, count in zip((*_BUCKETS, math.inf), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == math.inf else repr(float(bound)), float(running)))
        return out


@attrs.define(eq=False)
class _Numbers:
    """Every job number as plain ints and floats, bumped on the job path, read on scrape.

    A per-job call into a metrics library (its locks, its attribute hashing)
    costs more than the no-op job it counts; a dict bump does not. Prometheus
    reads these through :meth:`collect`, OpenTelemetry through observable
    instruments' callbacks.
    """

    counts: dict[tuple[str, str, str], int] = attrs.field(factory=dict)  # (what, op, queue)
    durations: dict[tuple[str, str], _Histogram] = attrs.field(factory=dict)
    waits: dict[tuple[str, str], _Histogram] = attrs.field(factory=dict)
    queues: dict[str, tuple[int, int]] = attrs.field(factory=dict)  # queue -> (depth, workers)
    restarts: Callable[[], dict[str, int]] = dict

    def bump(self, what: str, operation: str, queue: str) -> None:
        key = (what, operation, queue)
        self.counts[key] = self.counts.get(key, 0) + 1

    def observe(
        self, table: dict[tuple[str, str], _Histogram], key: tuple[str, str], v: float
    ) -> None:
        histogram = table.get(key)
        if histogram is None:
            histogram = table[key] = _Histogram()
        histogram.observe(v)

    def collect(self) -> Iterator[Any]:
        """Prometheus metric families (a prometheus-client custom collector)."""
        labels = ["operation", "queue"]
        for what, help_text in _HELP.items():
            family = CounterMetricFamily(f"wireframe_jobs_{what}", help_text, labels=labels)
            for (kind, op, queue), n in list(self.counts.items()):
                if kind == what:
                    family.add_metric([op, queue], n)
            yield family
        for name, help_text, table in (
            ("wireframe_job_duration_seconds", "Time a job's execution took", self.durations),
            ("wireframe_job_queue_wait_seconds", "Time from submission to first start", self.waits),
        ):
            histograms = HistogramMetricFamily(name, help_text, labels=labels)
            for (op, queue), h in list(table.items()):
                histograms.add_metric([op, queue], h.buckets(), h.total)
            yield histograms
        depth = GaugeMetricFamily(
            "wireframe_queue_depth", "Jobs waiting in a queue", labels=["queue"]
        )
        workers = GaugeMetricFamily(
            "wireframe_queue_workers", "Live workers consuming a queue", labels=["queue"]
        )
        for queue, (waiting, live) in list(self.queues.items()):
            depth.add_metric([queue], waiting)
            workers.add_metric([queue], live)
        yield depth
        yield workers
        restarts = GaugeMetricFamily(
            "wireframe_task_restarts", "Restarts of a service task", labels=["task"]
        )
        for task, n in self.restarts().items():
            restarts.add_metric([task], n)
        yield restarts


@attrs.define(eq=False)
class Telemetry:
    """The installed job listener: spans, and job numbers for OpenTelemetry and Prometheus.

    ``tracer_provider`` and ``meter_provider`` default to the global ones
    (``opentelemetry.trace.set_tracer_provider``...). ``status`` (the
    service's own) feeds the task-restart numbers.
    """

    tracer_provider: trace.TracerProvider | None = None
    meter_provider: otel_metrics.MeterProvider | None = None
    status: wf.ServiceStatus | None = None
    numbers: _Numbers = attrs.field(init=False, factory=_Numbers)
    _tracer: trace.Tracer = attrs.field(init=False)
    _registry: CollectorRegistry = attrs.field(init=False)
    _duration: otel_metrics.Histogram = attrs.field(init=False)
    _queue_wait: otel_metrics.Histogram = attrs.field(init=False)
    _labels: dict[tuple[str, str], dict[str, str]] = attrs.field(init=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        self._tracer = trace.get_tracer("wireframe", tracer_provider=self.tracer_provider)
        self.numbers.restarts = self._restarts
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self.numbers)
        meter = otel_metrics.get_meter("wireframe", meter_provider=self.meter_provider)
        for what, help_text in _HELP.items():
            meter.create_observable_counter(
                f"wireframe.jobs.{what}", [self._observer(what)], unit="{job}",
                description=help_text,
            )  # fmt: skip
        meter.create_observable_gauge(
            "wireframe.queue.depth", [self._observe_queues(0)], unit="{job}",
            description="Jobs waiting in a queue",
        )  # fmt: skip
        meter.create_observable_gauge(
            "wireframe.queue.workers", [self._observe_queues(1)], unit="{worker}",
            description="Live workers consuming a queue",
        )  # fmt: skip
        meter.create_observable_counter(
            "wireframe.task.restarts", [self._observe_restarts], unit="{restart}",
            description="Restarts of a service task",
        )  # fmt: skip
        self._duration = meter.create_histogram(
            "wireframe.job.duration", unit="s", description="Time a job's execution took"
        )
        self._queue_wait = meter.create_histogram(
            "wireframe.job.queue_wait", unit="s", description="Time from submission to first start"
        )

    # -- the JobListener hooks ---------------------------------------------------------
    @contextlib.contextmanager
    def submitting(self, operation: str, queue: str, job_id: str) -> Iterator[Mapping[str, str]]:
        """A producer span around a submission; yields the envelope's trace context."""
        if not self._tracing():
            yield {SUBMITTED_AT: repr(time.time())}
            self.numbers.bump("submitted", operation, queue)
            return
        attributes = {
            "wireframe.operation": operation,
            "wireframe.queue": queue,
            "wireframe.job.id": job_id,
        }
        with self._tracer.start_as_current_span(
            f"submit {operation}", kind=SpanKind.PRODUCER, attributes=attributes
        ):
            carrier: dict[str, str] = {SUBMITTED_AT: repr(time.time())}
            propagate.inject(carrier)
            yield carrier
        self.numbers.bump("submitted", operation, queue)

    @contextlib.contextmanager
    def running(self, name: str, queue: str) -> Iterator[Mapping[str, str]]:
        """A span around a directive run; yields the trace context its jobs carry.

        No submission time: a run's jobs are published as its window allows, so the
        run's start would count their wait inside the run as queue wait.
        """
        if not self._tracing():
            yield {}
            return
        attributes = {"wireframe.queue": queue}
        with self._tracer.start_as_current_span(f"run {name}", attributes=attributes):
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            yield carrier

    @contextlib.contextmanager
    def turning(self, orchestrator: str, instance_id: str) -> Iterator[object]:
        """A span around one orchestration turn (its activities are jobs with spans of their own)."""
        attributes = {"wireframe.orchestrator": orchestrator, "wireframe.instance.id": instance_id}
        with self._tracer.start_as_current_span(
            f"orchestration {orchestrator}", attributes=attributes
        ) as span:
            yield span

    @property
    def middleware(self) -> Middleware:
        """The job span and the duration and queue-wait numbers, around each job."""
        return self._job_span

    def _labels_of(self, key: tuple[str, str]) -> dict[str, str]:
        labels = self._labels.get(key)
        if labels is None:
            labels = self._labels[key] = {"operation": key[0], "queue": key[1]}
        return labels

    @contextlib.asynccontextmanager
    async def _job_span(self, job: JobContext) -> AsyncIterator[None]:
        if not self._tracing():
            with self._job_numbers(job):
                yield
            return
        parent = propagate.extract(job.metadata) if job.metadata else None
        attributes: dict[str, str | int] = {
            "wireframe.operation": job.operation,
            "wireframe.queue": job.queue,
            "wireframe.job.id": job.job_id,
            "wireframe.job.attempt": job.attempt,
            "wireframe.worker": job.worker,
        }
        with (
            self._tracer.start_as_current_span(
                f"job {job.operation}", context=parent, kind=SpanKind.CONSUMER,
                attributes=attributes, record_exception=False, set_status_on_exception=False,
            ) as span,
            self._job_numbers(job),
        ):  # fmt: skip
            try:
                yield
            finally:
                if job.outcome is JobOutcome.FAILED and job.error is not None:
                    span.record_exception(job.error)
                    span.set_status(Status(StatusCode.ERROR, f"{type(job.error).__name__}"))
                elif job.outcome is JobOutcome.CANCELLED:
                    span.set_attribute("wireframe.job.cancelled", True)

    @contextlib.contextmanager
    def _job_numbers(self, job: JobContext) -> Iterator[None]:
        """A job's queue wait (its first attempt) and its duration, for the histograms."""
        key = (job.operation, job.queue)
        submitted = job.metadata.get(SUBMITTED_AT) if job.attempt == 1 else None
        if submitted is not None:
            with contextlib.suppress(ValueError):
                wait = max(time.time() - float(submitted), 0.0)
                self._queue_wait.record(wait, self._labels_of(key))
                self.numbers.observe(self.numbers.waits, key, wait)
        started = time.perf_counter()
        try:
            yield
        finally:
            seconds = time.perf_counter() - started
            self._duration.record(seconds, self._labels_of(key))
            self.numbers.observe(self.numbers.durations, key, seconds)

    def _tracing(self) -> bool:
        """Whether spans go anywhere: a real tracer provider (an SDK's) is in use.

        With only the API's default provider a span is a no-op, but opening it,
        attaching it to the context and propagating it still cost about a fifth
        of a no-op job; without one, only the numbers are kept. Read per call:
        a provider set globally later is seen at once.
        """
        provider = self.tracer_provider or trace.get_tracer_provider()
        return not isinstance(provider, trace.NoOpTracerProvider | trace.ProxyTracerProvider)

    def job_ended(self, operation: str, queue: str, outcome: str) -> None:
        """Count a job delivery's end by outcome."""
        self.numbers.bump(outcome, operation, queue)

    # -- sampled numbers -----------------------------------------------------------------
    def record_queues(self, stats: list[QueueStats]) -> None:
        """Keep each queue's depth and live workers (from ``Broker.stats``) for the gauges."""
        for q in stats:
            self.numbers.queues[q.queue] = (q.queued, q.workers)

    def _restarts(self) -> dict[str, int]:
        if self.status is None:
            return {}
        return {t.id: t.restarts for t in self.status.report().tasks.values()}

    def _observer(self, what: str) -> Callable[[Any], list[otel_metrics.Observation]]:
        def observe(options: Any) -> list[otel_metrics.Observation]:
            return [
                otel_metrics.Observation(n, {"operation": op, "queue": queue})
                for (kind, op, queue), n in list(self.numbers.counts.items())
                if kind == what
            ]

        return observe

    def _observe_queues(self, index: int) -> Callable[[Any], list[otel_metrics.Observation]]:
        def observe(options: Any) -> list[otel_metrics.Observation]:
            return [
                otel_metrics.Observation(pair[index], {"queue": queue})
                for queue, pair in list(self.numbers.queues.items())
            ]

        return observe

    def _observe_restarts(self, options: Any) -> list[otel_metrics.Observation]:
        return [otel_metrics.Observation(n, {"task": t}) for t, n in self._restarts().items()]

    # -- /metrics --------------------------------------------------------------------------
    def prometheus_text(self) -> tuple[bytes, str]:
        """Every number as Prometheus text (for ``/metrics``), with its content type."""
        return generate_latest(self._registry), CONTENT_TYPE_LATEST


def instrument(
    *,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: otel_metrics.MeterProvider | None = None,
) -> Telemetry:
    """Install :class:`Telemetry` as this process's job listener (outside a service).

    Returns it; ``wireframe.jobs.instrument.install_listener(None)`` uninstalls.
    """
    telemetry = Telemetry(tracer_provider, meter_provider)
    hooks.install_listener(telemetry)
    return telemetry


@attrs.frozen
class TelemetryInput:
    """What :class:`TelemetryLayer` takes: the service's status, and its job runtime if any."""

    status: wf.ServiceStatus
    runtime: Runtime | None = None


@attrs.frozen
class TelemetryOutput:
    """What :class:`TelemetryLayer` gives: the Prometheus exposition ``/metrics`` serves."""

    metrics: wf.MetricsExposition


@attrs.frozen
class TelemetryLayer(wf.WiringLayer[TelemetryInput, TelemetryOutput]):
    """Installs :class:`Telemetry` for the service's lifetime; gives ``/metrics`` its text.

    With a job runtime in the service, queue depth and live workers are
    sampled from its broker every ``sample_every`` seconds.
    """

    tracer_provider: trace.TracerProvider | None = None
    meter_provider: otel_metrics.MeterProvider | None = None
    sample_every: float = 15.0
    name: str = "telemetry"

    async def wire(self, input: TelemetryInput) -> AsyncIterator[TelemetryOutput]:
        """Install the listener, sample queues while the service runs, uninstall at shutdown."""
        telemetry = Telemetry(self.tracer_provider, self.meter_provider, input.status)
        previous = hooks.install_listener(telemetry)
        try:
            async with trio.open_nursery() as nursery:
                if input.runtime is not None:
                    nursery.start_soon(self._sample, input.runtime, telemetry)
                try:
                    yield TelemetryOutput(telemetry)
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            hooks.install_listener(previous)

    async def _sample(self, runtime: Runtime, telemetry: Telemetry) -> None:
        while True:
            with contextlib.suppress(BrokerError):
                telemetry.record_queues(await runtime.broker.stats())
            await trio.sleep(self.sample_every)
