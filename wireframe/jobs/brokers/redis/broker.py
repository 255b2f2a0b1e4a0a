"""The Redis broker itself: the Broker protocol, joining the parts that implement it.

:class:`RedisBroker` owns one :class:`.Connection` (three coredis clients, calls that
retry, blocking reads that can be cancelled) and the names of its keys
(:class:`.Keys`), and hands each call of the protocol to the part of its role: the
work queue to :class:`.Queues` (declare, publish, consume) and :class:`.Leases` (the
ends of a lease), reply channels to :class:`.Channels`, worker presence to
:class:`.WorkerRecords`, broadcast to :class:`.Topics`, the job store to
:class:`.Jobs`, administration to :class:`.Admin`, and ping and close to the
connection; the orchestration store's methods come from the mixin
:class:`.RedisOrchestrationStore`. Each part registers its own
Lua scripts (:mod:`.scripts`) and keeps its own state; the broker keeps none.

*Clock.* Leases and deadlines are measured by Redis (its ``TIME``, and a PEL entry's
idle time); a delivery's ``lease_expires`` is reported on the wall clock.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager

from wireframe.jobs.broker import (
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
from wireframe.jobs.brokers.redis import options
from wireframe.jobs.brokers.redis.admin import Admin
from wireframe.jobs.brokers.redis.broadcast import Topics
from wireframe.jobs.brokers.redis.channels import Channels
from wireframe.jobs.brokers.redis.connection import Connection
from wireframe.jobs.brokers.redis.durable import RedisOrchestrationStore
from wireframe.jobs.brokers.redis.jobs import Jobs
from wireframe.jobs.brokers.redis.keys import Keys
from wireframe.jobs.brokers.redis.leases import Leases
from wireframe.jobs.brokers.redis.limits import Limits
from wireframe.jobs.brokers.redis.queues import Queues
from wireframe.jobs.brokers.redis.values import ms
from wireframe.jobs.brokers.redis.workers import WorkerRecords
from wireframe.jobs.limits import Limit

__all__ = ["RedisBroker"]


class RedisBroker(RedisOrchestrationStore):
    """A :class:`~wireframe.jobs.broker.Broker` on one Redis server (see the package doc).

    It is also an :class:`~wireframe.durable.store.OrchestrationStore` (the mixin
    :class:`.RedisOrchestrationStore`).

    Make one with :func:`~wireframe.jobs.brokers.redis.open`; it is usable inside
    that ``async with`` block.
    """

    def __init__(self, url: BrokerURL) -> None:
        self.url = url
        self.db = options.database(url)
        self.prefix = str(url.options["prefix"])
        self.reconnect = float(url.options["reconnect"])  # type: ignore[arg-type]
        self.poll = float(url.options["poll"])  # type: ignore[arg-type]
        self.lease_ms = ms(url.lease)
        self.claim_interval = min(self.poll, url.lease / 4)
        #: This broker instance's consumer name in every consumer group.
        self.consumer = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        tls = options.tls_context(url)
        self._keys = keys = Keys(self.prefix)
        self._conn = conn = Connection(
            url, db=self.db, tls=tls, reconnect=self.reconnect, poll=self.poll
        )
        self._leases = Leases(conn, keys, lease=url.lease, clock=self.clock)
        self._limits = Limits(conn, keys, lease_ms=self.lease_ms)
        self._queue = Queues(
            conn,
            keys,
            self._leases,
            self._limits,
            url=url,
            consumer=self.consumer,
            claim_interval=self.claim_interval,
            clock=self.clock,
        )
        self._channels = Channels(conn, keys, self.consumer)
        self._records = WorkerRecords(conn, keys)
        self._topics = Topics(conn, keys)
        self._jobs = Jobs(conn, keys, url, self.consumer)
        self._admin = Admin(conn, keys)
        self._init_orchestrations()

    def __repr__(self) -> str:
        return f"RedisBroker({str(self.url)!r}, consumer={self.consumer!r})"

    # -- lifecycle ---------------------------------------------------------------------

    async def _start(self) -> None:
        await self._conn.start()

    def clock(self) -> float:
        """Wall-clock seconds: leases are measured by Redis, reported on this clock."""
        return time.time()

    async def ping(self) -> None:
        """Return when Redis answers; raise BrokerUnavailable at once if it does not."""
        await self._conn.ping()

    async def aclose(self) -> None:
        """Hand back the leases this broker still holds, then close every connection.

        Idempotent.
        """
        if self._conn.closed:
            return
        self._jobs.replies.forget()
        try:
            await self._queue.release_leases()
        finally:
            await self._conn.aclose()

    # -- the work queue ------------------------------------------------------------------

    async def define_limit(self, limit: Limit) -> None:
        """Record ``limit`` by name (idempotent): its bucket's tokens (capped at the new
        rate) and the slots in use are kept, and what it now lets go is promoted."""
        await self._limits.define(limit)

    async def declare_queue(self, queue: str) -> None:
        """Create ``queue``'s stream and consumer group if missing."""
        await self._queue.declare(queue)

    async def delete_queue(self, queue: str) -> None:
        """Delete every key of ``queue``."""
        await self._queue.delete(queue)

    async def publish(self, queue: str, messages: Sequence[Message], *, delay: float = 0.0) -> None:
        """Append ``messages`` in one script call (one round trip per batch)."""
        await self._queue.publish(queue, messages, delay=delay)

    async def consume(self, queue: str, limit: int) -> list[Delivery]:
        """Lease up to ``limit`` messages: expired leases first, then new ones; block if none."""
        return await self._queue.consume(queue, limit)

    async def complete(self, delivery: Delivery, reply: bytes | None) -> None:
        """Acknowledge, delete and post the reply in one lease-checked script (group-committed)."""
        await self._leases.complete(delivery, reply)

    async def abandon(
        self, delivery: Delivery, *, delay: float = 0.0, body: bytes | None = None
    ) -> None:
        """Give the message back (as a new entry, or into the delayed set), lease-checked."""
        await self._leases.abandon(delivery, delay=delay, body=body)

    async def extend(self, delivery: Delivery) -> Delivery:
        """Reset the PEL entry's idle time (XCLAIM to ourselves), lease-checked."""
        return await self._leases.extend(delivery)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move the delivery to the dead-letter stream and post a dead reply, lease-checked."""
        await self._leases.dead_letter(delivery, reason, refused=False)

    # -- reply channels ------------------------------------------------------------------

    async def receive_replies(self, channel: str, limit: int) -> list[Reply]:
        """Take up to ``limit`` replies; wait if none; a cancelled call never loses one."""
        return await self._channels.receive(channel, limit)

    async def delete_channel(self, channel: str) -> None:
        """Delete the channel's list, its record (and this broker's inboxes of it)."""
        await self._channels.delete(channel)

    async def open_channel(self, channel: str, ttl: float) -> None:
        """Record ``channel`` as live for ``ttl`` seconds."""
        await self._channels.open(channel, ttl)

    async def keep_channel(self, channel: str, ttl: float) -> None:
        """Keep ``channel`` live for ``ttl`` more seconds; :class:`ChannelLost` if it is not."""
        await self._channels.keep(channel, ttl)

    async def close_channel(self, channel: str) -> None:
        """Drop ``channel``'s replies and make it dead from now on."""
        await self._channels.close(channel)

    # -- workers -------------------------------------------------------------------------

    async def heartbeat(self, worker: WorkerInfo, ttl: float) -> None:
        """Record ``worker`` as live for ``ttl`` seconds (``0``: remove it)."""
        await self._records.heartbeat(worker, ttl)

    async def workers(self, queue: str | None = None) -> list[WorkerInfo]:
        """The live workers (of ``queue``, or all), sorted by queue and id."""
        return await self._records.live(queue)

    async def announce_schedule(self, schedule: ScheduleInfo, ttl: float) -> None:
        """Record ``schedule`` (by name) for ``ttl`` seconds."""
        await self._records.announce_schedule(schedule, ttl)

    async def schedules(self) -> list[ScheduleInfo]:
        """The schedules announced within their ``ttl``, by name."""
        return await self._records.schedules()

    # -- broadcast -----------------------------------------------------------------------

    async def broadcast(self, topic: str, body: bytes) -> None:
        """PUBLISH to the topic's pub/sub channel: every live subscriber hears it."""
        await self._topics.send(topic, body)

    def subscribe(self, topic: str) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """Subscribe on a dedicated pub/sub connection; live once entered."""
        return self._topics.subscribe(topic)

    # -- administration ------------------------------------------------------------------

    async def stats(self) -> list[QueueStats]:
        """Counts per known queue, in one script call, with the live workers of each."""
        return count_workers(await self._admin.stats(), await self.workers())

    async def dead_letters(
        self, queue: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters after ``offset``, of one queue or of all."""
        return await self._admin.dead_letters(queue, limit, offset)

    async def requeue_dead(self, queue: str | None = None, message_id: str | None = None) -> int:
        """Put dead letters (of one message, if given) back on their queues; count them."""
        return await self._admin.requeue_dead(queue, message_id)

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
        """Job records newest first, matching every filter given."""
        return await self._jobs.find(
            queue=queue, status=status, operation=operation, key=key, limit=limit, offset=offset
        )

    async def purge(self, queue: str | None = None) -> int:
        """Delete dead letters and completed-message counters (without ``queue``: finished
        job records too); queued/leased stay."""
        return await self._admin.purge(queue)

    # -- the job store -------------------------------------------------------------------

    async def submit(
        self,
        queue: str,
        message: Message,
        *,
        delay: float = 0.0,
        key: str | None = None,
        operation: str = "",
    ) -> tuple[JobRecord, bool]:
        """Publish ``message`` as a tracked job, with its record, in one script call
        (or return the job its id or ``key`` names, publishing nothing)."""
        return await self._jobs.submit(queue, message, delay=delay, key=key, operation=operation)

    async def job(self, job_id: str) -> JobRecord | None:
        """The job's record, or ``None`` if unknown or expired."""
        return await self._jobs.job(job_id)

    async def wait_job(self, job_id: str, timeout: float) -> JobRecord | None:
        """Wait up to ``timeout`` seconds for the job to be final (woken by its finish)."""
        return await self._jobs.wait(job_id, timeout)

    async def abort_job(self, job_id: str) -> JobRecord | None:
        """Abort a job that has not finished (a waiting one never runs); its record after."""
        return await self._jobs.abort(job_id)
