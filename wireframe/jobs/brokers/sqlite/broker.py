"""The SQLite broker itself: the Broker protocol over two connection threads.

:class:`SqliteBroker` owns the parts and joins them: the writer and reader
threads (:mod:`.threads`), the wake-ups of its waiters (:mod:`.wakeups`), and
the transactions of each role — the work queue (:mod:`.queues`), reply
channels (:mod:`.channels`) and their liveness with the workers'
(:mod:`.presence`), jobs kept by id (:mod:`.jobs`), broadcast
(:mod:`.broadcasts`), administration (:mod:`.admin`). A method hands its
transaction to a thread, then wakes the waiters its write concerns; a waiting
method (``consume``, ``receive_replies``, ``wait_job``, a subscription)
loops: look, then wait on its signal (or until a timer), then look again.

*Clock.* Leases, delays, channel and worker deadlines are wall-clock seconds,
shared by every process on the machine and meaningful across restarts:
:func:`time.time` unless :func:`~wireframe.jobs.brokers.sqlite.open` is given
another ``clock``. Each transaction reads the clock on its thread as it runs.
The timers of waiters run on trio's clock for the seconds the broker's clock
says are left.

*Cancellation.* A ``consume`` or ``receive_replies`` cancelled after its
transaction took something gives it back (uncounted, in order), so nothing is
lost to a timeout; see :mod:`.threads` for the calls themselves.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TypeVar

import attrs
import trio

from wireframe.jobs.broker import (
    DURABLE_INBOX_PREFIX,
    BrokerError,
    BrokerUnavailable,
    BrokerURL,
    DeadLetter,
    Delivery,
    JobRecord,
    Message,
    QueueStats,
    RecordStatus,
    Reply,
    ScheduleInfo,
    WorkerInfo,
    count_workers,
)
from wireframe.jobs.brokers.sqlite import (
    admin,
    broadcasts,
    channels,
    jobs,
    limits,
    presence,
    queues,
)
from wireframe.jobs.brokers.sqlite.durable import SqliteOrchestrationStore
from wireframe.jobs.brokers.sqlite.schema import DatabaseFile
from wireframe.jobs.brokers.sqlite.threads import ConnectionThread, is_busy
from wireframe.jobs.brokers.sqlite.wakeups import (
    LOOK_AGAIN,
    FirstLooks,
    NeighbourKey,
    Signal,
    Signals,
    Wakeups,
    data_version,
    join_neighbours,
    leave_neighbours,
    watch,
)
from wireframe.jobs.limits import Limit

__all__ = ["Clock", "SqliteBroker"]

T = TypeVar("T")

#: What the broker reads the time from: wall-clock seconds, callable from any thread.
Clock = Callable[[], float]

_log = logging.getLogger("wireframe.jobs.brokers.sqlite")

_HOST = socket.gethostname()


def _reply_key(reply_to: str) -> tuple[str, str]:
    """Whom a reply to ``reply_to`` wakes: its channel's readers, or, for an
    orchestration's activity, the orchestration workers taking work."""
    return ("o", "") if reply_to.startswith(DURABLE_INBOX_PREFIX) else ("c", reply_to)


class SqliteBroker(SqliteOrchestrationStore):
    """A :class:`~wireframe.jobs.broker.Broker` in one SQLite file (see the package doc).

    Make one with :func:`~wireframe.jobs.brokers.sqlite.open` (or
    ``open_broker("sqlite:///jobs.db")``); it is usable only inside that ``async with``.
    """

    def __init__(
        self, url: BrokerURL, path: Path, *, create: bool = True, clock: Clock = time.time
    ) -> None:
        self.url = url
        #: The absolute path of the database file.
        self.path = path
        self._clock = clock
        self._lease = url.lease
        self._max_deliveries = url.max_deliveries
        self._max_poll = float(url.options["poll"])  # type: ignore[arg-type]
        self._busy_timeout = float(url.options["busy_timeout"])  # type: ignore[arg-type]
        self._file = DatabaseFile(
            path, url, create, self._busy_timeout, str(url.options["synchronous"])
        )
        self._wake = Wakeups()
        self._looks = FirstLooks()
        self._neighbours: list[Wakeups] = [self._wake]
        self._neighbour_key: NeighbourKey | None = None
        self._writer: ConnectionThread | None = None
        self._reader: ConnectionThread | None = None
        self._watch_scope = trio.CancelScope()
        self._closed = False
        #: Who consumes, as a tracked job's record names its worker.
        self._identity = f"{_HOST}:{os.getpid()}"
        self._submitted = 0  # every jobs.SWEEP_EVERY-th submit deletes expired records

    # -- lifecycle -------------------------------------------------------------------

    async def _start(self) -> None:
        """Start the writer (which checks and migrates the file), then the reader."""
        token = trio.lowlevel.current_trio_token()
        self._writer = self._connection_thread(token, writer=True)
        await self._writer.start()
        self._reader = self._connection_thread(token, writer=False)
        try:
            await self._reader.start()
        except BaseException:
            await self._writer.stop()
            raise
        self._neighbour_key = (str(self.path), token)
        self._neighbours = join_neighbours(self._neighbour_key, self._wake)

    def _connection_thread(
        self, token: trio.lowlevel.TrioToken, *, writer: bool
    ) -> ConnectionThread:
        return ConnectionThread(
            f"wireframe-sqlite-{'writer' if writer else 'reader'}",
            lambda: self._file.connect(writer=writer),
            writer=writer,
            busy_timeout=self._busy_timeout,
            token=token,
        )

    def clock(self) -> float:
        """Wall-clock seconds (:func:`time.time` unless ``open`` was given another
        clock): shared by processes and restarts."""
        return self._clock()

    async def ping(self) -> None:
        """Return when the database answers a query."""
        if self._closed:
            raise BrokerUnavailable(f"SQLite broker {self.url} is closed")
        await self._read(lambda conn: conn.execute("SELECT 1").fetchone())

    async def aclose(self) -> None:
        """Stop the watcher, finish queued calls, close both connections, join both threads."""
        if self._closed:
            return
        self._closed = True
        self._watch_scope.cancel()
        self._wake.notify_all()
        if self._neighbour_key is not None:
            leave_neighbours(self._neighbour_key, self._wake)
            self._neighbours = [self._wake]
        with trio.CancelScope(shield=True):
            for thread in (self._reader, self._writer):
                if thread is not None:
                    await thread.stop()

    # -- calling the threads, waking and waiting ---------------------------------------

    def _translate(self, exc: sqlite3.Error) -> BrokerError:
        if isinstance(exc, sqlite3.OperationalError) and is_busy(exc):
            return BrokerUnavailable(
                f"SQLite database {str(self.path)!r} stayed locked by another connection "
                f"for more than busy_timeout={self._busy_timeout} s"
            )
        return BrokerError(f"SQLite error on {str(self.path)!r}: {exc}")

    def _thread(self, thread: ConnectionThread | None) -> ConnectionThread:
        if thread is None or self._closed:
            raise BrokerError(f"SQLite broker {self.url} is closed (use it inside open())")
        return thread

    async def _write_raw(self, fn: Callable[[sqlite3.Connection], T]) -> tuple[T, bool]:
        try:
            return await self._thread(self._writer).run(fn)
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return (await self._write_raw(fn))[0]

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return (await self._thread(self._reader).run(fn))[0]
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc

    def _notify(self, key: tuple[str, str]) -> None:
        """Wake the waiters for ``key`` of this broker and its neighbours on the file."""
        if key[0] == "j":
            self._looks.finished += 1
        for wake in self._neighbours:
            wake.notify(key)

    async def _wait(self, signal: Signal, until: float | None, also: Signals | None = None) -> None:
        """Sleep until ``signal`` (or one of ``also``) fires, or the broker's clock
        reaches ``until``."""
        timeout = math.inf if until is None else until - self._clock()
        await self._wake.wait(signal, timeout, also or ())

    async def _watch(self) -> None:
        """The data_version watcher (:func:`.wakeups.watch`) on the writer's connection,
        until the broker closes."""

        looks = self._looks
        last: int | None = None

        def numbered(conn: sqlite3.Connection) -> tuple[int, int]:
            looks.polls += 1  # on the writer thread, in the order the polls run
            return looks.polls, data_version(conn)

        async def poll() -> int | None:
            nonlocal last
            try:
                run = self._thread(self._writer).run
                number, version = (await run(numbered, readonly=True))[0]
            except (sqlite3.Error, BrokerError):
                looks.changed_at = looks.polls  # unknown: every fresh job looks
                return None  # closing, or a passing lock: everyone looks again
            if version != last:
                looks.changed_at, last = number, version
            return version

        async def jobs_finished(job_ids: list[str]) -> dict[str, object]:
            clock = self._clock
            try:
                return dict(await self._read(lambda conn: jobs.not_live(conn, job_ids, clock())))
            except BrokerError:
                return dict.fromkeys(job_ids, LOOK_AGAIN)  # closing, or a passing lock

        with self._watch_scope:
            await watch(self._wake, poll, self._max_poll, jobs_finished)

    # -- queues ---------------------------------------------------------------------

    async def declare_queue(self, queue: str) -> None:
        """Create ``queue`` if it does not exist (idempotent)."""
        clock = self._clock
        await self._write(lambda conn: queues.declare(conn, queue, clock()))

    async def delete_queue(self, queue: str) -> None:
        """Delete ``queue``, its messages, completed records, dead letters and job records."""
        await self._write(lambda conn: queues.delete(conn, queue))
        self._looks.finished += 1  # its jobs are gone
        for wake in self._neighbours:
            wake.notify_all()  # waiters for its jobs find them gone

    async def publish(self, queue: str, messages: Sequence[Message], *, delay: float = 0.0) -> None:
        """Append ``messages`` to ``queue`` in one transaction, visible after ``delay``."""
        if not delay >= 0.0:
            raise ValueError(f"publish to {queue!r}: delay={delay!r} must be >= 0")
        batch, clock = list(messages), self._clock
        await self._write(lambda conn: queues.publish(conn, queue, batch, clock(), delay))
        if batch:
            self._notify(("q", queue))

    def _claim(self, queue: str, limit: int) -> Callable[[sqlite3.Connection], queues.Claim]:
        """The claim transaction of a ``consume`` (its own method, for tests to slow down)."""
        lease, max_deliveries, clock = self._lease, self._max_deliveries, self._clock
        worker = self._identity
        return lambda conn: queues.claim(
            conn, queue, limit, lease=lease, max_deliveries=max_deliveries, now=clock(),
            worker=worker,
        )  # fmt: skip

    async def consume(self, queue: str, limit: int) -> list[Delivery]:
        """Lease up to ``limit`` visible messages, highest priority then oldest first,
        those naming a limit as it allows; wait for one if none."""
        if limit < 1:
            raise ValueError(f"consume from {queue!r}: limit={limit!r} must be at least 1")
        claim, clock = self._claim(queue, limit), self._clock
        direct = True
        # the limits that held messages back at the last look: their signals are
        # entered before the next look, so that no end of a lease goes unseen
        held: frozenset[str] = frozenset()
        while True:
            with (
                self._wake.signal(("q", queue)) as signal,
                self._wake.signals([("l", name) for name in held]) as also,
            ):
                if direct:
                    result, cancelled = await self._write_raw(claim)
                    for channel in result.dead_channels:
                        self._notify(("c", channel))
                    for job_id in result.dead_jobs:
                        self._notify(("j", job_id))
                    if result.deliveries:
                        if cancelled:
                            await self._give_back(result.deliveries)
                            await trio.lowlevel.checkpoint()
                        return result.deliveries
                    next_visible, now_held = result.next_visible, result.held
                else:
                    peek = await self._read(lambda conn: queues.peek(conn, queue, clock()))
                    if peek.ready:
                        direct = True
                        continue
                    next_visible, now_held = peek.next_visible, peek.held
                if not now_held <= held:
                    held = now_held  # a limit not listened to yet: listen, look again
                    continue
                held = now_held
                await self._wait(signal, next_visible, also)
            # a local write or a lease/delay/token timer: claim at once; a change seen
            # in another process: peek first, without taking the write lock.
            direct = (
                signal.local
                or any(s.local for s in also)
                or not (signal.event.is_set() or any(s.event.is_set() for s in also))
            )

    def _freed(self, limit: str) -> None:
        """A lease of a message of ``limit`` ended: its waiters look again."""
        if limit:
            self._notify(("l", limit))

    async def define_limit(self, limit: Limit) -> None:
        """Record ``limit`` under its name, replacing an earlier one (idempotent); a
        redefinition keeps the bucket's tokens (capped at the new rate) and the slots
        in use."""
        clock = self._clock
        if await self._write(lambda conn: limits.define(conn, limit, clock())):
            self._freed(limit.name)

    async def _give_back(self, deliveries: list[Delivery]) -> None:
        """Undo a claim whose caller was cancelled: visible at once, not counted."""
        clock = self._clock
        with trio.CancelScope(shield=True):
            await self._write(lambda conn: queues.give_back(conn, deliveries, clock()))
        if deliveries:
            self._notify(("q", deliveries[0].queue))
        for name in {d.message.limit for d in deliveries}:
            self._freed(name)

    async def complete(self, delivery: Delivery, reply: bytes | None) -> None:
        """Remove the delivery and post its reply in one transaction (LockLost if stale)."""
        clock = self._clock
        await self._write(lambda conn: queues.complete(conn, delivery, reply, clock()))
        self._freed(delivery.message.limit)
        reply_to = delivery.message.reply_to
        if not reply_to:
            self._notify(("j", delivery.message.id))  # a tracked job's waiters, if any
        elif reply is not None:
            self._notify(_reply_key(reply_to))

    async def abandon(
        self, delivery: Delivery, *, delay: float = 0.0, body: bytes | None = None
    ) -> None:
        """Give the delivery back, visible after ``delay``; a new ``body`` resets its count."""
        if not delay >= 0.0:
            raise ValueError(f"abandon {delivery.message.id!r}: delay={delay!r} must be >= 0")
        clock = self._clock
        await self._write(lambda conn: queues.abandon(conn, delivery, body, clock(), delay))
        self._notify(("q", delivery.queue))
        self._freed(delivery.message.limit)

    async def extend(self, delivery: Delivery) -> Delivery:
        """Renew the lease for ``lease`` seconds from now (same token)."""
        lease, clock = self._lease, self._clock
        expires = await self._write(lambda conn: queues.extend(conn, delivery, lease, clock()))
        return attrs.evolve(delivery, lease_expires=expires)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move the delivery to the dead-letter store and post a dead reply."""
        clock = self._clock
        await self._write(lambda conn: queues.dead_letter(conn, delivery, reason, clock()))
        self._freed(delivery.message.limit)
        reply_to = delivery.message.reply_to
        self._notify(_reply_key(reply_to) if reply_to else ("j", delivery.message.id))

    # -- result channels -----------------------------------------------------------------

    async def receive_replies(self, channel: str, limit: int) -> list[Reply]:
        """Take up to ``limit`` replies from ``channel`` in arrival order; wait if none."""
        if limit < 1:
            raise ValueError(f"receive_replies from {channel!r}: limit={limit!r} must be >= 1")
        direct = True
        while True:
            with self._wake.signal(("c", channel)) as signal:
                if direct or await self._read(lambda conn: channels.has_replies(conn, channel)):
                    replies, cancelled = await self._write_raw(
                        lambda conn: channels.take(conn, channel, limit)
                    )
                    if replies:
                        if cancelled:
                            await self._put_back(channel, replies)
                            await trio.lowlevel.checkpoint()
                        return replies
                await self._wait(signal, None)
            direct = signal.local

    async def _put_back(self, channel: str, replies: list[Reply]) -> None:
        """Undo a take whose caller was cancelled: same replies, same order, first."""
        with trio.CancelScope(shield=True):
            await self._write(lambda conn: channels.put_back(conn, channel, replies))
        self._notify(("c", channel))

    async def delete_channel(self, channel: str) -> None:
        """Drop ``channel``, any replies left in it and its record."""
        await self._write(lambda conn: presence.forget_channel(conn, channel))

    async def open_channel(self, channel: str, ttl: float) -> None:
        """Record ``channel`` as live for ``ttl`` seconds."""
        clock = self._clock
        await self._write(lambda conn: presence.open_channel(conn, channel, ttl, clock()))

    async def keep_channel(self, channel: str, ttl: float) -> None:
        """Keep ``channel`` live for ``ttl`` more seconds; :class:`ChannelLost` if it is not."""
        where, clock = f"SQLite database {str(self.path)!r}", self._clock
        await self._write(lambda conn: presence.keep_channel(conn, channel, ttl, clock(), where))

    async def close_channel(self, channel: str) -> None:
        """Drop ``channel``'s replies and make it dead from now on."""
        clock = self._clock
        await self._write(lambda conn: presence.close_channel(conn, channel, clock()))

    # -- workers ---------------------------------------------------------------------

    async def heartbeat(self, worker: WorkerInfo, ttl: float) -> None:
        """Record ``worker`` as live for ``ttl`` seconds (``0``: remove it)."""
        clock = self._clock
        await self._write(lambda conn: presence.heartbeat(conn, worker, ttl, clock()))

    async def workers(self, queue: str | None = None) -> list[WorkerInfo]:
        """The live workers (of ``queue``, or all), sorted by queue and id."""
        clock = self._clock
        return await self._read(lambda conn: presence.live_workers(conn, queue, clock()))

    async def announce_schedule(self, schedule: ScheduleInfo, ttl: float) -> None:
        """Record ``schedule`` (by name) for ``ttl`` seconds."""
        clock = self._clock
        await self._write(lambda conn: presence.announce_schedule(conn, schedule, ttl, clock()))

    async def schedules(self) -> list[ScheduleInfo]:
        """The schedules announced within their ``ttl``, by name."""
        clock = self._clock
        return await self._read(lambda conn: presence.live_schedules(conn, clock()))

    # -- jobs by id (the job store role: wireframe.jobs.jobstore) ----------------------

    async def submit(
        self,
        queue: str,
        message: Message,
        *,
        delay: float = 0.0,
        key: str | None = None,
        operation: str = "",
    ) -> tuple[JobRecord, bool]:
        """Publish ``message`` as a tracked job (or return the live job holding ``key``),
        in one transaction."""
        if not delay >= 0.0:
            raise ValueError(f"submit to {queue!r}: delay={delay!r} must be >= 0")
        if message.reply_to:
            raise ValueError(
                f"submit to {queue!r}: message {message.id!r} has reply_to="
                f"{message.reply_to!r}; a tracked job's result stays in the broker, by id, "
                "so its reply_to must be ''"
            )
        self._submitted += 1
        sweep = self._submitted % jobs.SWEEP_EVERY == 0
        clock, ttl = self._clock, self.url.result_ttl

        def transaction(conn: sqlite3.Connection) -> tuple[JobRecord, bool]:
            return jobs.submit(conn, queue, message, now=clock(), delay=delay, key=key,
                               operation=operation, ttl=ttl, sweep=sweep)  # fmt: skip

        mark = self._looks.submitting()
        record, new = await self._write(transaction)
        if new:
            self._looks.submitted(record.id, mark)
            self._notify(("q", queue))
        return record, new

    async def job(self, job_id: str) -> JobRecord | None:
        """The job's record, or ``None`` if it is unknown or expired."""
        clock = self._clock
        return await self._read(lambda conn: jobs.read(conn, job_id, clock()))

    async def wait_job(self, job_id: str, timeout: float) -> JobRecord | None:
        """Wait up to ``timeout`` seconds for the job to be final; its record then.

        Woken by the finish itself (at once by a write of this process, by the
        data_version watcher for another process's), never by a poll of its own.
        A job submitted here whose end nothing can have missed skips the first
        look (see :class:`.wakeups.FirstLooks`).
        """
        clock, ids = self._clock, [job_id]
        with trio.move_on_after(timeout):
            look = True
            while True:
                with self._wake.signal(("j", job_id)) as signal:
                    if look and self._looks.may_skip(job_id):
                        look = False  # submitted here and nothing can have ended it unseen
                    if look:
                        # a look reads a record only once it is final: a live one is counted
                        ended = await self._read(lambda conn: jobs.not_live(conn, ids, clock()))
                        if ended:
                            return ended[job_id]
                    await self._wait(signal, None)
                    look = True
                    # the watcher read the record of a job another process finished
                    if signal.value is not LOOK_AGAIN:
                        return signal.value  # type: ignore[return-value]
        return await self._read(lambda conn: jobs.read(conn, job_id, clock()))

    async def abort_job(self, job_id: str) -> JobRecord | None:
        """Abort a job that has not finished (a waiting one never runs); its record after."""
        clock = self._clock
        record = await self._write(lambda conn: jobs.abort(conn, job_id, clock()))
        if record is not None:
            self._notify(("j", job_id))
            for wake in self._neighbours:  # a running one's slot is free: which limit's?
                for name in wake.waited("l"):
                    wake.notify(("l", name))
        return record

    # -- broadcast ---------------------------------------------------------------------

    async def broadcast(self, topic: str, body: bytes) -> None:
        """Send ``body`` to every current subscriber of ``topic``, in this and other processes."""
        data, clock = bytes(body), self._clock
        await self._write(lambda conn: broadcasts.send(conn, topic, data, clock()))
        self._notify(("b", topic))

    def subscribe(self, topic: str) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """Subscribe to ``topic``: everything broadcast after entering is received;
        the iteration ends when this broker closes."""
        return self._subscribe(topic)

    @asynccontextmanager
    async def _subscribe(self, topic: str) -> AsyncIterator[AsyncIterator[bytes]]:
        yield _Subscription(self, topic, await self._read(broadcasts.latest_id))

    # -- inspection and housekeeping ---------------------------------------------------

    async def stats(self) -> list[QueueStats]:
        """Counts per known queue, sorted by name (an expired lease counts as queued)."""
        clock = self._clock
        counts = await self._read(lambda conn: admin.stats(conn, clock()))
        return count_workers(counts, await self.workers())

    async def dead_letters(
        self, queue: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters after ``offset``, of ``queue`` or of every queue."""
        return await self._read(lambda conn: admin.dead_letters(conn, queue, limit, offset))

    async def requeue_dead(self, queue: str | None = None, message_id: str | None = None) -> int:
        """Put dead letters (of one message, if given) back on their queues, delivery
        count reset; count them."""
        clock = self._clock
        requeued = await self._write(
            lambda conn: admin.requeue_dead(conn, queue, clock(), message_id)
        )
        for name in set(requeued):
            self._notify(("q", name))
        return len(requeued)

    async def find_jobs(
        self,
        *,
        queue: str | None = None,
        status: RecordStatus | None = None,
        operation: str | None = None,
        key: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[JobRecord]:
        """Job records newest first, matching every filter given (see :func:`.jobs.find`)."""
        clock = self._clock
        return await self._read(
            lambda conn: jobs.find(
                conn, clock(), queue=queue, status=status, operation=operation, key=key,
                limit=limit, offset=offset,
            )
        )  # fmt: skip

    async def purge(self, queue: str | None = None) -> int:
        """Delete completed records and dead letters (of ``queue`` or all); count them."""
        clock = self._clock
        return await self._write(lambda conn: admin.purge(conn, queue, clock()))


class _Subscription:
    """The async iterator of one subscription: bodies broadcast after it began,
    ending when the broker closes."""

    def __init__(self, broker: SqliteBroker, topic: str, after: int) -> None:
        self._broker = broker
        self._topic = topic
        self._after = after
        self._pending: list[bytes] = []

    def __aiter__(self) -> _Subscription:
        return self

    async def __anext__(self) -> bytes:
        broker, topic = self._broker, self._topic
        while not self._pending:
            if broker._closed:
                raise StopAsyncIteration  # the iteration ends when the broker closes
            with broker._wake.signal(("b", topic)) as signal:
                read = functools.partial(broadcasts.read_after, topic=topic, after=self._after)
                try:
                    found = await broker._read(read)
                except BrokerError:
                    if broker._closed:
                        raise StopAsyncIteration from None
                    raise
                for reason in found.skipped:
                    _log.warning("SQLite broker %s: %s", broker.url, reason)
                if found.last_id != self._after:
                    self._after = found.last_id
                    self._pending = found.bodies
                    continue  # look again at once (the loop ends if something was found)
                await broker._wait(signal, None)
        await trio.lowlevel.checkpoint()
        return self._pending.pop(0)
