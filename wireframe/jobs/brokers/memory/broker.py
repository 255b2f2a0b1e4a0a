"""The memory broker's methods: the Broker protocol on a :class:`~.state.State`.

No call starts a task. Settling a delivery (``complete``, ``abandon``,
``extend``, ``dead_letter``) is a cancellation point but does not yield to the
scheduler: it is the per-job hot path, and a full schedule point there costs
more than the broker's own work (the worker yields in ``consume`` anyway).
Every other call is a full checkpoint. A blocked ``consume`` sleeps on an
event with a deadline at the earliest expiry or delay, so it wakes exactly when
something can become visible, without polling. Limits (:mod:`.limits`) hold
messages back in ``consume``; a consumer they hold back also wakes when a token
accrues or a slot is given back.
"""

from __future__ import annotations

import heapq
import itertools
import math
import os
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import attrs
import trio

from wireframe.jobs.broker import (
    DEAD_CHANNEL_RETENTION,
    BrokerError,
    BrokerURL,
    ChannelLost,
    DeadLetter,
    Delivery,
    JobRecord,
    LockLost,
    Message,
    QueueStats,
    RecordStatus,
    Reply,
    ScheduleInfo,
    WorkerInfo,
    count_workers,
)
from wireframe.jobs.brokers.memory.durable import MemoryOrchestrationStore
from wireframe.jobs.brokers.memory.jobs import Job
from wireframe.jobs.brokers.memory.limits import (
    define,
    forget_queue,
    held,
    park,
    reclaim_holders,
    unpark,
    wake_at,
)
from wireframe.jobs.brokers.memory.state import (
    REGISTRY,
    SWEEP_EVERY,
    Entry,
    Queue,
    State,
)
from wireframe.jobs.limits import Limit

__all__ = ["MemoryBroker"]

_HOST = socket.gethostname()


class MemoryBroker(MemoryOrchestrationStore):
    """The in-process :class:`~wireframe.jobs.broker.Broker`; get one with :func:`open`."""

    def __init__(self, url: BrokerURL, state: State) -> None:
        self.url = url
        self.name = url.host
        self._state = state
        self._lease_seconds = url.lease
        self._max_deliveries = url.max_deliveries
        self._closed = False
        self._subscriptions: set[trio.MemorySendChannel[bytes]] = set()
        #: Who consumes, as a tracked job's record names its worker.
        self._identity = f"{_HOST}:{os.getpid()}:{url.host or 'memory'}"

    def __repr__(self) -> str:
        return f"<MemoryBroker {self.url}{' closed' if self._closed else ''}>"

    def clock(self) -> float:
        """trio's clock: leases and delays follow ``MockClock`` in tests."""
        return trio.current_time()

    def _check_open(self) -> None:
        if self._closed:
            raise BrokerError(f"memory broker {self.url} is closed")

    async def ping(self) -> None:
        """Always answers while open."""
        await trio.lowlevel.checkpoint()
        self._check_open()

    async def aclose(self) -> None:
        """End this broker's subscriptions and let go of the shared state. Idempotent."""
        if not self._closed:
            self._closed = True
            for send in self._subscriptions:
                send.close()
            self._subscriptions.clear()
            self._state.refs -= 1
            if self._state.refs <= 0 and REGISTRY.get(self.name) is self._state:
                del REGISTRY[self.name]
        await trio.lowlevel.cancel_shielded_checkpoint()

    # -- queues ---------------------------------------------------------------
    async def define_limit(self, limit: Limit) -> None:
        """Record ``limit`` under its name (idempotent); a new definition keeps the
        bucket's tokens (capped at the new rate) and the slots in use."""
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_open()
        define(self._state.limits, limit, trio.current_time())
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def declare_queue(self, queue: str) -> None:
        """Create ``queue`` if it does not exist."""
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_open()
        self._state.queue(queue)
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def delete_queue(self, queue: str) -> None:
        """Drop ``queue`` with its messages, leases and finished state."""
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_open()
        q = self._state.queues.pop(queue, None)
        if q is not None:
            forget_queue(q)  # its leases give their limits' slots back
            q.notify()  # blocked consumers look again (and find a new, empty queue)
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def publish(self, queue: str, messages: Sequence[Message], *, delay: float = 0.0) -> None:
        """Append ``messages`` to ``queue``, visible after ``delay`` seconds."""
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_open()
        if not delay >= 0.0:
            raise ValueError(f"publish to {queue!r}: delay={delay!r} must be >= 0")
        q = self._state.queue(queue)
        if delay > 0.0:
            visible = trio.current_time() + delay
            seq = self._state.seq
            delayed = q.delayed
            for message in messages:
                heapq.heappush(delayed, (visible, next(seq), Entry(message)))
        elif all(m.priority == 0 for m in messages):
            q.ready.extend(map(Entry, messages))
        else:
            for message in messages:
                q.push(Entry(message))
        q.notify()
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def consume(self, queue: str, limit: int) -> list[Delivery]:
        """Lease up to ``limit`` visible messages; block until there is one."""
        if limit < 1:
            raise ValueError(f"consume from {queue!r}: limit={limit!r} must be at least 1")
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            self._check_open()
            q = self._state.queue(queue)
            now = trio.current_time()
            q.reclaim(now)
            if q.parked:
                reclaim_holders(q, now)
            if q.ready or q.lanes or q.parked:
                out = self._lease(q, limit, now)
                if out:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                    return out
            event = q.event
            if event is None:
                event = q.event = trio.Event()
            due = q.next_due()
            if q.parked:  # only messages a limit holds back: until it may have room
                due = min(due, wake_at(q, now))
            with trio.move_on_at(due):
                await event.wait()

    def _lease(self, q: Queue, limit: int, now: float) -> list[Delivery]:
        lease = self._lease_seconds
        max_deliveries = self._max_deliveries
        expires = now + lease
        order = q.order(lease)
        leased = q.leased
        tokens = self._state.tokens
        name = q.name
        out: list[Delivery] = []
        dead = self._state.dead
        gates = self._state.limits
        pop = q.pop
        if q.parked:
            unpark(q, now, limit)  # held back before, room now: first in line again
        while len(out) < limit:
            entry = pop()
            if entry is None:
                if q.parked and unpark(q, now, limit - len(out)):
                    continue
                break
            message = entry.message
            job = entry.job
            if job is not None and job.status is RecordStatus.ABORTED:
                q.done += 1  # aborted by id while it waited: settled, it never runs
                continue
            reply_to = message.reply_to
            if reply_to and dead(reply_to, now):
                q.done += 1  # an orphan: its run is gone, nobody wants its result
                continue
            if entry.deliveries >= max_deliveries:
                self._state.kill(
                    q,
                    entry,
                    f"delivered {entry.deliveries} times without completing "
                    f"(max_deliveries={max_deliveries})",
                )
                continue
            if message.limit:  # the one check an unlimited message costs
                gate = gates.get(message.limit)
                if gate is not None and not gate.take(q, entry, now):
                    park(q, gate, entry)  # held back: no delivery used, nothing blocked
                    continue
            entry.deliveries += 1
            token = str(next(tokens))
            entry.token = token
            entry.expires = expires
            leased[token] = entry
            order.append((expires, token))
            if job is not None:
                job.leased(now, self._identity)
            out.append(Delivery(message, name, entry.deliveries, token, expires))
        return out

    def _held(self, delivery: Delivery, action: str) -> tuple[Queue, Entry]:
        """The queue and entry of a delivery whose lease is still current, or LockLost."""
        self._check_open()
        q = self._state.queues.get(delivery.queue)
        entry = None if q is None else q.leased.get(delivery.lease_token)
        if q is None or entry is None:
            raise LockLost(
                delivery.message.id,
                delivery.queue,
                f"{action} found no current lease (it ran out and was taken back, or was settled)",
            )
        if entry.expires <= trio.current_time():
            raise LockLost(
                delivery.message.id,
                delivery.queue,
                f"{action} came after the lease ran out at {entry.expires:.3f}",
            )
        return q, entry

    async def complete(self, delivery: Delivery, reply: bytes | None) -> None:
        """Remove the delivered message and post its reply, in one step."""
        await trio.lowlevel.checkpoint_if_cancelled()
        # the per-job hot path: _held's checks, inlined
        q = None if self._closed else self._state.queues.get(delivery.queue)
        entry = None if q is None else q.leased.pop(delivery.lease_token, None)
        if q is None or entry is None or entry.expires <= trio.current_time():
            if q is not None and entry is not None:
                q.leased[delivery.lease_token] = entry  # expired: reclaim takes it back
            self._held(delivery, "complete")  # raises the precise error
            raise AssertionError("unreachable")  # pragma: no cover
        entry.token = None
        if entry.gate is not None:
            entry.gate.release(q, entry)
        q.done += 1
        message = entry.message
        if entry.job is not None:
            entry.job.finish(RecordStatus.DONE, trio.current_time(), result=reply)
        if reply is not None and message.reply_to:
            state = self._state
            if not (state.deadlines and state.dead(message.reply_to, trio.current_time())):
                state.post(message.reply_to, Reply(message.id, body=reply))

    async def abandon(
        self, delivery: Delivery, *, delay: float = 0.0, body: bytes | None = None
    ) -> None:
        """Give the message back, visible after ``delay``; a new ``body`` resets its count."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if not delay >= 0.0:
            raise ValueError(f"abandon {delivery.message.id!r}: delay={delay!r} must be >= 0")
        q, entry = self._held(delivery, "abandon")
        del q.leased[delivery.lease_token]
        entry.token = None
        if entry.gate is not None:
            entry.gate.release(q, entry)
        if body is not None:
            entry.message = attrs.evolve(entry.message, body=body)
            entry.deliveries = 0
        now = trio.current_time()
        if entry.job is not None:
            entry.job.requeued(now, delay)
        if delay > 0.0:
            heapq.heappush(q.delayed, (now + delay, next(self._state.seq), entry))
        else:
            q.push(entry)
        q.notify()

    async def extend(self, delivery: Delivery) -> Delivery:
        """Renew the lease for ``lease`` seconds from now (same token)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        q, entry = self._held(delivery, "extend")
        lease = self._lease_seconds
        expires = trio.current_time() + lease
        entry.expires = expires
        q.order(lease).append((expires, delivery.lease_token))
        return Delivery(
            delivery.message, delivery.queue, delivery.deliveries, delivery.lease_token, expires
        )

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move the delivered message to the dead-letter store; post a dead reply."""
        await trio.lowlevel.checkpoint_if_cancelled()
        q, entry = self._held(delivery, "dead_letter")
        del q.leased[delivery.lease_token]
        entry.token = None
        if entry.gate is not None:
            entry.gate.release(q, entry)
        self._state.kill(q, entry, reason)

    # -- result channels -------------------------------------------------------
    async def receive_replies(self, channel: str, limit: int) -> list[Reply]:
        """Take up to ``limit`` replies of ``channel``; block until there is one."""
        if limit < 1:
            raise ValueError(f"receive_replies from {channel!r}: limit={limit!r} must be >= 1")
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            self._check_open()
            ch = self._state.channel(channel)
            replies = ch.replies
            if replies:
                if len(replies) <= limit:
                    out = list(replies)
                    replies.clear()
                else:
                    out = [replies.popleft() for _ in range(limit)]
                await trio.lowlevel.cancel_shielded_checkpoint()
                return out
            event = ch.event
            if event is None:
                event = ch.event = trio.Event()
            await event.wait()

    async def delete_channel(self, channel: str) -> None:
        """Drop ``channel``, its replies and its record; blocked receivers keep waiting."""
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_open()
        self._state.drop_replies(channel)
        self._state.deadlines.pop(channel, None)
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def open_channel(self, channel: str, ttl: float) -> None:
        """Record ``channel`` as live for ``ttl`` seconds."""
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_open()
        state = self._state
        now = trio.current_time()
        state.deadlines[channel] = now + ttl
        state.opened += 1
        if state.opened % SWEEP_EVERY == 0:  # forget long-dead channels, amortized
            old = now - DEAD_CHANNEL_RETENTION
            for name in [c for c, deadline in state.deadlines.items() if deadline <= old]:
                del state.deadlines[name]
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def keep_channel(self, channel: str, ttl: float) -> None:
        """Keep ``channel`` live for ``ttl`` more seconds; :class:`ChannelLost` if it is not."""
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_open()
        now = trio.current_time()
        deadline = self._state.deadlines.get(channel)
        if deadline is None:
            raise ChannelLost(channel, f"memory broker {self.url} has no record of it")
        if deadline <= now:
            raise ChannelLost(channel, f"it was closed or expired {now - deadline:.3f} s ago")
        self._state.deadlines[channel] = now + ttl
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def close_channel(self, channel: str) -> None:
        """Drop ``channel``'s replies and mark it dead from now on."""
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_open()
        self._state.drop_replies(channel)
        now = trio.current_time()
        deadlines = self._state.deadlines
        deadlines[channel] = min(deadlines.get(channel, now), now)
        await trio.lowlevel.cancel_shielded_checkpoint()

    # -- workers ---------------------------------------------------------------------
    async def heartbeat(self, worker: WorkerInfo, ttl: float) -> None:
        """Record ``worker`` as live for ``ttl`` seconds (``0``: remove it)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_open()
        now = trio.current_time()
        if ttl > 0:
            self._state.workers[worker.id] = (attrs.evolve(worker, seen_at=now), now + ttl)
        else:
            self._state.workers.pop(worker.id, None)
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def workers(self, queue: str | None = None) -> list[WorkerInfo]:
        """The live workers (of ``queue``, or all), sorted by queue and id."""
        await trio.lowlevel.checkpoint()
        self._check_open()
        now = trio.current_time()
        known = self._state.workers
        for worker_id in [k for k, (_, expires) in known.items() if expires <= now]:
            del known[worker_id]
        live = [info for info, _ in known.values() if queue is None or info.queue == queue]
        return sorted(live, key=lambda w: (w.queue, w.id))

    async def announce_schedule(self, schedule: ScheduleInfo, ttl: float) -> None:
        """Record ``schedule`` (by name) for ``ttl`` seconds."""
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_open()
        now = trio.current_time()
        self._state.schedules[schedule.name] = (attrs.evolve(schedule, seen_at=now), now + ttl)
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def schedules(self) -> list[ScheduleInfo]:
        """The schedules announced within their ``ttl``, by name."""
        await trio.lowlevel.checkpoint()
        self._check_open()
        now = trio.current_time()
        known = self._state.schedules
        for name in [n for n, (_, expires) in known.items() if expires <= now]:
            del known[name]
        return sorted((info for info, _ in known.values()), key=lambda i: i.name)

    # -- broadcast ---------------------------------------------------------------
    async def broadcast(self, topic: str, body: bytes) -> None:
        """Send ``body`` to every live subscription of ``topic``, in any broker of this name."""
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_open()
        for send in list(self._state.topics.get(topic, ())):
            try:
                send.send_nowait(body)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._state.topics[topic].discard(send)
        await trio.lowlevel.cancel_shielded_checkpoint()

    def subscribe(self, topic: str) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """Subscribe to ``topic``; the iterator ends when this broker closes."""
        return self._subscribe(topic)

    @asynccontextmanager
    async def _subscribe(self, topic: str) -> AsyncIterator[AsyncIterator[bytes]]:
        self._check_open()
        send, receive = trio.open_memory_channel[bytes](math.inf)
        topics = self._state.topics
        topics.setdefault(topic, set()).add(send)
        self._subscriptions.add(send)
        try:
            with receive:
                await trio.lowlevel.checkpoint()
                yield receive
        finally:
            send.close()
            self._subscriptions.discard(send)
            subscribers = topics.get(topic)
            if subscribers is not None:
                subscribers.discard(send)
                if not subscribers:
                    del topics[topic]

    # -- inspection and housekeeping --------------------------------------------
    def _queues(self, queue: str | None) -> list[Queue]:
        self._check_open()
        if queue is None:
            return list(self._state.queues.values())
        q = self._state.queues.get(queue)
        return [] if q is None else [q]

    async def stats(self) -> list[QueueStats]:
        """Counts per queue, sorted by name; expired leases count as queued.

        Of ``queued``, ``scheduled`` are delayed and ``held`` visible but more
        than their limit could hand out now (reckoned per queue).
        """
        now = trio.current_time()
        workers = await self.workers()
        gates = self._state.limits
        out = []
        for q in self._queues(None):
            q.reclaim(now)
            scheduled = len(q.delayed)
            queued = q.visible() + scheduled
            held_back = held(q, gates, now)
            running = len(q.leased)
            dead = len(q.dead)
            out.append(
                QueueStats(
                    q.name, queued, running, q.done, dead, scheduled=scheduled, held=held_back
                )
            )
        return count_workers(out, workers)

    async def dead_letters(
        self, queue: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters after ``offset``, of one queue or of all."""
        await trio.lowlevel.checkpoint()
        merged = heapq.merge(*(q.dead for q in self._queues(queue)))
        start = max(offset, 0)
        return [letter for _, letter in itertools.islice(merged, start, start + max(limit, 0))]

    async def requeue_dead(self, queue: str | None = None, message_id: str | None = None) -> int:
        """Put dead letters (of one message, if given) back at the end of their queues
        with a fresh count."""
        await trio.lowlevel.checkpoint_if_cancelled()
        count = 0
        for q in self._queues(queue):
            chosen = [e for e in q.dead if message_id in (None, e[1].message.id)]
            if chosen:
                count += len(chosen)
                for _, letter in chosen:
                    q.push(self._revived(letter.message))
                kept = [e for e in q.dead if message_id not in (None, e[1].message.id)]
                q.dead.clear()
                q.dead.extend(kept)
                q.notify()
        await trio.lowlevel.cancel_shielded_checkpoint()
        return count

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
        """Job records newest first, matching every filter given (see ``Jobs.find``)."""
        await trio.lowlevel.checkpoint()
        self._check_open()
        return self._state.jobs.find(
            trio.current_time(), queue=queue, status=status, operation=operation, key=key,
            limit=limit, offset=offset,
        )  # fmt: skip

    async def purge(self, queue: str | None = None) -> int:
        """Forget completed counts and dead letters; queued and leased stay."""
        await trio.lowlevel.checkpoint_if_cancelled()
        count = 0
        for q in self._queues(queue):
            count += q.done + len(q.dead)
            q.done = 0
            q.dead.clear()
        if queue is None:
            count += self._purge_dead_channels(trio.current_time())
            self._state.jobs.purge()  # finished jobs' records (counted above as done/dead)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return count

    def _purge_dead_channels(self, now: float) -> int:
        """Drop dead channels' replies (counted) and their old records."""
        count = 0
        deadlines = self._state.deadlines
        for channel, deadline in list(deadlines.items()):
            if deadline <= now:
                count += self._state.drop_replies(channel)
                if deadline <= now - DEAD_CHANNEL_RETENTION:
                    del deadlines[channel]
        return count

    # -- jobs by id ---------------------------------------------------------------------
    async def submit(
        self,
        queue: str,
        message: Message,
        *,
        delay: float = 0.0,
        key: str | None = None,
        operation: str = "",
    ) -> tuple[JobRecord, bool]:
        """Publish ``message`` as a tracked job (or return the live job holding ``key``)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_open()
        if not delay >= 0.0:
            raise ValueError(f"submit to {queue!r}: delay={delay!r} must be >= 0")
        jobs, now = self._state.jobs, trio.current_time()
        held = jobs.get(message.id, now) or (None if key is None else jobs.live_with_key(key))
        if held is not None:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return held.record(now), False
        job = Job(message.id, queue, now=now, delay=delay, key=key, priority=message.priority,
                  ttl=self.url.result_ttl, operation=operation)  # fmt: skip
        jobs.add(job, now)
        q = self._state.queue(queue)
        entry = Entry(message, job=job)
        if delay > 0.0:
            heapq.heappush(q.delayed, (now + delay, next(self._state.seq), entry))
        else:
            q.push(entry)
        q.notify()
        await trio.lowlevel.cancel_shielded_checkpoint()
        return job.record(now), True

    async def job(self, job_id: str) -> JobRecord | None:
        """The job's record, or ``None`` if unknown or expired."""
        await trio.lowlevel.checkpoint()
        self._check_open()
        now = trio.current_time()
        job = self._state.jobs.get(job_id, now)
        return None if job is None else job.record(now)

    async def wait_job(self, job_id: str, timeout: float) -> JobRecord | None:
        """Wait up to ``timeout`` seconds for the job to be final; its record then."""
        await trio.lowlevel.checkpoint()
        self._check_open()
        job = self._state.jobs.get(job_id, trio.current_time())
        if job is None:
            return None
        with trio.move_on_after(timeout):
            await job.finished.wait()
        return job.record(trio.current_time())

    async def abort_job(self, job_id: str) -> JobRecord | None:
        """Abort a job that has not finished (a waiting one never runs); its record after."""
        await trio.lowlevel.checkpoint()
        self._check_open()
        now = trio.current_time()
        job = self._state.jobs.get(job_id, now)
        if job is None:
            return None
        job.finish(RecordStatus.ABORTED, now, error="aborted by id")
        return job.record(now)

    def _revived(self, message: Message) -> Entry:
        """A dead letter going back on its queue, linked to its job's record again."""
        now = trio.current_time()
        job = self._state.jobs.get(message.id, now)
        if job is not None:
            job.revive(now)
        return Entry(message, job=job)
