"""The orchestrator side: a broker connection, and one coordinated run per directive.

``async with jobs.connect(url) as rt`` opens the broker the URL names (the
default is the embedded SQLite file ``sqlite:///wireframe-jobs.db``); with
``memory://...?workers=N`` the context also runs N emulated workers. A
directive asks the runtime for a :class:`Run`: a run id, a result channel
leased for it, a bound on jobs in flight, and — when the run ends early
(failure, timeout, cancellation) — an abort broadcast that makes every worker
skip its queued jobs and cancel its running ones.

While a run lives, a watcher task keeps its result channel alive in the broker
(:meth:`~wireframe.jobs.broker.Broker.keep_channel`), so that the jobs of a run
whose process died are skipped once the channel expires, and a broker that
lost the run's state (a Redis restarted without persistence) fails the run
with :class:`~wireframe.jobs.broker.ChannelLost` instead of leaving it waiting
forever. The watcher also looks for live workers on the run's queue and logs a
warning when there are none (:attr:`Run.no_worker_since`).
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, TypeVar

import attrs
import trio

from wireframe.jobs.broker import (
    Broker,
    BrokerError,
    BrokerURL,
    ChannelLost,
    Message,
    QueueStats,
    open_broker,
)
from wireframe.jobs.cache import ResultCache
from wireframe.jobs.channel import ResultChannel
from wireframe.jobs.codec import ABORT_TOPIC, encode_abort
from wireframe.jobs.handles import JobHandle
from wireframe.jobs.handles import submit as submit_job
from wireframe.jobs.limits import Limit
from wireframe.jobs.operations import Operation
from wireframe.jobs.worker import Worker  # emulated workers, for memory://?workers=N
from wireframe.service.background import background_tasks
from wireframe.service.report import describe

__all__ = [
    "DEFAULT_URL",
    "Run",
    "Runtime",
    "RuntimeStatistics",
    "RuntimeStats",
    "connect",
]

#: The broker URL ``connect()`` uses when given none: the embedded default.
DEFAULT_URL = "sqlite:///wireframe-jobs.db"
#: Seconds after which a runtime defines a limit in the broker again when it uses it.
LIMIT_REFRESH = 60.0
_ABORT_GRACE = 5.0  # seconds a shielded abort broadcast may take on the way out
_MAX_FINISHED = 256  # finished runs' channels waiting for deletion at most
#: A run's channel lives this many leases after its last renewal (at least
#: _MIN_CHANNEL_TTL seconds): a run whose process died is given up after that.
_CHANNEL_TTL_LEASES = 2.0
_MIN_CHANNEL_TTL = 30.0
#: A run that still waits this long after it opened starts looking for workers.
_FIRST_WATCH = 2.0
#: The longest pause between two looks of a run's watcher.
_MAX_WATCH_EVERY = 5.0
#: A run keeps this many jobs in flight per slot of the live workers on its queue
#: (never fewer than MIN_WINDOW, never more than its ``max_in_flight``).
WINDOW_PER_SLOT = 2
MIN_WINDOW = 32

logger = logging.getLogger("wireframe.jobs")
I = TypeVar("I")  # noqa: E741
O = TypeVar("O")  # noqa: E741


@attrs.frozen
class RuntimeStatistics:
    """A snapshot of a :class:`Runtime`'s counts since it was made (:meth:`Runtime.statistics`).

    ``runs_started`` directive runs opened, ``runs_active`` of them still open;
    ``jobs_sent`` jobs published and ``results`` replies received by them, of
    which ``failed`` were errors (``dead`` of those: dead-lettered jobs);
    ``cache_hits`` jobs answered from the result cache instead of being sent.
    ``started_at`` is when the runtime was made, on the trio clock.
    """

    runs_started: int
    runs_active: int
    jobs_sent: int
    results: int
    failed: int
    dead: int
    cache_hits: int
    started_at: float


@attrs.frozen
class RuntimeStats:
    """What a live view polls: the broker's per-queue counts, this runtime's, and its rate."""

    queues: tuple[QueueStats, ...]
    runtime: RuntimeStatistics
    results_per_second: float


@attrs.define
class _Counts:
    """The counts behind :meth:`Runtime.statistics`, bumped by the runtime and its runs.

    Plain ints in one private record, so that counting costs an addition on the
    job path and a frozen :class:`RuntimeStatistics` is built only when asked for.
    """

    runs_started: int = 0
    runs_active: int = 0
    jobs_sent: int = 0
    results: int = 0
    failed: int = 0
    dead: int = 0
    cache_hits: int = 0


class Runtime:
    """The job runtime resource: submit directive runs through one broker connection.

    ``queue`` is where jobs go unless a run says otherwise; ``max_in_flight``
    bounds the jobs of one run that are published but not yet answered (a
    run keeps fewer in flight, twice the slots of its queue's live workers,
    when those are fewer: see :attr:`Run.window`); ``publish_batch`` is the most messages one publish call carries.
    """

    def __init__(
        self,
        broker: Broker,
        *,
        queue: str = "default",
        max_in_flight: int = 1024,
        publish_batch: int = 512,
        cache: ResultCache | None = None,
    ) -> None:
        if max_in_flight < 1 or publish_batch < 1:
            raise ValueError("max_in_flight and publish_batch must be at least 1")
        self.broker = broker
        self.queue = queue
        self.max_in_flight = max_in_flight
        self.publish_batch = publish_batch
        self.cache = cache
        self._counts = _Counts()
        self._started_at = trio.current_time()
        #: Per queue, the job slots (concurrency) of its live workers as last seen.
        self.slots_seen: dict[str, int] = {}
        #: Result channels of runs that got every reply: garbage, deleted by a later
        #: run right after it publishes (while it waits for its workers anyway).
        self._finished_channels: list[str] = []
        #: Wall-clock seconds minus the broker's clock, read once: how schedules map
        #: the broker's clock (trio's, for memory://) to wall time.
        self.wall_offset = time.time() - broker.clock()
        #: Limits defined in the broker, with trio's clock reading of when.
        self._limits: dict[str, tuple[Limit, float]] = {}

    @property
    def url(self) -> BrokerURL:
        """The broker's parsed URL."""
        return self.broker.url

    def statistics(self) -> RuntimeStatistics:
        """This runtime's counts now, as a frozen snapshot (cheap: no broker call)."""
        return RuntimeStatistics(**attrs.asdict(self._counts), started_at=self._started_at)

    async def stats(self) -> RuntimeStats:
        """Per-queue broker counts and this runtime's statistics (what a live view polls)."""
        queues = await self.broker.stats()
        snapshot = self.statistics()
        elapsed = max(trio.current_time() - snapshot.started_at, 1e-9)
        return RuntimeStats(tuple(queues), snapshot, snapshot.results / elapsed)

    async def abort(self, run_id: str) -> None:
        """Tell every worker to skip queued and cancel running jobs of ``run_id``."""
        await self.broker.broadcast(ABORT_TOPIC, encode_abort("run", run_id))

    async def abort_workers(self, worker_id: str = "*") -> None:
        """Per-worker abort: the worker(s) cancel what they run now and keep looping."""
        await self.broker.broadcast(ABORT_TOPIC, encode_abort("worker", worker_id))

    async def submit(
        self,
        op: Operation[I, O],
        input: I,
        *,
        queue: str | None = None,
        delay: float | None = None,
        at: datetime | None = None,
        priority: int = 0,
        key: str | None = None,
        time_limit: float | None = None,
        job_id: str | None = None,
    ) -> JobHandle:
        """Submit one job on its own; its state and result stay in the broker, by id.

        ``queue`` (default: the runtime's), ``delay`` seconds or ``at`` (an aware
        datetime) before it is visible, ``priority`` (higher first within a
        queue), a dedup ``key`` (while a job with that key is scheduled, queued
        or running, this returns that job's handle and publishes nothing) and a
        ``time_limit`` in seconds (default: the operation class's). A chosen
        ``job_id`` makes the submit idempotent: an id the broker knows (live,
        or finished within ``result_ttl``) makes no second job. Every argument
        is checked before anything is published.
        """
        return await submit_job(
            self, op, input, queue=queue, delay=delay, at=at, priority=priority, key=key,
            time_limit=time_limit, job_id=job_id,
        )  # fmt: skip

    async def limit_of(self, op: Operation[Any, Any]) -> str:
        """The name of ``op``'s limit for its messages (``""`` for none), defined in the broker.

        A limit is defined on its first use and again every
        :data:`LIMIT_REFRESH` seconds of use, so a broker that lost its state
        (a Redis restarted without data) has it back within that time.
        """
        limit = type(op).op_limit
        if limit is None:
            return ""
        known = self._limits.get(limit.name)
        now = trio.current_time()
        if known is None or known[0] != limit or now - known[1] > LIMIT_REFRESH:
            await self.broker.define_limit(limit)
            self._limits[limit.name] = (limit, now)
        return limit.name

    def handle(self, job_id: str) -> JobHandle:
        """A handle for the job ``job_id``, submitted by any process on this broker."""
        if not isinstance(job_id, str) or not job_id:
            raise ValueError(f"handle: job_id={job_id!r} must be a non-empty string")
        return JobHandle(job_id, self)

    @asynccontextmanager
    async def open_run(
        self,
        *,
        queue: str | None = None,
        max_in_flight: int | None = None,
        priority: int = 0,
        time_limit: float | None = None,
        delay: float = 0.0,
    ) -> AsyncIterator[Run]:
        """Lease a coordinated run: its id, result channel and in-flight bound.

        Its jobs carry ``priority`` and ``time_limit`` (seconds; default each
        operation's own), and none is visible before ``delay`` seconds from now.

        Leaving the block before the run is done (an error, a timeout, a
        cancellation) aborts its remaining jobs on every worker and deletes the
        result channel. A run that got every reply leaves its channel to be
        deleted by the next run right after that one publishes (while it waits
        for its workers anyway) or when ``connect()`` exits: one round trip
        less on every run's own path.
        """
        run = Run(self, queue or self.queue, max_in_flight or self.max_in_flight)
        run.priority, run.time_limit = priority, time_limit
        run.starts_at = trio.current_time() + delay
        self._counts.runs_started += 1
        self._counts.runs_active += 1
        pending: BaseException | None = None  # what ends the run, if it ends with an error
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_run, run)
                try:
                    yield run
                finally:
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            pending = _lone(group)
            if pending is group:
                raise
            raise pending from pending.__cause__
        except BaseException as exc:
            pending = exc
            raise
        finally:
            self._counts.runs_active -= 1
            finished = self._finished_channels
            if run.channel.done and len(finished) < _MAX_FINISHED:
                finished.append(run.channel.name)  # off this run's path: see Run.send
            else:
                with trio.CancelScope(shield=True), trio.move_on_after(_ABORT_GRACE):
                    try:
                        if not run.channel.done and run.sent:
                            await self.abort(run.run_id)
                        await self.broker.close_channel(run.channel.name)
                    except BrokerError as exc:
                        # The broker is gone (that may be why the run ended): the run's own
                        # outcome is what the caller needs, so this one must not replace it.
                        if pending is not None:
                            pending.add_note(
                                f"wireframe: the cleanup of run {run.run_id} could not reach "
                                f"the broker ({describe(exc)}); its remaining jobs may still run "
                                "and their replies are left behind"
                            )

    async def _delete_finished_channels(self) -> None:
        """Close the result channels of finished runs (``connect()`` does on exit too).

        Each holds nothing anyone waits for, so one that cannot be closed (the
        broker is gone) is left behind, to expire, rather than failing the caller.
        """
        names, self._finished_channels = self._finished_channels, []
        for name in names:
            try:
                await self.broker.close_channel(name)
            except BrokerError:
                pass

    @property
    def channel_ttl(self) -> float:
        """How long (seconds) a run's channel stays live after its last renewal."""
        return max(_CHANNEL_TTL_LEASES * self.broker.url.lease, _MIN_CHANNEL_TTL)

    async def _watch_run(self, run: Run) -> None:
        """Keep ``run``'s channel alive and look for workers on its queue, until cancelled.

        Raises :class:`ChannelLost` (which ends the run) when the broker no longer
        has the channel. Other broker errors are passing: the run's own calls
        report a broker that stays away.
        """
        broker, name, ttl = self.broker, run.channel.name, self.channel_ttl
        every = min(self.broker.url.lease / 3, ttl / 3, _MAX_WATCH_EVERY)
        try:
            await broker.open_channel(name, ttl)
            if run.queue not in self.slots_seen:  # at once, the first time: it sizes windows
                await self._count_slots(run)
        except BrokerError:
            pass  # keep_channel below says ChannelLost if the open never landed
        await trio.sleep(min(_FIRST_WATCH, every))
        while True:
            try:
                await broker.keep_channel(name, ttl)
                await self._look_for_workers(run)
            except ChannelLost as exc:
                raise ChannelLost(
                    exc.channel,
                    f"{exc.detail}; run {run.run_id} on broker "
                    f"{broker.url} had {run.in_flight} jobs in flight, whose results "
                    "will never arrive",
                ) from None
            except BrokerError as exc:
                logger.debug("run %s: the broker did not answer its watcher: %s", run.run_id, exc)
            await trio.sleep(every)

    async def _count_slots(self, run: Run) -> int:
        """How many job slots the live workers on ``run``'s queue have; resizes its window."""
        slots = sum(w.concurrency for w in await self.broker.workers(run.queue))
        before = run.window
        self.slots_seen[run.queue] = slots
        if run.window > before:
            run.capacity_changed()
        return slots

    async def _look_for_workers(self, run: Run) -> None:
        """Note (and log, once) when no live worker consumes ``run``'s queue."""
        if await self._count_slots(run):
            run.no_worker_since = None
            return
        if run.no_worker_since is None:
            run.no_worker_since = trio.current_time()
            logger.warning(
                "run %s waits for %d jobs, but no live worker consumes queue %r of "
                "broker %s; start one with: wireframe worker --broker URL --import MODULE",
                run.run_id,
                run.in_flight,
                run.queue,
                self.broker.url,
            )


class Run:
    """One directive run: publish jobs with a bound in flight, receive their replies once."""

    def __init__(self, runtime: Runtime, queue: str, max_in_flight: int) -> None:
        self.runtime = runtime
        self.broker = runtime.broker
        self.queue = queue
        self.max_in_flight = max_in_flight
        self.run_id = uuid.uuid4().hex
        #: String metadata every job of the run carries (a trace context), if any.
        self.metadata: Mapping[str, str] | None = None
        self._counts = runtime._counts  # the runtime's statistics count this run's jobs too
        self.channel = ResultChannel(self.broker, f"wireframe.reply.{self.run_id}")
        #: When (trio clock) the run's watcher first found no live worker on its
        #: queue, or ``None`` while one is seen (or nobody looked yet).
        self.no_worker_since: float | None = None
        #: What every job of the run carries, and when (trio clock) its jobs show.
        self.priority = 0
        self.time_limit: float | None = None
        self.starts_at = -math.inf
        self.sent = 0
        self._seq = 0
        self._in_flight = 0
        self._capacity = trio.Event()

    @property
    def in_flight(self) -> int:
        """Jobs published by this run and not answered yet."""
        return self._in_flight

    @property
    def window(self) -> int:
        """How many jobs the run keeps in flight: its bound, or fewer for few workers.

        Jobs published far beyond what the queue's workers can run at once only
        lengthen the queue in front of anything submitted later: a single job
        would wait behind the whole window. Twice the workers' slots (as the
        run's watcher last saw them) keeps them busy while replies travel back;
        until it has looked, or when it sees none, the run uses its bound.
        """
        slots = self.runtime.slots_seen.get(self.queue, 0)
        if slots <= 0:
            return self.max_in_flight
        return min(self.max_in_flight, max(MIN_WINDOW, WINDOW_PER_SLOT * slots))

    def capacity_changed(self) -> None:
        """Wake feeders waiting in :meth:`wait_for_capacity` (a reply came, the window grew)."""
        self._capacity.set()

    def free_slots(self) -> int:
        """How many more jobs may be published before the window is full."""
        return self.window - self._in_flight

    def job_id(self) -> str:
        """A fresh job id, unique in the broker (run id + ``s`` + sequence number).

        The ``s`` keeps these apart from map job ids (run id + input index).
        """
        self._seq += 1
        return f"{self.run_id}.s{self._seq}"

    async def wait_for_capacity(self) -> None:
        """Wait until at least one slot is free (returns at once if one is)."""
        while self._in_flight >= self.window:
            if self._capacity.is_set():
                self._capacity = trio.Event()
            await self._capacity.wait()

    async def send(self, jobs: Sequence[tuple[str, bytes, Any]], *, limit: str = "") -> None:
        """Publish ``(job id, body, tag)`` triples in batches; the tags come back with the replies.

        ``limit`` names the limit the jobs' messages are handed out within
        (:meth:`Runtime.limit_of`).

        Does not wait for capacity (a fold's combine jobs must never block on
        the map that feeds them); feeders call :meth:`wait_for_capacity`.
        Before the run's start, jobs are published delayed until then.
        """
        if not jobs:
            return
        self.channel.expect((jid, tag) for jid, _, tag in jobs)
        self._in_flight += len(jobs)
        self.sent += len(jobs)
        self._counts.jobs_sent += len(jobs)
        reply_to, priority = self.channel.name, self.priority
        step = self.runtime.publish_batch
        delay = max(0.0, self.starts_at - trio.current_time())
        for start in range(0, len(jobs), step):
            chunk = jobs[start : start + step]
            messages = [Message(jid, body, reply_to, priority, limit) for jid, body, _ in chunk]
            await self.broker.publish(self.queue, messages, delay=delay)
        if self.runtime._finished_channels:
            # the jobs are out: clean up earlier runs while their workers run them
            await self.runtime._delete_finished_channels()

    def close(self) -> None:
        """Nothing more will be sent: the reply stream ends with the last pending reply."""
        self.channel.close()

    async def receive(self) -> list[tuple[Any, Any]] | None:
        """The next batch of ``(Reply, tag)``, or ``None`` when the run is complete."""
        batch = await self.channel.receive()
        if batch is None:
            return None
        self._in_flight -= len(batch)
        self._counts.results += len(batch)
        self.capacity_changed()
        return batch

    async def cache_get(self, key: bytes) -> bytes | None:
        """The cached result body for ``key`` (``None`` without a cache or on a miss)."""
        cache = self.runtime.cache
        if cache is None:
            return None
        body = await cache.get(key)
        if body is not None:
            self._counts.cache_hits += 1
        return body

    def count_failure(self, *, dead: bool) -> None:
        """Count a reply of this run that was an error (``dead``: a dead-lettered job)."""
        self._counts.failed += 1
        if dead:
            self._counts.dead += 1

    async def cache_set(self, key: bytes, body: bytes) -> None:
        """Remember a successful result body under ``key`` (no-op without a cache)."""
        if self.runtime.cache is not None:
            await self.runtime.cache.set(key, body)


@asynccontextmanager
async def connect(
    url: str | None = None,
    *,
    queue: str = "default",
    max_in_flight: int = 1024,
    publish_batch: int = 512,
    cache: ResultCache | None = None,
    workers: int | None = None,
    worker_concurrency: int = 64,
    resources: Sequence[object] = (),
) -> AsyncIterator[Runtime]:
    """Open a :class:`Runtime` on the broker ``url`` names (default :data:`DEFAULT_URL`).

    With ``memory://...?workers=N`` (or ``workers=N`` here) the context also
    runs N emulated workers on ``queue``, each with ``worker_concurrency``
    slots and the given worker-side ``resources``; they stop when the block
    ends.

    What the block raises leaves ``connect()`` exactly as raised (never wrapped
    in an ``ExceptionGroup`` by the broker's or the workers' nursery), so
    ``except jobs.JobFailed`` or ``except trio.TooSlowError`` around the
    ``async with`` catches it; so does a lone failure of an emulated worker.
    """
    async with open_broker(url or DEFAULT_URL) as broker:
        rt = Runtime(
            broker,
            queue=queue,
            max_in_flight=max_in_flight,
            publish_batch=publish_batch,
            cache=cache,
        )
        n = workers if workers is not None else emulated_workers(broker.url)
        async with background_tasks() as nursery:  # the block's exception leaves bare
            pool = emulated_pool(
                broker, count=n, queue=queue, concurrency=worker_concurrency, resources=resources
            )
            for w in pool:
                await nursery.start(w.serve)
            try:
                yield rt
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(_ABORT_GRACE):
                    await rt._delete_finished_channels()
                for w in pool:
                    w.stop()
                nursery.cancel_scope.deadline = trio.current_time() + _ABORT_GRACE


def emulated_pool(
    broker: Broker,
    *,
    count: int | None = None,
    queue: str = "default",
    concurrency: int = 64,
    resources: Sequence[object] = (),
    name: str = "",
) -> list[Worker]:
    """The emulated workers of ``memory://...?workers=N``: ``count`` of them, default N.

    Each serves ``queue`` with ``concurrency`` slots and the worker-side
    ``resources``; their ids are ``[name:]emulated-<i>``. :func:`connect` runs
    them in its context, ``JobRuntimeLayer`` as service tasks.
    """
    n = emulated_workers(broker.url) if count is None else count
    prefix = f"{name}:" if name else ""
    return [
        Worker(
            broker,
            queue=queue,
            concurrency=concurrency,
            resources=resources,
            worker_id=f"{prefix}emulated-{i}",
        )
        for i in range(n)
    ]


def _lone(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception inside nested single-member groups, or ``group`` itself."""
    leaf: BaseException = group
    while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
        leaf = leaf.exceptions[0]
    return leaf


def emulated_workers(url: BrokerURL) -> int:
    """The ``workers=N`` option of a ``memory://`` URL (0 elsewhere or when absent)."""
    if url.scheme != "memory":
        return 0
    value = url.options.get("workers", 0)
    if isinstance(value, str):
        value = int(value)
    if not isinstance(value, int | float) or value < 0 or not math.isfinite(value):
        raise ValueError(f"broker URL {url}: workers={value!r} must be a whole number >= 0")
    return int(value)
