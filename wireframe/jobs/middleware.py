"""Worker middleware: async context managers around each job's execution.

``jobs.WorkerLayer(..., middleware=[m1, m2])`` wraps every job the worker runs
as ``async with m1(job): async with m2(job): <run the job>`` — the first is the
outermost. A middleware is any callable that takes the :class:`JobContext` and
returns an async context manager; the usual way to write one is
:func:`contextlib.asynccontextmanager`::

    @contextlib.asynccontextmanager
    async def log_jobs(job: jobs.JobContext) -> AsyncIterator[None]:
        started = time.perf_counter()
        yield
        log.info("%s %s in %.3f s", job.operation, job.outcome, time.perf_counter() - started)

On entry it sees the job's operation, input, attempt, queue and id; on exit
also ``outcome`` (completed, failed or cancelled) and ``error``. It runs on the
worker's trio thread, also for plain ``def`` operations (which run on worker
threads inside it), and within the job's time limit's reach: a cancelled job
cancels its middleware's ``yield`` too.

A middleware that raises — on entry, or on exit with an error of its own —
fails that job with :class:`MiddlewareError` naming the middleware (retried or
dead-lettered like any failure); the worker goes on. The job's own exception,
re-raised by a middleware's exit, passes through unchanged.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import attrs

from wireframe.jobs.errors import JobsError

__all__ = ["JobContext", "JobOutcome", "Middleware", "MiddlewareError", "run_through"]


class JobOutcome(enum.Enum):
    """How a job's execution ended, as a middleware sees it on exit."""

    COMPLETED = "completed"
    FAILED = "failed"  # raised (it may still be retried: see ``attempt``)
    CANCELLED = "cancelled"  # aborted, the worker stopping, or its lease lost


@attrs.define(eq=False)
class JobContext:
    """One job's execution, as middleware sees it (``outcome``/``error``/``result`` on exit)."""

    job_id: str
    operation: str
    queue: str
    attempt: int
    input: Any
    worker: str
    #: The envelope's string metadata (a trace context travels here).
    metadata: Mapping[str, str]
    outcome: JobOutcome | None = None
    error: BaseException | None = None
    result: Any = None


Middleware = Callable[[JobContext], AbstractAsyncContextManager[Any]]
"""A callable that takes a job's :class:`JobContext` and returns an async context manager."""


class MiddlewareError(JobsError):
    """A worker middleware raised: the job failed because of it, not of its operation."""


def _name(middleware: Middleware) -> str:
    return str(getattr(middleware, "__qualname__", None) or repr(middleware))


async def run_through(
    middleware: Sequence[Middleware], job: JobContext, call: Callable[[], Awaitable[Any]]
) -> Any:
    """``await call()`` inside each middleware in turn (the first outermost); set the outcome."""
    return await _nest(middleware, 0, job, call)


async def _nest(
    middleware: Sequence[Middleware],
    index: int,
    job: JobContext,
    call: Callable[[], Awaitable[Any]],
) -> Any:
    if index == len(middleware):
        try:
            job.result = await call()
        except Exception as exc:
            job.outcome, job.error = JobOutcome.FAILED, exc
            raise
        except BaseException as exc:  # trio.Cancelled
            job.outcome, job.error = JobOutcome.CANCELLED, exc
            raise
        job.outcome = JobOutcome.COMPLETED
        return job.result
    current = middleware[index]
    try:
        async with current(job):
            return await _nest(middleware, index + 1, job, call)
    except MiddlewareError:
        raise
    except Exception as exc:
        if exc is job.error:
            raise
        raise MiddlewareError(
            f"worker middleware {_name(current)} raised {type(exc).__name__}: {exc}"
        ) from exc
