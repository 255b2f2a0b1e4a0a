"""The memory broker's records of jobs submitted by themselves (the job store role).

A :class:`Job` is the mutable record behind one tracked message; the queue's
entry points at it, so every step of the message (leased, given back, done,
dead) moves the record in the same call. :class:`Jobs` indexes records by id
and dedup key and drops finished ones once their ``result_ttl`` has passed.
Times are trio's clock.
"""

from __future__ import annotations

from typing import Final

import trio

from wireframe.jobs.broker import FINAL, LIVE, JobRecord, RecordStatus

__all__ = ["Job", "Jobs"]

#: Every this many submits, expired records are swept.
_SWEEP_EVERY: Final = 1024


class Job:
    """One tracked job's record, changed in place as its message moves."""

    __slots__ = (
        "attempts",
        "enqueued_at",
        "error",
        "expires_at",
        "finished",
        "finished_at",
        "id",
        "key",
        "operation",
        "priority",
        "queue",
        "result",
        "started_at",
        "status",
        "ttl",
        "visible_at",
        "worker",
    )

    def __init__(
        self, job_id: str, queue: str, *, now: float, delay: float, key: str | None, priority: int,
        ttl: float, operation: str,
    ) -> None:  # fmt: skip
        self.id = job_id
        self.queue = queue
        self.operation = operation
        self.key = key
        self.priority = priority
        self.ttl = ttl
        self.enqueued_at = now
        self.visible_at = now + delay
        self.status = RecordStatus.SCHEDULED if delay > 0 else RecordStatus.QUEUED
        self.attempts = 0
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.worker: str | None = None
        self.result: bytes | None = None
        self.error: str | None = None
        self.expires_at: float | None = None
        self.finished = trio.Event()  # set once, when the record becomes final

    def record(self, now: float) -> JobRecord:
        """A frozen snapshot of this record as of ``now``."""
        status = self.status
        if status is RecordStatus.SCHEDULED and self.visible_at <= now:
            status = RecordStatus.QUEUED
        return JobRecord(
            id=self.id,
            queue=self.queue,
            status=status,
            enqueued_at=self.enqueued_at,
            visible_at=self.visible_at,
            key=self.key,
            priority=self.priority,
            operation=self.operation,
            attempts=self.attempts,
            started_at=self.started_at,
            finished_at=self.finished_at,
            worker=self.worker,
            result=self.result,
            error=self.error,
            expires_at=self.expires_at,
        )

    # -- what happens to its message ----------------------------------------------------
    def leased(self, now: float, worker: str) -> None:
        """Handed to a consumer."""
        if self.status in LIVE:
            self.status = RecordStatus.RUNNING
            self.attempts += 1
            self.worker = worker
            if self.started_at is None:
                self.started_at = now

    def requeued(self, now: float, delay: float = 0.0) -> None:
        """Visible again (its lease ran out, or it was given back) after ``delay``."""
        if self.status in LIVE:
            self.visible_at = now + delay
            self.status = RecordStatus.SCHEDULED if delay > 0 else RecordStatus.QUEUED

    def finish(self, status: RecordStatus, now: float, *, result: bytes | None = None,
               error: str | None = None) -> bool:  # fmt: skip
        """Make the record final (unless it already is); False if it was."""
        if self.status in FINAL:
            return False
        self.status = status
        self.result = result
        self.error = error
        self.finished_at = now
        self.expires_at = now + self.ttl
        self.finished.set()
        return True

    def revive(self, now: float) -> None:
        """A dead job's message was put back on its queue (``requeue_dead``): live again."""
        if self.status is RecordStatus.DEAD:
            self.status = RecordStatus.QUEUED
            self.visible_at = now
            self.result = self.error = None
            self.finished_at = self.expires_at = None
            self.finished = trio.Event()


class Jobs:
    """Every tracked job of one memory broker name, by id and by live dedup key."""

    def __init__(self) -> None:
        self.by_id: dict[str, Job] = {}
        self.by_key: dict[str, Job] = {}
        self._added = 0

    def live_with_key(self, key: str) -> Job | None:
        """The live job holding ``key``, if any."""
        job = self.by_key.get(key)
        if job is not None and job.status not in LIVE:
            del self.by_key[key]
            return None
        return job

    def add(self, job: Job, now: float) -> None:
        """Index a new job (sweeping expired records now and then)."""
        self.by_id[job.id] = job
        if job.key is not None:
            self.by_key[job.key] = job
        self._added += 1
        if self._added % _SWEEP_EVERY == 0:
            self.sweep(now)

    def get(self, job_id: str, now: float) -> Job | None:
        """The job's record, unless unknown or expired."""
        job = self.by_id.get(job_id)
        if job is not None and job.expires_at is not None and job.expires_at <= now:
            self.forget(job)
            return None
        return job

    def forget(self, job: Job) -> None:
        """Drop a record (expired or purged)."""
        self.by_id.pop(job.id, None)
        if job.key is not None and self.by_key.get(job.key) is job:
            del self.by_key[job.key]

    def sweep(self, now: float) -> None:
        """Drop the records whose time is up."""
        for job in [j for j in self.by_id.values() if j.expires_at is not None]:
            if job.expires_at is not None and job.expires_at <= now:
                self.forget(job)

    def find(
        self,
        now: float,
        *,
        queue: str | None,
        status: RecordStatus | None,
        operation: str | None,
        key: str | None,
        limit: int,
        offset: int,
    ) -> list[JobRecord]:
        """Records newest first (dicts keep insertion order), matching every filter
        given; ``limit`` of them after ``offset``."""
        wanted = {"queue": queue, "operation": operation, "key": key}
        wanted = {k: v for k, v in wanted.items() if v is not None}
        found: list[JobRecord] = []
        skip = max(offset, 0)
        for job in reversed(self.by_id.values()):
            if len(found) >= limit:
                break
            if job.expires_at is not None and job.expires_at <= now:
                continue
            if any(getattr(job, k) != v for k, v in wanted.items()):
                continue
            record = job.record(now)
            if status is not None and record.status is not status:
                continue
            if skip:
                skip -= 1
                continue
            found.append(record)
        return found

    def purge(self) -> int:
        """Drop every finished record; count them."""
        finished = [job for job in self.by_id.values() if job.status in FINAL]
        for job in finished:
            self.forget(job)
        return len(finished)
