"""One structured log record per job's end, through the standard :mod:`logging` module.

The record's message reads well in a terminal; its ``extra`` fields
(``job_id``, ``operation``, ``queue``, ``attempt``, ``worker``, ``outcome``)
are there for a structured formatter (``wireframe run --log-format json``
prints them as JSON keys), so a job can be followed by its id across
processes. Levels: a job that failed for good (or was dead-lettered) is a
WARNING, a retry INFO, a completion or a cancellation DEBUG — a busy worker
at the default level logs only what needs a look. The level is checked first:
a record nobody would see costs one call.
"""

from __future__ import annotations

import logging

__all__ = ["JOB_FIELDS", "log_job_end"]

_log = logging.getLogger("wireframe.jobs.job")

#: The ``extra`` fields a job's record carries (a structured formatter looks for them).
JOB_FIELDS = ("job_id", "operation", "queue", "attempt", "worker", "outcome", "instance_id")

_LEVELS = {
    "failed": logging.WARNING,
    "dead": logging.WARNING,
    "retried": logging.INFO,
    "completed": logging.DEBUG,
    "cancelled": logging.DEBUG,
}


def log_job_end(
    *,
    job_id: str,
    operation: str,
    queue: str,
    attempt: int,
    worker: str,
    outcome: str,
    error: BaseException | None = None,
) -> None:
    """Log how a job's delivery ended (``completed``, ``failed``, ``retried``, ``dead``, ``cancelled``)."""
    level = _LEVELS.get(outcome, logging.INFO)
    if not _log.isEnabledFor(level):
        return
    fields = {
        "job_id": job_id,
        "operation": operation,
        "queue": queue,
        "attempt": attempt,
        "worker": worker,
        "outcome": outcome,
    }
    why = f": {type(error).__name__}: {error}" if error is not None else ""
    _log.log(
        level,
        "job %s (%s, queue %s, attempt %d) %s%s",
        job_id, operation, queue, attempt, outcome, why,
        extra=fields,
    )  # fmt: skip
