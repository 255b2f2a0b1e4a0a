"""observed: a service ready for production — restarts, health endpoints, metrics, traces, logs.

* ``feed`` (a Task) submits a job every ``FEED_EVERY`` seconds. Its first
  start fails (a lost connection, say): its ``restart`` policy starts it again
  after a backoff instead of stopping the service, and ``/status`` counts the
  restart.
* ``FeedLayer`` gives a ``wf.HealthCheck``: ready only while the feed has
  submitted within the last 5 s. The job layers give one each for their broker.
* ``wf.HealthLayer`` serves ``/livez``, ``/readyz``, ``/status`` and
  ``/metrics`` on 127.0.0.1 (``HEALTH_PORT``, default 8000; ``0`` picks a free
  port, and the ready line says which).
* ``TelemetryLayer`` (``pip install wireframe[telemetry]``) counts jobs by
  operation and queue for ``/metrics`` and opens OpenTelemetry spans for
  submissions and jobs (exported by whatever SDK the process configures —
  none here, so they cost next to nothing).
* The worker's ``middleware`` logs each job's time at INFO, with the job's
  fields (``wireframe run --log-format json`` prints them as JSON keys).

Run it::

    wireframe run examples/observed.py --log-level info
    curl -s 127.0.0.1:8000/readyz
    curl -s 127.0.0.1:8000/metrics | grep wireframe_jobs

``OBSERVED_BROKER`` is the broker URL (default ``memory://observed``: jobs run
in this process), ``OBSERVED_SECONDS`` stops the service by itself after that
long.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import AsyncIterator

import attrs
import trio

import wireframe as wf
from wireframe import jobs

try:
    from wireframe.telemetry import TelemetryLayer
except ImportError:  # the telemetry extra is not installed: health without /metrics
    TelemetryLayer = None  # type: ignore[assignment,misc]

log = logging.getLogger("observed")
BROKER = os.environ.get("OBSERVED_BROKER", "memory://observed")
FEED_EVERY = float(os.environ.get("FEED_EVERY", "0.2"))


@attrs.frozen
class Resize(jobs.Operation[int, int], name="observed.resize"):
    """The work: a plain function (it runs on a worker thread)."""

    def execute(self, size: int) -> int:
        time.sleep(0.01)
        return size // 2


@contextlib.asynccontextmanager
async def timed(job: jobs.JobContext) -> AsyncIterator[None]:
    """Worker middleware: how long each job took, with the job's fields on the record."""
    started = time.perf_counter()
    yield
    log.info(
        "%s took %.1f ms (%s)", job.operation, (time.perf_counter() - started) * 1000,
        job.outcome.value if job.outcome else "?",
        extra={"job_id": job.job_id, "operation": job.operation, "queue": job.queue},
    )  # fmt: skip


@attrs.define
class Feed(wf.Task):
    """Submits a job every ``FEED_EVERY`` seconds; its first start fails."""

    runtime: jobs.Runtime
    id = "feed"
    restart = wf.RestartPolicy(max_restarts=3, window=60.0, backoff=0.5, max_backoff=5.0)
    starts: int = 0
    last_submit: float = -math.inf

    async def run(self, stop: wf.StopReceiver) -> None:
        """Feed until the stop."""
        self.starts += 1
        if self.starts == 1:
            raise ConnectionError("upstream closed the connection (the restart policy mends it)")
        size = 1024
        while not stop.is_set:
            handle = await self.runtime.submit(Resize(), size)
            await handle.result(timeout=30)
            self.last_submit = trio.current_time()
            with stop.cancel_on_stop():
                await trio.sleep(FEED_EVERY)

    async def check(self) -> None:
        """Health: the feed submitted within the last 5 s."""
        quiet = trio.current_time() - self.last_submit
        if quiet > 5.0:
            raise RuntimeError(f"no job submitted for {quiet:.1f} s")


@attrs.frozen
class FeedIn:
    runtime: jobs.Runtime


@attrs.frozen
class FeedOut:
    feed: Feed
    fresh: wf.HealthCheck


@attrs.frozen
class FeedLayer(wf.WiringLayer[FeedIn, FeedOut]):
    """Gives the feed task and its health check."""

    name = "feed"

    async def wire(self, input: FeedIn) -> FeedOut:
        """Make the feed and its check."""
        feed = Feed(input.runtime)
        return FeedOut(feed, wf.HealthCheck("feed-fresh", feed.check, timeout=1.0))


@attrs.frozen
class AnnounceIn:
    endpoint: wf.HealthEndpoint


@attrs.frozen
class AnnounceOut:
    announce: wf.OneshotTask


@attrs.frozen
class AnnounceLayer(wf.WiringLayer[AnnounceIn, AnnounceOut]):
    """Prints where the health endpoints listen, and stops after ``OBSERVED_SECONDS``."""

    name = "announce"

    async def wire(self, input: AnnounceIn) -> AnnounceOut:
        """A oneshot that prints the ready line (and a timer, if asked)."""

        @wf.task(kind=wf.TaskKind.ONESHOT, id="announce")
        async def announce(stop: wf.StopReceiver) -> None:
            print(f"ready: health on {input.endpoint.url}/readyz", flush=True)

        return AnnounceOut(announce)


@attrs.frozen
class TimerOut:
    timer: wf.Task


@attrs.frozen
class TimerLayer(wf.WiringLayer[None, TimerOut]):
    """Stops the service after ``seconds``."""

    seconds: float
    name = "timer"

    async def wire(self, input: None) -> TimerOut:
        """A task that returns after ``seconds`` (which stops the service)."""

        @wf.task(kind=wf.TaskKind.TASK, id="timer")
        async def timer(stop: wf.StopReceiver) -> None:
            with stop.cancel_on_stop():
                await trio.sleep(self.seconds)

        return TimerOut(timer)


def make_builder() -> wf.ServiceBuilder:
    """The service: job runtime, worker, feed, health, telemetry."""
    builder = wf.ServiceBuilder(graceful_shutdown_timeout=10.0)
    builder.add_layer(jobs.JobRuntimeLayer(BROKER))
    builder.add_layer(jobs.WorkerLayer(BROKER, middleware=[timed]))
    builder.add_layer(FeedLayer())
    builder.add_layer(wf.HealthLayer(port=int(os.environ.get("HEALTH_PORT", "8000"))))
    builder.add_layer(AnnounceLayer())
    if TelemetryLayer is not None:
        builder.add_layer(TelemetryLayer())
    if "OBSERVED_SECONDS" in os.environ:
        builder.add_layer(TimerLayer(float(os.environ["OBSERVED_SECONDS"])))
    return builder


builder = make_builder()

if __name__ == "__main__":
    wf.run(builder)
