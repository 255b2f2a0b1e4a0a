"""What crosses the broker protocol: messages, deliveries, replies, and what inspection shows.

Plain frozen attrs classes of bytes, strings and numbers: a broker stores and
returns them without knowing the codec that made the bytes (the runtime encodes
a job into a :class:`Message` body; the worker's encoded result comes back as a
:class:`Reply` body). Times named ``..._at`` are wall-clock epoch seconds; lease
expiries and ``seen_at`` are readings of the broker's own clock
(:meth:`~wireframe.jobs.broker.BrokerConnection.clock`).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import attrs

__all__ = [
    "DURABLE_INBOX_PREFIX",
    "FINAL",
    "LIVE",
    "DeadLetter",
    "Delivery",
    "JobRecord",
    "Message",
    "QueueStats",
    "RecordStatus",
    "Reply",
    "ScheduleInfo",
    "WorkerInfo",
    "count_workers",
]

#: A message whose ``reply_to`` starts with this is an orchestration's activity:
#: its reply goes to that instance's inbox (the broker's orchestration store),
#: in the same step as the completion, not to a result channel.
DURABLE_INBOX_PREFIX = "wireframe.durable.inbox:"


@attrs.frozen
class Message:
    """One unit of work as the broker sees it.

    ``id`` is chosen by the publisher and unique within the broker (the runtime
    uses the job id). ``reply_to`` names the result channel that receives the
    :class:`Reply` when the message completes or dies; ``""`` means nobody
    listens. Within a queue, a message of higher ``priority`` is consumed
    first; equal priorities stay first in, first out. ``limit`` names the
    :class:`~wireframe.jobs.limits.Limit` (defined with
    ``WorkQueue.define_limit``) the message is handed out within; ``""`` or a
    name never defined means no limit.
    """

    id: str
    body: bytes
    reply_to: str = ""
    priority: int = 0
    limit: str = ""


@attrs.frozen
class Delivery:
    """A leased message handed to one consumer.

    ``deliveries`` counts how often the message has been handed out, this time
    included (1 on the first delivery). ``lease_token`` identifies this lease;
    it is the broker's business what it contains. ``lease_expires`` is the
    broker's clock reading (see ``Broker.clock``) when the lease runs out.
    """

    message: Message
    queue: str
    deliveries: int
    lease_token: str
    lease_expires: float


@attrs.frozen
class Reply:
    """What arrives on a result channel for one message.

    Exactly one of ``body`` (the completed message's result, possibly empty) or
    ``dead_reason`` (it went to the dead-letter store) is set.
    """

    message_id: str
    body: bytes | None = None
    dead_reason: str | None = None

    @property
    def is_dead(self) -> bool:
        """True when the message died instead of completing."""
        return self.dead_reason is not None


@attrs.frozen
class DeadLetter:
    """A message in the dead-letter store, with why it is there."""

    message: Message
    queue: str
    reason: str
    deliveries: int
    died_at: float  # wall-clock seconds since the epoch


@attrs.frozen
class QueueStats:
    """Counts for one queue, for ``wireframe jobs stats`` and the live view."""

    queue: str
    queued: int  # waiting: visible now, delayed or held back by a limit
    running: int  # leased
    done: int  # completed (or settled as orphans) and not yet purged
    dead: int
    workers: int = 0  # live workers consuming this queue
    scheduled: int = 0  # of ``queued``: delayed, not visible yet
    held: int = 0  # of ``queued``: visible but held back by a rate or concurrency limit


@attrs.frozen
class WorkerInfo:
    """A worker as it announces itself with ``Broker.heartbeat``.

    ``seen_at`` is the broker's clock reading of the last heartbeat; the broker
    sets it (a worker sends 0).
    """

    id: str
    queue: str
    concurrency: int
    host: str
    pid: int
    started_at: float  # wall-clock seconds since the epoch
    running: int = 0  # jobs running at the last heartbeat
    seen_at: float = 0.0


@attrs.frozen
class ScheduleInfo:
    """A schedule as its scheduler announces it (``Broker.announce_schedule``).

    ``schedule`` says when it fires, in words (``cron 0 3 * * * Europe/Paris``,
    ``every 30 s``); times are wall-clock seconds since the epoch; ``seen_at``
    is the broker's clock reading of the last announcement (the broker sets it).
    """

    name: str
    schedule: str
    operation: str
    queue: str
    next_at: float
    last_at: float | None = None
    scheduler: str = ""
    seen_at: float = 0.0


def count_workers(stats: Sequence[QueueStats], workers: Sequence[WorkerInfo]) -> list[QueueStats]:
    """``stats`` with each queue's live worker count filled in from ``workers``.

    A queue that live workers consume but that has no stats yet is listed too.
    """
    per_queue: dict[str, int] = {}
    for worker in workers:
        per_queue[worker.queue] = per_queue.get(worker.queue, 0) + 1
    out = [attrs.evolve(s, workers=per_queue.pop(s.queue, 0)) for s in stats]
    out += [QueueStats(q, 0, 0, 0, 0, n) for q, n in per_queue.items()]
    return sorted(out, key=lambda s: s.queue)


class RecordStatus(enum.Enum):
    """Where a tracked job is, as its broker sees it."""

    SCHEDULED = "scheduled"  # delayed: not visible before ``visible_at``
    QUEUED = "queued"  # visible, waiting for a worker
    RUNNING = "running"  # leased by a worker
    DONE = "done"  # completed: ``result`` holds the reply body
    ABORTED = "aborted"  # aborted by id before it finished
    DEAD = "dead"  # dead-lettered: ``error`` says why


#: Statuses of a job that may still run (a dedup key is held while in one).
LIVE = frozenset({RecordStatus.SCHEDULED, RecordStatus.QUEUED, RecordStatus.RUNNING})
#: Statuses a job never leaves.
FINAL = frozenset({RecordStatus.DONE, RecordStatus.ABORTED, RecordStatus.DEAD})


@attrs.frozen
class JobRecord:
    """What a broker knows of one tracked job. Times are the broker's clock readings."""

    id: str
    queue: str
    status: RecordStatus
    enqueued_at: float
    visible_at: float  # when it was (or will be) visible to consumers
    key: str | None = None
    priority: int = 0
    operation: str = ""  # the operation's registry name, as the submitter said
    attempts: int = 0  # deliveries so far
    started_at: float | None = None  # the first delivery
    finished_at: float | None = None
    worker: str | None = None  # the consumer of the last delivery
    result: bytes | None = None  # the reply body, once done
    error: str | None = None  # why it is dead or aborted
    expires_at: float | None = None  # when a finished record goes

    @property
    def final(self) -> bool:
        """True once the job can change no more."""
        return self.status in FINAL
