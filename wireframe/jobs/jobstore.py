"""Jobs on their own, as a broker keeps them: one record per submitted job, by id.

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

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import attrs

if TYPE_CHECKING:  # broker.py's Broker protocol includes this role: no import cycle
    from wireframe.jobs.broker import Message

__all__ = ["FINAL", "LIVE", "JobRecord", "JobStore", "RecordStatus"]


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


@runtime_checkable
class JobStore(Protocol):
    """The broker role that keeps tracked jobs by id (see the module doc)."""

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
