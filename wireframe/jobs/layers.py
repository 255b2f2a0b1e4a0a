"""The job runtime as service parts: layers that give the Runtime resource and worker tasks.

* :class:`JobRuntimeLayer` gives the :class:`~wireframe.jobs.runtime.Runtime`
  resource (its lifetime owns the broker connection), a
  :class:`BrokerReachable` precondition, and — for ``memory://...?workers=N`` —
  N emulated :class:`WorkerTask`\\ s.
* :class:`WorkerLayer` gives one worker loop task serving a queue with a
  concurrency limit; it takes the worker-side resources its operations need
  (``resources=(Database,)`` makes its input ask for a ``Database``).

Each layer opens its own broker connection and owns it for its lifetime: its
``wire`` is an async generator that opens the broker, yields, and closes it at
shutdown (the service holds each lifetime in a task of its own, so a broker's
nurseries may stay open across the ``yield``).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

import attrs
import trio

import wireframe as wf
from wireframe.jobs.broker import Broker, BrokerUnavailable, mask_password, open_broker
from wireframe.jobs.cache import ResultCache
from wireframe.jobs.middleware import Middleware
from wireframe.jobs.runtime import DEFAULT_URL, Runtime, emulated_pool
from wireframe.jobs.threads import DEFAULT_THREADS
from wireframe.jobs.worker import DEFAULT_CONCURRENCY, Worker

__all__ = [
    "WORKER_RESTART",
    "BrokerReachable",
    "JobRuntimeLayer",
    "JobRuntimeOutput",
    "Serving",
    "WorkerLayer",
    "WorkerOutput",
    "WorkerTask",
]


class Serving(Protocol):
    """A worker loop a :class:`WorkerTask` can run: ``serve`` until ``stop`` is called."""

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until stopped (started once ready)."""
        ...

    def stop(self) -> None:
        """Take no more work; ``serve`` returns once what runs has finished."""
        ...


#: How a worker loop restarts by default: a worker rides out an unreachable broker
#: by retrying (it never raises for that), so what reaches the service is a broker
#: error waiting did not mend (a damaged key, a script the server refused) — worth
#: a few fresh starts (a new subscription, declared queues) before giving up.
WORKER_RESTART = wf.RestartPolicy(max_restarts=5, window=300.0, backoff=1.0, max_backoff=30.0)


class WorkerTask(wf.Task):
    """A worker loop as a service task: serves until the stop, then stops gracefully.

    On stop a job worker consumes nothing more and lets running jobs finish; if
    the service's grace period runs out first, the unfinished jobs are given
    back to the queue (none is lost). The orchestration worker runs the same way.

    ``restart`` is the task's restart policy (:data:`WORKER_RESTART` unless the
    layer says otherwise; None stops the service at the first failure).
    """

    def __init__(
        self, worker: Serving, id: str, restart: wf.RestartPolicy | None = WORKER_RESTART
    ) -> None:
        self.worker = worker
        self.id = id
        self.restart = restart

    async def run(self, stop: wf.StopReceiver) -> None:
        """Serve the queue until ``stop``."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.worker.serve)
            await stop.wait()
            self.worker.stop()


class BrokerReachable(wf.Precondition):
    """Waits until the broker answers ``ping`` (retrying), so gated tasks start with it up.

    Raises :class:`BrokerUnavailable` if it does not answer within ``timeout`` seconds.
    """

    def __init__(self, broker: Broker, id: str, timeout: float = 30.0) -> None:
        self.broker = broker
        self.id = id
        self.timeout = timeout

    async def run(self, stop: wf.StopReceiver) -> None:
        """Ping until the broker answers."""
        deadline = trio.current_time() + self.timeout
        delay = 0.05
        while True:
            try:
                await self.broker.ping()
                return
            except BrokerUnavailable as exc:
                if trio.current_time() + delay > deadline:
                    raise BrokerUnavailable(
                        f"broker {self.broker.url} did not answer within {self.timeout:g} s: {exc}"
                    ) from exc
            with stop.cancel_on_stop():
                await trio.sleep(delay)
            if stop.is_set:
                return
            delay = min(delay * 2, 1.0)


def broker_check(broker: Broker, name: str) -> wf.HealthCheck:
    """A readiness check that the broker answers a ping (within 5 s)."""
    return wf.HealthCheck(name, broker.ping, timeout=5.0)


@attrs.frozen
class JobRuntimeOutput:
    """What :class:`JobRuntimeLayer` gives."""

    runtime: Runtime
    broker_ready: BrokerReachable
    workers: list[WorkerTask]
    health: wf.HealthCheck


@attrs.frozen
class WorkerOutput:
    """What :class:`WorkerLayer` gives."""

    worker: WorkerTask
    broker_ready: BrokerReachable
    health: wf.HealthCheck


def _masked_url(url: str | None) -> str:
    """A layer's ``url`` as its repr shows it: with any password masked."""
    return repr(None if url is None else mask_password(url))


def _field_name(typ: type, taken: set[str]) -> str:
    base = re.sub(r"(?<!^)(?=[A-Z])", "_", typ.__name__).lower() or "resource"
    name, n = base, 2
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    taken.add(name)
    return name


def _resource_input(layer: str, resources: Sequence[type]) -> type | None:
    if not resources:
        return None
    taken: set[str] = set()
    fields = {_field_name(t, taken): attrs.field(type=t) for t in resources}
    return attrs.make_class(f"{layer.title().replace(':', '')}Input", fields, frozen=True)


def _resources_of(input: Any) -> list[object]:
    if input is None:
        return []
    return [getattr(input, f.name) for f in attrs.fields(type(input))]


@attrs.frozen
class JobRuntimeLayer(wf.WiringLayer[None, JobRuntimeOutput]):
    """Gives the ``Runtime`` resource on the broker ``url`` (and emulated workers for
    ``memory://...?workers=N``, which take ``resources``)."""

    url: str | None = attrs.field(default=None, repr=_masked_url)
    queue: str = "default"
    max_in_flight: int = 1024
    cache: ResultCache | None = None
    worker_concurrency: int = 64
    resources: tuple[type, ...] = ()
    name: str = "job-runtime"

    def input_type(self) -> type | None:
        """Takes the resource types its emulated workers hand to operations."""
        return _resource_input(self.name, self.resources)

    def output_type(self) -> type | None:
        """Gives :class:`JobRuntimeOutput`."""
        return JobRuntimeOutput

    async def wire(self, input: Any) -> AsyncIterator[JobRuntimeOutput]:
        """Open the broker, yield the runtime, close the broker at shutdown."""
        async with open_broker(self.url or DEFAULT_URL) as broker:
            runtime = Runtime(
                broker, queue=self.queue, max_in_flight=self.max_in_flight, cache=self.cache
            )
            pool = emulated_pool(
                broker,
                queue=self.queue,
                concurrency=self.worker_concurrency,
                resources=_resources_of(input),
                name=self.name,
            )
            workers = [WorkerTask(w, id=f"{self.name}:worker-{i}") for i, w in enumerate(pool)]
            yield JobRuntimeOutput(
                runtime,
                BrokerReachable(broker, f"{self.name}:broker"),
                workers,
                broker_check(broker, f"{self.name}:broker"),
            )


@attrs.frozen
class WorkerLayer(wf.WiringLayer[None, WorkerOutput]):
    """Gives a worker loop task on ``queue`` of the broker ``url`` with ``concurrency`` slots.

    ``concurrency`` is how many jobs it holds at once (default 64: ``async def``
    jobs waiting on I/O are cheap); plain ``def`` jobs among them run on
    ``threads`` long-lived threads (default 8), ``cpu_bound`` ones in one
    process per core.

    ``resources`` lists the resource types (provided by other layers) that the
    worker hands to operations asking for them by type.

    ``middleware`` are async context managers around each job's execution, the
    first outermost (:mod:`~wireframe.jobs.middleware`).

    ``restart`` is the worker task's restart policy: by default a worker loop
    that fails (a broker error that retrying did not mend) starts again after
    a backoff, up to 5 times in 5 minutes; None stops the service at once.
    """

    url: str | None = attrs.field(default=None, repr=_masked_url)
    concurrency: int = DEFAULT_CONCURRENCY
    queue: str = "default"
    resources: tuple[type, ...] = ()
    name: str = ""
    threads: int = DEFAULT_THREADS
    restart: wf.RestartPolicy | None = WORKER_RESTART
    middleware: tuple[Middleware, ...] = attrs.field(default=(), converter=tuple)

    def __attrs_post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"WorkerLayer concurrency must be at least 1, not {self.concurrency}")
        if self.threads < 1:
            raise ValueError(f"WorkerLayer threads must be at least 1, not {self.threads}")
        if not self.name:
            object.__setattr__(self, "name", f"worker:{self.queue}")

    def input_type(self) -> type | None:
        """Takes one field per resource type in ``resources``."""
        return _resource_input(self.name, self.resources)

    def output_type(self) -> type | None:
        """Gives :class:`WorkerOutput`."""
        return WorkerOutput

    async def wire(self, input: Any) -> AsyncIterator[WorkerOutput]:
        """Open the broker, yield the worker task, close the broker at shutdown."""
        async with open_broker(self.url or DEFAULT_URL) as broker:
            worker = Worker(
                broker,
                queue=self.queue,
                concurrency=self.concurrency,
                threads=self.threads,
                resources=_resources_of(input),
                worker_id=self.name,
                middleware=self.middleware,
            )
            yield WorkerOutput(
                WorkerTask(worker, self.name, self.restart),
                BrokerReachable(broker, f"{self.name}:broker"),
                broker_check(broker, f"{self.name}:broker"),
            )
