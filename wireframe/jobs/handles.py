"""Jobs on their own: submit one job, look it up later by id, from any process.

``await runtime.submit(op, input)`` publishes one *tracked* job and returns a
:class:`JobHandle`; ``runtime.handle(job_id)`` makes a handle for a job that
any process on the same broker submitted. The job's state and result live in
the broker (its job store role, :class:`~wireframe.jobs.broker.JobStore`), not in the
submitting process: a web request can hand a job to the background and
another request can read its result, and a restarted process loses nothing.

A handle's :meth:`~JobHandle.result` can be awaited by many tasks and many
times; it waits in the broker for the job to finish (woken by the finish, not
by polling) and decodes the result each time. Submitting checks every argument
before anything is published (:func:`check_submit`).
"""

from __future__ import annotations

import enum
import math
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs

from wireframe.jobs import instrument
from wireframe.jobs.broker import BrokerURL, JobRecord, Message, RecordStatus
from wireframe.jobs.codec import decode_result, encode_input, encode_operation
from wireframe.jobs.errors import ErrorKind, JobFailed, JobsError, RemoteError
from wireframe.jobs.ids import new_job_id
from wireframe.jobs.operations import Operation, check_time_limit, lookup_operation, spec_of

if TYPE_CHECKING:
    from wireframe.jobs.runtime import Runtime

__all__ = [
    "MAX_NAME_LENGTH",
    "JobAborted",
    "JobHandle",
    "JobStatus",
    "UnknownJob",
    "check_submit",
    "submit",
]

#: The longest queue name or dedup key ``submit`` accepts (characters).
MAX_NAME_LENGTH = 256


class JobStatus(enum.Enum):
    """Where a job submitted on its own is."""

    SCHEDULED = "scheduled"  # delayed, not visible yet
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABORTED = "aborted"
    DEAD = "dead"  # dead-lettered: undecodable, or delivered too often


class UnknownJob(JobsError, LookupError):
    """The broker has no job of this id: never submitted, or finished long enough
    ago that its record expired (the URL option ``result_ttl``)."""

    def __init__(self, job_id: str, url: BrokerURL) -> None:
        self.job_id = job_id
        super().__init__(
            f"job {job_id!r} is unknown to broker {url}: it was never submitted there, "
            f"or it finished more than result_ttl={url.result_ttl:g} s ago and its record expired"
        )


class JobAborted(JobsError):
    """The job was aborted by id before it finished; it has no result."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"job {job_id!r} was aborted before it finished")


def check_submit(
    op: object,
    *,
    queue: str,
    delay: float | None,
    at: datetime | None,
    priority: int,
    key: str | None,
    time_limit: float | None,
) -> tuple[float, float | None]:
    """Check ``submit``'s arguments; return the delay (seconds) and the time limit.

    Every problem is a ``ValueError``/``TypeError`` naming the argument and what
    is accepted, raised before anything is published.
    """
    if not isinstance(op, Operation):
        raise TypeError(f"submit: op must be an Operation instance, not {type(op).__name__}")
    _check_name("queue", queue)
    if key is not None:
        _check_name("key", key)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"submit: priority={priority!r} must be an int (higher runs first)")
    if delay is not None and at is not None:
        raise ValueError("submit: give delay= or at=, not both")
    seconds = 0.0
    if delay is not None:
        if isinstance(delay, bool) or not isinstance(delay, int | float):
            raise TypeError(f"submit: delay={delay!r} must be a number of seconds")
        if not math.isfinite(delay) or delay < 0:
            raise ValueError(f"submit: delay={delay!r} must be finite and not negative")
        seconds = float(delay)
    elif at is not None:
        if not isinstance(at, datetime):
            raise TypeError(f"submit: at={at!r} must be a datetime")
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError(
                f"submit: at={at.isoformat()} has no time zone; give an aware datetime, "
                "e.g. datetime.now(UTC) + timedelta(minutes=5)"
            )
        seconds = max(0.0, at.timestamp() - time.time())
    limit = type(op).op_time_limit if time_limit is None else time_limit
    if limit is not None:
        limit = check_time_limit(limit, "submit")
    return seconds, limit


def check_submit_options(*, priority: int, time_limit: float | None, delay: float | None) -> None:
    """Check a directive run's ``priority``, ``time_limit`` and ``delay`` as ``submit`` does."""
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"run: priority={priority!r} must be an int (higher runs first)")
    if time_limit is not None:
        check_time_limit(time_limit, "run")
    if delay is not None and (
        isinstance(delay, bool)
        or not isinstance(delay, int | float)
        or not math.isfinite(delay)
        or delay < 0
    ):
        raise ValueError(f"run: delay={delay!r} must be a finite, non-negative number of seconds")


def _check_name(argument: str, value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"submit: {argument}={value!r} must be a string")
    if not value or len(value) > MAX_NAME_LENGTH:
        raise ValueError(
            f"submit: {argument}={value[:40]!r}{'...' if len(value) > 40 else ''} must be "
            f"1 to {MAX_NAME_LENGTH} characters long, not {len(value)}"
        )


async def submit(
    runtime: Runtime,
    op: Operation[Any, Any],
    input: Any,
    *,
    queue: str | None = None,
    delay: float | None = None,
    at: datetime | None = None,
    priority: int = 0,
    key: str | None = None,
    time_limit: float | None = None,
    job_id: str | None = None,
) -> JobHandle:
    """Publish one tracked job (see :meth:`Runtime.submit <wireframe.jobs.Runtime.submit>`)."""
    queue = runtime.queue if queue is None else queue
    seconds, limit = check_submit(
        op, queue=queue, delay=delay, at=at, priority=priority, key=key, time_limit=time_limit
    )
    if job_id is not None:
        _check_name("job_id", job_id)
    spec = spec_of(type(op))
    job_id = job_id or new_job_id()  # as unique as a uuid4, and cheaper (see .ids)
    with instrument.submitting(spec.name, queue, job_id) as metadata:
        body = encode_input(
            encode_operation(op), job_id, 0, input, spec, time_limit=limit, metadata=metadata
        )
        message = Message(job_id, body, priority=priority, limit=await runtime.limit_of(op))
        record, _ = await runtime.broker.submit(
            queue, message, delay=seconds, key=key, operation=spec.name
        )
    return JobHandle(record.id, runtime)


@attrs.frozen(eq=False)
class JobHandle:
    """A job submitted on its own, by id: its status, its result, its abort.

    Made by :meth:`Runtime.submit <wireframe.jobs.Runtime.submit>` or, for a job
    submitted anywhere on the same broker, :meth:`Runtime.handle
    <wireframe.jobs.Runtime.handle>`.
    """

    id: str
    runtime: Runtime = attrs.field(repr=False)

    async def record(self) -> JobRecord:
        """What the broker knows of the job now; :class:`UnknownJob` if nothing."""
        record = await self.runtime.broker.job(self.id)
        if record is None:
            raise UnknownJob(self.id, self.runtime.broker.url)
        return record

    async def status(self) -> JobStatus:
        """The job's status now (``UnknownJob`` if the broker has no such job)."""
        return status_of(await self.record())

    async def result(self, timeout: float | None = None) -> Any:
        """The job's value once it has finished, waiting up to ``timeout`` seconds.

        Raises :class:`~wireframe.jobs.JobFailed` if it failed or died,
        :class:`JobAborted` if it was aborted, :class:`UnknownJob` if the broker
        has no such job, ``trio.TooSlowError`` if it is still unfinished after
        ``timeout``.
        """
        wait = math.inf if timeout is None else timeout
        record = await self.runtime.broker.wait_job(self.id, wait)
        if record is None:
            raise UnknownJob(self.id, self.runtime.broker.url)
        if not record.final:
            import trio

            raise trio.TooSlowError(
                f"job {self.id!r} is still {status_of(record).value} after {timeout:g} s"
            )
        return value_of(record)

    async def abort(self) -> JobStatus:
        """Abort the job: queued, it never runs; running, its worker cancels it.

        Returns its status after the abort (a finished job keeps its own).
        """
        broker = self.runtime.broker
        record = await broker.abort_job(self.id)
        if record is None:
            raise UnknownJob(self.id, broker.url)
        if record.status is RecordStatus.ABORTED:
            await self.runtime.abort(self.id)  # a running job's worker cancels it
        return status_of(record)


def status_of(record: JobRecord) -> JobStatus:
    """A record's status as a user sees it: ``done`` is succeeded or failed."""
    if record.status is RecordStatus.DONE:
        return JobStatus.FAILED if _result(record).error is not None else JobStatus.SUCCEEDED
    return JobStatus(record.status.value)


def value_of(record: JobRecord) -> Any:
    """A final record's value, or the error it ended with, raised."""
    if record.status is RecordStatus.ABORTED:
        raise JobAborted(record.id)
    if record.status is RecordStatus.DEAD:
        error = RemoteError(ErrorKind.DEAD, "DeadLetter", record.error or "dead-lettered")
        raise JobFailed(error, job_id=record.id)
    result = _result(record)
    if result.error is not None:
        raise JobFailed(result.error, job_id=record.id)
    return result.value


def _result(record: JobRecord) -> Any:
    spec = lookup_operation(record.operation) if record.operation else None
    output = spec.output_type if spec is not None else Any
    return decode_result(record.result or b"", output)
