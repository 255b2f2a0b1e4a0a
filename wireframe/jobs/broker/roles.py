"""The broker protocol by role: small protocols a broker implements together as :class:`Broker`.

A broker moves opaque bytes. It knows nothing of operations, jobs or results:
the runtime encodes a job into a :class:`~wireframe.jobs.broker.Message` body,
the worker decodes it, and the worker's encoded result travels back as the body
of a :class:`~wireframe.jobs.broker.Reply` on the message's ``reply_to``
channel. Keeping the broker ignorant of the codec is what lets memory, SQLite
and Redis sit behind the same runtime unchanged.

One object serves several users, each needing a part of it, so the contract is
cut by role, and a user types against the roles it needs — which says what it
needs and lets another object stand in for it:

* :class:`BrokerConnection` — what every open broker is: its URL, its clock,
  ``ping`` and ``aclose``;
* :class:`WorkQueue` — queues of messages handed out under leases (publish,
  consume, complete, abandon, extend, dead-letter): the runtime publishes, the
  worker consumes;
* :class:`ReplyChannels` — result channels and the liveness of a run's channel:
  the runtime receives its run's replies there;
* :class:`Broadcast` — topics every subscriber hears (the abort signal);
* :class:`Presence` — workers announcing themselves with heartbeats, and
  schedulers their schedules;
* :class:`JobStore` — jobs submitted on their own, kept by id (their records,
  dedup keys, waiting for one, aborting one): ``Runtime.submit`` and handles;
* :class:`BrokerAdmin` — inspection and housekeeping (counts, dead letters,
  requeue, purge, job records by page): ``wireframe jobs stats|dead|retry|purge`` and the live view's
  queue poller use only this, and so should a dashboard.

:class:`Broker` is their union, what ``open_broker`` returns and what a broker
implements. Each role has its conformance class in ``wireframe.testing``
(``WorkQueueConformance``...; ``BrokerConformance`` runs them all).

*Room for more roles.* The durable orchestrations' store (instances, their
history and inbox, taken under leases and committed atomically) is to be a
role of its own, not a part of :class:`Broker`: its protocol belongs in
``wireframe/durable/`` beside the orchestration worker (``jobs`` knows nothing
of orchestrations, so it cannot live here), a broker that keeps a store
implements that protocol on the same object (a broker without one still serves
jobs), ``wireframe.durable`` finds it with ``isinstance`` on what
``open_broker`` returned, and its conformance class joins ``wireframe.testing``
beside the others without joining ``BrokerConformance``. Any later role (the
scheduler's ticks, say) follows the same path.

Every wait is a trio checkpoint and can be cancelled. Times are seconds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol, runtime_checkable

from wireframe.jobs.broker.messages import (
    DeadLetter,
    Delivery,
    JobRecord,
    Message,
    QueueStats,
    RecordStatus,
    Reply,
    ScheduleInfo,
    WorkerInfo,
)
from wireframe.jobs.broker.urls import BrokerURL
from wireframe.jobs.limits import Limit

__all__ = [
    "DEAD_CHANNEL_RETENTION",
    "FIND_JOBS_SCAN",
    "Broadcast",
    "Broker",
    "BrokerAdmin",
    "BrokerConnection",
    "JobStore",
    "Presence",
    "ReplyChannels",
    "WorkQueue",
]

#: How long (seconds) a dead run channel's record is kept: its orphaned jobs
#: still queued within that time are skipped, not run.
DEAD_CHANNEL_RETENTION = 86_400.0

#: How many of the newest job records a filtered ``find_jobs`` may look through
#: on a broker without an index for the filter (Redis): a search stays fast
#: whatever the store holds, at the price of not finding older matches.
FIND_JOBS_SCAN = 10_000


@runtime_checkable
class BrokerConnection(Protocol):
    """An open broker: the URL it was opened with, its clock, a ping and a close."""

    url: BrokerURL

    def clock(self) -> float:
        """The clock leases and delays are measured on (trio's for memory)."""
        ...

    async def ping(self) -> None:
        """Return when the broker answers; raise ``BrokerUnavailable`` if not."""
        ...

    async def aclose(self) -> None:
        """Release connections and threads. Idempotent."""
        ...


@runtime_checkable
class WorkQueue(Protocol):
    """Queues of messages handed out under leases: at least once, never lost.

    * **At-least-once with leases.** :meth:`consume` hands out each visible
      message to exactly one consumer and leases it for the URL's ``lease``
      seconds. A lease that runs out makes the message visible again (its worker
      is presumed dead). :meth:`extend` renews a lease. Completing, abandoning
      or extending a delivery whose lease was lost raises ``LockLost``, and a
      completion that raised posts no reply.
    * **Replies exactly once per completion.** :meth:`complete` removes the
      message and posts its reply *atomically*: either both happen or neither.
    * **Dead letters.** A message delivered more than ``max_deliveries`` times
      is not handed out again: ``consume`` moves it to the dead-letter store
      with the reason, and posts a dead ``Reply`` to its ``reply_to`` channel so
      that nobody waits for it forever. :meth:`dead_letter` does the same on
      request (a worker that cannot decode a message).
    * **Queues are created idempotently.**
    * A message replying to a dead run channel (see :class:`ReplyChannels`) is
      an orphan: ``consume`` settles it without handing it out.
    * **Limits across consumers.** A message whose ``limit`` names a limit
      defined with :meth:`define_limit` is handed out only within it (see
      :mod:`wireframe.jobs.limits`): a token from its bucket, a free slot among
      its leased messages in every queue. A held message waits in its place,
      uses up no delivery and holds back none of the messages behind it that
      its limit does not hold; ``consume`` sleeps until one may go.
    """

    async def define_limit(self, limit: Limit) -> None:
        """Record ``limit`` under its name, replacing an earlier definition (idempotent).

        A new definition keeps the bucket's tokens (capped at the new rate) and
        the slots in use.
        """
        ...

    async def declare_queue(self, queue: str) -> None:
        """Create ``queue`` if it does not exist (idempotent)."""
        ...

    async def delete_queue(self, queue: str) -> None:
        """Delete ``queue`` and everything in it. Unknown queues are ignored."""
        ...

    async def publish(self, queue: str, messages: Sequence[Message], *, delay: float = 0.0) -> None:
        """Append ``messages`` to ``queue`` in order, visible after ``delay``.

        One call is one round trip where the backend allows it: the runtime
        publishes in batches. The queue is declared if needed.
        """
        ...

    async def consume(self, queue: str, limit: int) -> list[Delivery]:
        """Lease up to ``limit`` visible messages, oldest first.

        Blocks (cancellably) until at least one is available; never returns an
        empty list. Messages whose lease expired are visible again. A message
        about to be delivered more than ``max_deliveries`` times is moved to
        the dead-letter store instead (posting a dead reply) and not returned.
        """
        ...

    async def complete(self, delivery: Delivery, reply: bytes | None) -> None:
        """Finish a delivery: remove it and post ``Reply(id, body=reply)``.

        ``reply=None`` posts nothing (e.g. the job was aborted). Atomic.
        Raises ``LockLost`` if this lease is no longer current.
        """
        ...

    async def abandon(
        self, delivery: Delivery, *, delay: float = 0.0, body: bytes | None = None
    ) -> None:
        """Give a delivery back: visible again after ``delay``.

        With ``body`` the message's body is replaced and its delivery count
        reset to zero — that is how a retry carries its next attempt number.
        Raises ``LockLost`` if this lease is no longer current.
        """
        ...

    async def extend(self, delivery: Delivery) -> Delivery:
        """Renew the lease for another ``lease`` seconds from now.

        Returns the delivery with its new ``lease_expires`` (and, where the
        backend needs it, a new token). Raises ``LockLost``.
        """
        ...

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move a delivery to the dead-letter store and post a dead reply.

        Raises ``LockLost`` if this lease is no longer current.
        """
        ...


@runtime_checkable
class ReplyChannels(Protocol):
    """Result channels: each reply taken exactly once, and a run's channel alive while it is.

    **Run channels live while their run does.** A directive run opens its
    result channel with :meth:`open_channel` and keeps it alive with
    :meth:`keep_channel`; :meth:`close_channel` ends it. A channel that was
    closed, or not kept alive within its ``ttl`` (its orchestrator died), is
    *dead*: a message replying to it is an orphan that ``consume`` settles
    without handing it out, a completion posts nothing to it, and ``purge``
    deletes its replies. A channel never opened is unmanaged and behaves as a
    plain mailbox. ``keep_channel`` raises ``ChannelLost`` when the broker no
    longer has the channel's record: the broker lost its state (a Redis
    restarted without persistence), so the run's jobs in flight are gone too.
    """

    async def receive_replies(self, channel: str, limit: int) -> list[Reply]:
        """Take up to ``limit`` replies posted to ``channel``, in arrival order.

        Blocks (cancellably) until at least one is there. A reply is taken by
        exactly one call. Replies posted before anyone listened are kept (for
        durable brokers: across restarts) until taken or the channel deleted.
        """
        ...

    async def delete_channel(self, channel: str) -> None:
        """Drop a channel, any replies left in it and its record: it is unmanaged again."""
        ...

    async def open_channel(self, channel: str, ttl: float) -> None:
        """Record ``channel`` as live for ``ttl`` seconds (a run's result channel)."""
        ...

    async def keep_channel(self, channel: str, ttl: float) -> None:
        """Keep an open channel live for ``ttl`` more seconds.

        Raises ``ChannelLost`` if the broker has no record of it (it lost its
        state) or it is dead (closed, or not kept alive in time).
        """
        ...

    async def close_channel(self, channel: str) -> None:
        """End a channel: drop its replies; it is dead from now on (see the class doc)."""
        ...


@runtime_checkable
class Broadcast(Protocol):
    """Topics: a broadcast reaches every current subscriber, not one of them."""

    async def broadcast(self, topic: str, body: bytes) -> None:
        """Send ``body`` to every current subscriber of ``topic``."""
        ...

    def subscribe(self, topic: str) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """Subscribe to ``topic``; the subscription is live once entered.

        ``async with broker.subscribe("abort") as bodies: async for b in bodies``.
        Anything broadcast after ``__aenter__`` returned is received.
        """
        ...


@runtime_checkable
class Presence(Protocol):
    """Workers and schedulers announce themselves; one not heard from within its ``ttl``
    is presumed gone."""

    async def heartbeat(self, worker: WorkerInfo, ttl: float) -> None:
        """Record ``worker`` as live for ``ttl`` seconds; ``ttl=0`` removes it (it stopped)."""
        ...

    async def workers(self, queue: str | None = None) -> list[WorkerInfo]:
        """The live workers (of one queue, or all), sorted by queue and id."""
        ...

    async def announce_schedule(self, schedule: ScheduleInfo, ttl: float) -> None:
        """Record ``schedule`` (by name; the last announcement wins) for ``ttl`` seconds."""
        ...

    async def schedules(self) -> list[ScheduleInfo]:
        """The schedules announced within their ``ttl``, sorted by name."""
        ...


@runtime_checkable
class BrokerAdmin(Protocol):
    """Inspection and housekeeping: what tools (the CLI, a dashboard) need, and no more.

    ``purge`` deletes finished state (completed records, dead letters, replies
    nobody will take) and never a queued or leased message.
    """

    async def stats(self) -> list[QueueStats]:
        """Counts per known queue with its live workers, sorted by queue name."""
        ...

    async def dead_letters(
        self, queue: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters after the first ``offset``, of one queue or of all.

        Oldest first (by when they died), so ``offset`` pages through them.
        """
        ...

    async def requeue_dead(self, queue: str | None = None, message_id: str | None = None) -> int:
        """Put dead letters back on their queues (delivery count reset); count them.

        With ``message_id`` only the dead letters of that message (a dashboard's
        "retry this one").
        """
        ...

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
        """The records of jobs submitted on their own, newest first, matching every filter given.

        ``offset`` skips that many matches (pages). Expired records are not found.
        A broker may bound the work of a filtered search (Redis looks through the
        newest :data:`FIND_JOBS_SCAN` records); an unfiltered page costs its size.
        """
        ...

    async def purge(self, queue: str | None = None) -> int:
        """Delete finished state (completed records, dead letters); count it.

        Without ``queue`` it also deletes the replies of dead channels (counted)
        and the records of channels dead longer than
        :data:`DEAD_CHANNEL_RETENTION`. Never touches a queued or leased message.
        """
        ...


@runtime_checkable
class JobStore(Protocol):
    """Jobs submitted on their own, kept by id: any process on the broker reads,
    waits for and aborts them.

    A job submitted by itself (``Runtime.submit``) is a *tracked* message: besides
    the message on its queue, the broker keeps a :class:`JobRecord` under the job's
    id that any process on the same broker can read, wait for and abort. The
    broker moves the record along as the message moves — consume makes it
    ``running``, complete makes it ``done`` with the result body, a retry makes it
    ``queued`` (or ``scheduled``) again, a dead letter makes it ``dead`` — in the
    same atomic step as the message's own change, so the record never disagrees
    with the queue. A finished record is kept for the URL option ``result_ttl``
    (seconds, default one day), then expires; ``purge`` removes finished records.

    The broker keeps result bodies opaque, like everything else it moves: whether
    a ``done`` job succeeded or failed is the codec's business
    (:class:`~wireframe.jobs.handles.JobHandle` decodes it).

    A dedup ``key``: while a job holding a key is scheduled, queued or running,
    submitting another job with the same key publishes nothing and returns the
    live job's record; once that job finishes the key is free again.
    """

    async def submit(
        self,
        queue: str,
        message: Message,
        *,
        delay: float = 0.0,
        key: str | None = None,
        operation: str = "",
    ) -> tuple[JobRecord, bool]:
        """Publish ``message`` as a tracked job on ``queue``, visible after ``delay``.

        Returns its record and True; or, when a job with the message's id is
        known (live, or finished within ``result_ttl``), or ``key`` is held by a
        live job, that job's record and False: nothing is published. (So a
        submit repeated with the same id — a schedule's tick, a retried web
        request — makes one job.) ``operation`` is a label the record keeps
        (the runtime gives the operation's name).
        """
        ...

    async def job(self, job_id: str) -> JobRecord | None:
        """The job's record, or ``None`` if it is unknown (or expired)."""
        ...

    async def wait_job(self, job_id: str, timeout: float) -> JobRecord | None:
        """Wait (cancellably) up to ``timeout`` seconds for the job to be final.

        Returns its record as it is then (final, or not yet), or ``None`` if
        the job is unknown (or expired). Wakes when the job finishes; any
        number of waiters may wait for one job, any number of times.
        """
        ...

    async def abort_job(self, job_id: str) -> JobRecord | None:
        """Abort a job that has not finished: a queued or scheduled one is taken off
        its queue and never runs; a running one is marked aborted (its worker's
        late result is dropped; the runtime also asks the worker to cancel it).

        Returns the record after the abort (a finished job's is unchanged), or
        ``None`` if unknown.
        """
        ...


@runtime_checkable
class Broker(
    BrokerConnection,
    WorkQueue,
    ReplyChannels,
    Broadcast,
    Presence,
    BrokerAdmin,
    JobStore,
    Protocol,
):
    """A whole broker: every role at once, what ``open_broker`` returns.

    A message store with leases, result channels, broadcast, presence and
    administration; see each role for its part of the contract.
    Implementations: ``wireframe.jobs.brokers.memory``, ``.sqlite``, ``.redis``,
    and any broker a distribution registers (see ``open_broker``).
    """
