"""The worker loop: consume jobs, run them, send their results back.

One :class:`Worker` serves one queue with ``concurrency`` slots. It consumes
up to its free slots in one call, decodes each job (an undecodable one goes to
the dead-letter store with the reason; an unknown operation gets a typed error
result), runs it — ``async def`` on trio, a sync ``execute`` in a thread or a
process, see :mod:`wireframe.jobs.operations` — and completes the delivery with
the encoded result. A ``Transient`` error is retried by its policy through
``abandon(delay=..., body=<next attempt>)``.

While jobs run, one lease keeper renews all their leases every ``lease/3``
seconds; a job whose lease was lost is cancelled and its result dropped. The
worker listens on the abort topic: a run abort cancels that run's running jobs
and makes queued ones complete with no reply; a worker abort cancels what it
runs now (each gets an error result) and the loop goes on.

The worker announces itself: a heartbeat every ``renew_every`` seconds records
it in the broker as live for a lease (:meth:`~wireframe.jobs.broker.Broker.heartbeat`),
so that ``wireframe jobs stats`` lists it and a run whose queue has no live
worker can say so; a clean stop removes the record.

:meth:`Worker.stop` is the graceful stop: consuming stops, running jobs finish,
then :meth:`Worker.serve` returns. If the worker is cancelled before they
finish, each unfinished job is abandoned (given back to the queue), so none is
lost.

A worker outlives its broker's outages: a broker call that fails with
:class:`~wireframe.jobs.broker.BrokerUnavailable` (unreachable, restarting,
paused, out of memory) is logged and retried with a capped backoff - a
completion too, so a finished job's result is not dropped while its lease may
still hold (if the lease is lost meanwhile, the job runs again elsewhere:
at-least-once). Only a consume that fails for a reason waiting cannot mend ends
:meth:`Worker.serve`, with that error (bare, not in an exception group).
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import attrs
import trio

from wireframe.jobs import instrument
from wireframe.jobs.broker import (
    Broker,
    BrokerError,
    BrokerUnavailable,
    Delivery,
    LockLost,
    WorkerInfo,
)
from wireframe.jobs.codec import (
    ABORT_TOPIC,
    Envelope,
    JobResult,
    OpCache,
    UnknownOperation,
    decode_abort,
    decode_envelope,
    encode_output,
    encode_result,
    structure,
)
from wireframe.jobs.errors import (
    CodecError,
    ErrorKind,
    Fatal,
    RemoteError,
    Transient,
)
from wireframe.jobs.execution import Execution
from wireframe.jobs.failures import TimeLimitExceeded, dead_reason, error_body
from wireframe.jobs.joblog import log_job_end
from wireframe.jobs.middleware import JobContext, Middleware, run_through
from wireframe.jobs.operations import Operation, OpSpec, call_kwargs
from wireframe.jobs.retry import DEFAULT_RETRY
from wireframe.jobs.threads import DEFAULT_THREADS, open_job_threads

__all__ = ["DEFAULT_CONCURRENCY", "Worker", "WorkerStatistics"]

#: Job slots a worker has unless told otherwise: ``async def`` jobs waiting on I/O
#: are cheap to keep many of; plain ``def`` ones share :data:`DEFAULT_THREADS`
#: threads, and ``cpu_bound`` ones trio-parallel's processes (one per core).
DEFAULT_CONCURRENCY = 64

_HOST = socket.gethostname()

_ABANDON_GRACE = 5.0
#: The first and the longest pause (seconds) before retrying a broker call that
#: failed with BrokerUnavailable.
_RETRY_FIRST = 0.05
_RETRY_CAP = 5.0

_log = logging.getLogger(__name__)
T = TypeVar("T")


@attrs.frozen
class WorkerStatistics:
    """A snapshot of a :class:`Worker`'s counts since it was made (:meth:`Worker.statistics`).

    ``running`` jobs are executing now (one whose broker call to settle it is in
    flight no longer counts); ``peak_running`` is the most that ever did at once.
    How jobs ended: ``done``; ``failed`` (an error result, the job's own or why it
    could not run); ``retried`` (given back with its next attempt); ``dead``
    (dead-lettered); ``skipped_aborted`` (its run was aborted before it started);
    ``cancelled`` (aborted, or its lease lost, while running); ``abandoned``
    (given back when the worker itself was cancelled). ``lost`` counts outcomes
    the broker did not take and lease renewals that found the lease gone.
    """

    running: int
    peak_running: int
    done: int
    failed: int
    retried: int
    dead: int
    skipped_aborted: int
    cancelled: int
    abandoned: int
    lost: int


@attrs.define(eq=False)
class _Running:
    delivery: Delivery
    run_id: str
    scope: trio.CancelScope
    why: str = ""  # "", "abort", "worker-abort", "lost"
    done: bool = False  # its work is done; its outcome is on the way to the broker


class Worker:
    """Serves one queue of a broker with ``concurrency`` slots.

    ``resources`` are the worker-side objects operations take by type (a
    sequence of instances, or a mapping type -> instance). Leases of running
    jobs are renewed every ``renew_every`` seconds (default: the broker's
    lease / 3). ``middleware`` wraps each job's execution
    (:mod:`~wireframe.jobs.middleware`).
    """

    def __init__(
        self,
        broker: Broker,
        *,
        queue: str = "default",
        concurrency: int = DEFAULT_CONCURRENCY,
        threads: int = DEFAULT_THREADS,
        resources: Iterable[object] | Mapping[type, object] = (),
        worker_id: str | None = None,
        renew_every: float | None = None,
        middleware: Sequence[Middleware] = (),
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"worker concurrency must be at least 1, not {concurrency}")
        if threads < 1:
            raise ValueError(f"worker threads must be at least 1, not {threads}")
        self.broker = broker
        self.queue = queue
        self.concurrency = concurrency
        self.threads = threads
        if isinstance(resources, Mapping):
            self.resources: dict[type, object] = dict(resources)
        else:
            self.resources = {type(r): r for r in resources}
        self.worker_id = worker_id or f"worker-{uuid.uuid4().hex[:8]}"
        self.middleware: tuple[Middleware, ...] = tuple(middleware)
        self._execution = Execution(self.worker_id)
        self.renew_every = renew_every or broker.url.lease / 3
        # counts behind statistics(): plain ints, bumped on the job path, read on request
        self._executing = self._peak_executing = self._done = self._failed = 0
        self._retried = self._dead = self._skipped_aborted = self._cancelled = 0
        self._abandoned = self._lost = 0
        self._ops = OpCache()
        self._running: dict[str, _Running] = {}
        self._slot_free = trio.Event()
        #: Jobs whose work is done and whose complete/abandon call is in flight.
        self._finishing = 0
        self._aborted: OrderedDict[str, None] = OrderedDict()
        self._consume_scope: trio.CancelScope | None = None
        self._stopping = False
        self._started_at = time.time()

    # -- control ------------------------------------------------------------------
    def stop(self) -> None:
        """Graceful stop: consume nothing more; :meth:`serve` returns when running jobs end."""
        self._stopping = True
        if self._consume_scope is not None:
            self._consume_scope.cancel()

    def abort_run(self, run_id: str) -> None:
        """Cancel this worker's running jobs of ``run_id`` and skip its queued ones."""
        self._aborted[run_id] = None
        while len(self._aborted) > 10_000:
            self._aborted.popitem(last=False)
        for r in list(self._running.values()):
            if r.run_id == run_id:
                r.why = "abort"
                r.scope.cancel()

    def abort_running(self) -> None:
        """Per-worker abort: cancel every job running now (each fails with kind
        ``cancelled``); the loop keeps consuming."""
        for r in list(self._running.values()):
            r.why = r.why or "worker-abort"
            r.scope.cancel()

    @property
    def running(self) -> int:
        """How many jobs run right now."""
        return len(self._running)

    def statistics(self) -> WorkerStatistics:
        """This worker's counts now, as a frozen snapshot (for a live view and tests)."""
        return WorkerStatistics(
            running=self._executing,
            peak_running=self._peak_executing,
            done=self._done,
            failed=self._failed,
            retried=self._retried,
            dead=self._dead,
            skipped_aborted=self._skipped_aborted,
            cancelled=self._cancelled,
            abandoned=self._abandoned,
            lost=self._lost,
        )

    # -- the loop -----------------------------------------------------------------
    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until :meth:`stop`; ``task_status.started()`` once subscribed and consuming."""
        async with _bare():
            await self._retrying("declare the queue", self._declare)
            async with trio.open_nursery() as helpers:
                await helpers.start(self._listen_aborts)
                helpers.start_soon(self._keep_leases)
                helpers.start_soon(self._announce)
                try:
                    async with (
                        open_job_threads(self.threads) as self._execution.pool,
                        trio.open_nursery() as jobs,
                    ):
                        task_status.started()
                        await self._consume(jobs)
                finally:
                    helpers.cancel_scope.cancel()
                    with trio.CancelScope(shield=True), trio.move_on_after(_ABANDON_GRACE):
                        await self._heartbeat(0.0)  # gone: no longer listed as live

    async def _declare(self) -> None:
        await self.broker.declare_queue(self.queue)

    async def _consume(self, jobs: trio.Nursery) -> None:
        with trio.CancelScope() as scope:
            self._consume_scope = scope
            if self._stopping:
                scope.cancel()
            while True:
                # A job's slot is free once its work is done: up to ``concurrency``
                # more jobs may be finishing (their broker call in flight) meanwhile,
                # so consumes and completions both go in batches.
                free = (
                    self.concurrency - len(self._running) + min(self._finishing, self.concurrency)
                )
                if free <= 0:
                    self._slot_free = trio.Event()
                    await self._slot_free.wait()
                    continue
                consume = functools.partial(self.broker.consume, self.queue, free)
                deliveries = await self._retrying("consume", consume)
                for delivery in deliveries:
                    await self._start(jobs, delivery)
        self._consume_scope = None

    async def _start(self, jobs: trio.Nursery, delivery: Delivery) -> None:
        prepared = await self._prepare(delivery)
        if prepared is None:
            return
        env, spec, op, value, kwargs = prepared
        running = _Running(delivery, env.run_id, trio.CancelScope())
        stale = self._running.get(delivery.message.id)
        if stale is not None:  # delivered again while still running here: that lease is lost
            stale.why = "lost"
            stale.scope.cancel()
        self._running[delivery.message.id] = running
        self._executing += 1
        if self._executing > self._peak_executing:
            self._peak_executing = self._executing
        jobs.start_soon(self._run_job, running, env, spec, op, value, kwargs)

    async def _prepare(self, delivery: Delivery) -> _Prepared | None:
        """Decode a delivery and resolve its operation, input and resources.

        A job that cannot run is settled here and ``None`` returned: a body
        that does not decode goes to the dead-letter store with the reason;
        an unknown operation, a missing resource or an operation whose types
        the codec cannot build gets a typed error result. Nothing raised here
        may end the loop (the rest of the consumed batch would be lost with
        it), so whatever else goes wrong fails this one job.
        """
        try:
            env = decode_envelope(delivery.message.body)
        except Exception as exc:  # a CodecError, or anything a broken decoder raised
            await self._dead_letter(delivery, dead_reason(exc))
            return None
        if env.run_id in self._aborted:
            self._skipped_aborted += 1
            await self._complete(delivery, None)
            return None
        try:
            spec, op = self._ops.resolve(env.op)
            value = structure(env.input, spec.input_type, "$.input")
            kwargs = call_kwargs(spec, self.resources)
        except UnknownOperation as exc:
            await self._fail(delivery, exc, ErrorKind.UNKNOWN_OPERATION)
            return None
        except CodecError as exc:  # the body's data does not fit the operation
            await self._dead_letter(delivery, str(exc))
            return None
        except Exception as exc:  # OperationError (an unusable type), or worse
            await self._fail(delivery, exc, ErrorKind.FATAL)
            return None
        if isinstance(kwargs, type):
            missing = LookupError(
                f"operation {spec.name!r} takes a resource of type {kwargs.__qualname__}, "
                f"which worker {self.worker_id!r} was not given"
            )
            await self._fail(delivery, missing, ErrorKind.MISSING_RESOURCE)
            return None
        return env, spec, op, value, kwargs

    async def _fail(self, delivery: Delivery, exc: BaseException, kind: ErrorKind) -> None:
        """Complete a job that did not run with an error result describing ``exc``."""
        self._failed += 1
        await self._complete(delivery, error_body(exc, kind))

    async def _run_job(
        self,
        running: _Running,
        env: Envelope,
        spec: OpSpec,
        op: Operation[Any, Any],
        value: Any,
        kwargs: dict[str, object],
    ) -> None:
        body: bytes | None = None
        retry_delay: float | None = None
        executing = True
        outcome, error = "completed", None
        try:
            with running.scope:
                try:
                    result = await self._executed(running, env, spec, op, value, kwargs)
                    body = encode_output(result, spec)
                    self._done += 1
                except Exception as exc:
                    body, retry_delay = self._outcome(exc, env)
                    outcome, error = ("failed" if retry_delay is None else "retried"), exc
            if running.scope.cancelled_caught:
                outcome = "cancelled"
            self._ended(running.delivery, env.attempt, spec.name, outcome, error)
            executing = False
            running.done = True
            self._executing -= 1
            self._finishing += 1
            self._slot_free.set()
            if running.scope.cancelled_caught:
                await self._after_cancel(running)
            elif retry_delay is not None:
                self._retried += 1
                await self._abandon(
                    running.delivery, delay=retry_delay, body=env.with_attempt(env.attempt + 1)
                )
            else:
                # A run aborted while this job finished has deleted its channel:
                # post no reply that nobody would ever take.
                aborted = env.run_id in self._aborted
                await self._complete(running.delivery, None if aborted else body)
        except trio.Cancelled:
            # The worker itself is being cancelled (its grace period ran out):
            # give the job back so it runs again elsewhere.
            with trio.CancelScope(shield=True), trio.move_on_after(_ABANDON_GRACE):
                self._abandoned += 1
                await self._abandon(running.delivery)
            raise
        finally:
            if self._is_running(running):
                del self._running[running.delivery.message.id]
            if executing:
                self._executing -= 1
            else:
                self._finishing -= 1
            self._slot_free.set()

    async def _executed(
        self,
        running: _Running,
        env: Envelope,
        spec: OpSpec,
        op: Operation[Any, Any],
        value: Any,
        kwargs: dict[str, object],
    ) -> Any:
        """The job's execution (:meth:`Execution.limited`) inside the worker's middleware
        (and the installed listener's)."""
        chain = self.middleware
        if instrument.listener is not None:
            chain = (instrument.listener.middleware, *chain)
        if not chain:
            return await self._execution.limited(spec, op, value, kwargs, env.time_limit)
        message = running.delivery.message
        job = JobContext(
            message.id, spec.name, running.delivery.queue, env.attempt, value, self.worker_id,
            env.metadata,
        )  # fmt: skip
        call = functools.partial(self._execution.limited, spec, op, value, kwargs, env.time_limit)
        return await run_through(chain, job, call)

    def _outcome(self, exc: Exception, env: Envelope) -> tuple[bytes | None, float | None]:
        """The reply body and retry delay for a job whose execute raised ``exc``."""
        if isinstance(exc, Transient):
            try:
                delay = (exc.retry or DEFAULT_RETRY).delay_before(env.attempt + 1)
            except Exception as broken:  # a retry policy that cannot answer fails the job
                self._failed += 1
                return error_body(broken, ErrorKind.FATAL), None
            if delay is not None:
                return None, delay
            self._failed += 1
            return error_body(exc, ErrorKind.RETRIES_EXHAUSTED), None
        self._failed += 1
        if isinstance(exc, Fatal):
            return error_body(exc, ErrorKind.FATAL, exc.strategy), None
        if isinstance(exc, TimeLimitExceeded):
            return error_body(exc, ErrorKind.TIME_LIMIT), None
        return error_body(exc, ErrorKind.FATAL), None

    async def _after_cancel(self, running: _Running) -> None:
        self._cancelled += 1
        if running.why == "abort":
            await self._complete(running.delivery, None)
        elif running.why == "worker-abort":
            error = RemoteError(
                ErrorKind.CANCELLED,
                "trio.Cancelled",
                f"job aborted by worker {self.worker_id!r} (per-worker abort)",
            )
            await self._complete(running.delivery, encode_result(JobResult(error=error)))
        # "lost": the lease is gone, the result is dropped; nothing to tell the broker.

    # -- broker calls that survive outages and tolerate a lost lease -------------------------
    async def _retrying(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """``call()``, retried with a capped backoff while the broker is unavailable.

        Each retry is logged; the pause is cancellable (a stop cancels a consume's).
        """
        delay = _RETRY_FIRST
        failed = False
        while True:
            try:
                result = await call()
            except BrokerUnavailable as exc:
                failed = True
                _log.warning(
                    "worker %s: %s failed, retrying in %.2g s: %s", self.worker_id, what, delay, exc
                )
            else:
                if failed:
                    _log.warning("worker %s: %s succeeded again", self.worker_id, what)
                return result
            await trio.sleep(delay)
            delay = min(delay * 2, _RETRY_CAP)

    async def _settle(
        self, what: str, delivery: Delivery, call: Callable[[], Awaitable[None]]
    ) -> None:
        """Tell the broker how a delivery ended, retrying while it is unavailable.

        A lost lease drops the outcome (the message runs again elsewhere, or
        Redis lost it); so does an error waiting cannot mend, logged, leaving the
        message to come back when its lease runs out - never killing the loop.
        """
        try:
            await self._retrying(f"{what} of message {delivery.message.id!r}", call)
        except LockLost as exc:
            self._lost += 1
            _log.warning("worker %s: %s dropped: %s", self.worker_id, what, exc)
        except BrokerError as exc:
            self._lost += 1
            _log.error(
                "worker %s: %s of message %r failed (it runs again once its lease runs out): %s",
                self.worker_id,
                what,
                delivery.message.id,
                exc,
            )

    async def _complete(self, delivery: Delivery, body: bytes | None) -> None:
        call = functools.partial(self.broker.complete, delivery, body)
        await self._settle("completion", delivery, call)

    async def _abandon(
        self, delivery: Delivery, *, delay: float = 0.0, body: bytes | None = None
    ) -> None:
        call = functools.partial(self.broker.abandon, delivery, delay=delay, body=body)
        await self._settle("abandon", delivery, call)

    async def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        self._dead += 1
        self._ended(delivery, delivery.deliveries, "", "dead", None)
        call = functools.partial(self.broker.dead_letter, delivery, reason)
        await self._settle("dead-lettering", delivery, call)

    # -- helpers ------------------------------------------------------------------
    def _ended(
        self,
        delivery: Delivery,
        attempt: int,
        operation: str,
        outcome: str,
        error: Exception | None,
    ) -> None:
        """Tell the installed listener (telemetry) and the log how a delivery ended."""
        if instrument.listener is not None:
            instrument.listener.job_ended(operation, delivery.queue, outcome)
        log_job_end(
            job_id=delivery.message.id, operation=operation, queue=delivery.queue,
            attempt=attempt, worker=self.worker_id, outcome=outcome, error=error,
        )  # fmt: skip

    def info(self) -> WorkerInfo:
        """How this worker announces itself in the broker."""
        return WorkerInfo(
            id=self.worker_id,
            queue=self.queue,
            concurrency=self.concurrency,
            host=_HOST,
            pid=os.getpid(),
            started_at=self._started_at,
            running=len(self._running),
        )

    async def _heartbeat(self, ttl: float) -> None:
        try:
            await self.broker.heartbeat(self.info(), ttl)
        except BrokerError as exc:  # passing: the next heartbeat tries again
            _log.debug("worker %s: heartbeat failed: %s", self.worker_id, exc)

    async def _announce(self) -> None:
        """Heartbeat every ``renew_every`` seconds, each live for a lease (at least 3 beats)."""
        ttl = max(self.broker.url.lease, 3 * self.renew_every)
        while True:
            await self._heartbeat(ttl)
            await trio.sleep(self.renew_every)

    async def _keep_leases(self) -> None:
        while True:
            await trio.sleep(self.renew_every)
            for running in list(self._running.values()):
                # a job that finished while earlier leases were renewed settles its own
                if running.why or running.done or not self._is_running(running):
                    continue
                try:
                    running.delivery = await self.broker.extend(running.delivery)
                except LockLost as exc:
                    if running.done or not self._is_running(running):
                        continue  # it finished while this renewal was on its way
                    self._lost += 1
                    running.why = "lost"
                    running.scope.cancel()
                    _log.warning("worker %s: job cancelled: %s", self.worker_id, exc)
                except BrokerError as exc:  # the next round tries again
                    _log.warning("worker %s: cannot renew leases now: %s", self.worker_id, exc)
                    break

    def _is_running(self, running: _Running) -> bool:
        return self._running.get(running.delivery.message.id) is running

    async def _listen_aborts(self, task_status: trio.TaskStatus[None]) -> None:
        """Follow the abort topic; subscribe again (with a capped backoff) if it fails."""
        started = False
        delay = _RETRY_FIRST
        while True:
            try:
                async with self.broker.subscribe(ABORT_TOPIC) as bodies:
                    if not started:
                        task_status.started()
                        started = True
                    delay = _RETRY_FIRST
                    async for body in bodies:
                        self._on_abort(body)
                return  # the iteration ends when the broker closes
            except BrokerUnavailable as exc:
                _log.warning(
                    "worker %s: abort subscription failed, again in %.2g s: %s",
                    self.worker_id,
                    delay,
                    exc,
                )
            await trio.sleep(delay)
            delay = min(delay * 2, _RETRY_CAP)

    def _on_abort(self, body: bytes) -> None:
        message = decode_abort(body)
        if message is None:
            return
        kind, target = message
        if kind == "run":
            self.abort_run(target)
        elif kind == "worker" and target in ("*", self.worker_id):
            self.abort_running()


@asynccontextmanager
async def _bare() -> AsyncIterator[None]:
    """Let an error out of the worker's nurseries as itself, not in exception groups.

    When several tasks failed at once, the first error leaves with the others
    noted on it.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        errors = _leaves(group)
        real = [e for e in errors if not isinstance(e, trio.Cancelled)]
        if not real:
            raise
        first = real[0]
        for other in real[1:]:
            first.add_note(f"also: {type(other).__name__}: {other}")
        raise first from None


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


_Prepared = tuple[Envelope, OpSpec, Operation[Any, Any], Any, dict[str, object]]
