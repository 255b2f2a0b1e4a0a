"""Where and for how long a job's operation runs: on trio, inline, on the job threads or in a process.

A worker decides *which* job runs and what becomes of its outcome; this module
decides how its ``execute`` is called — the operation's ``executor`` (async on
the worker's trio thread, inline, on the worker's long-lived job threads, or in
a trio-parallel process for ``cpu_bound``) — and holds it to its time limit.
An async or process job is cancelled at the limit; a thread cannot be (its job
fails when the thread returns, and a warning says the slot stayed taken); an
inline one holds the trio thread to its end (a warning says so, once per
operation).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
import trio

from wireframe.jobs.failures import TimeLimitExceeded, process_died
from wireframe.jobs.operations import Executor, Operation, OpSpec
from wireframe.jobs.threads import JobThreads

__all__ = ["INLINE_WARN_AFTER", "Execution"]

#: Seconds an ``executor="inline"`` operation may hold the trio thread before a warning.
INLINE_WARN_AFTER = 0.1

_log = logging.getLogger("wireframe.jobs.worker")


@attrs.define(eq=False)
class Execution:
    """A worker's way of running operations: its job threads (once serving) and warnings."""

    worker_id: str
    #: The worker's job threads, set while it serves.
    pool: JobThreads | None = None
    warned_inline: set[str] = attrs.field(factory=set)

    async def limited(
        self,
        spec: OpSpec,
        op: Operation[Any, Any],
        value: Any,
        kwargs: dict[str, object],
        limit: float | None,
    ) -> Any:
        """:meth:`execute` within the job's time limit; :class:`TimeLimitExceeded` past it.

        An async or cpu_bound job is cancelled at the limit. A thread cannot be:
        its job fails when the thread returns, and the slot stays taken until then
        (a warning says so); an inline one holds the trio thread to its end.
        """
        if limit is None:
            return await self.execute(spec, op, value, kwargs)
        started = trio.current_time()
        with trio.move_on_after(limit) as scope:
            result = await self.execute(spec, op, value, kwargs)
        if not scope.cancelled_caught and trio.current_time() - started <= limit:
            return result
        overran = trio.current_time() - started - limit
        if spec.executor in ("thread", "inline") and overran > 0.1:
            _log.warning(
                "worker %s: operation %r ran %.1f s past its time limit of %g s; "
                "its %s could not be cancelled, so its slot stayed taken until it returned",
                self.worker_id, spec.name, overran, limit,
                "thread (call trio.from_thread.check_cancelled() to notice)"
                if spec.executor == "thread" else "inline call",
            )  # fmt: skip
        raise TimeLimitExceeded(
            f"operation {spec.name!r} ran longer than its time limit of {limit:g} s"
        )

    async def execute(
        self, spec: OpSpec, op: Operation[Any, Any], value: Any, kwargs: dict[str, object]
    ) -> Any:
        """Call ``op.execute`` where its spec says it runs; return what it returned."""
        execute = op.execute  # type: ignore[attr-defined]  # each operation defines its own
        return await _EXECUTORS[spec.executor](self, spec, execute, value, kwargs)

    async def _on_trio(
        self, spec: OpSpec, execute: Callable[..., Any], value: Any, kwargs: dict[str, object]
    ) -> Any:
        """``executor="async"``: await it on the worker's trio thread."""
        return await execute(value, **kwargs)

    async def _inline(
        self, spec: OpSpec, execute: Callable[..., Any], value: Any, kwargs: dict[str, object]
    ) -> Any:
        """``executor="inline"``: call it on the trio thread, warning when it held it too long."""
        started = time.perf_counter()
        try:
            return execute(value, **kwargs)
        finally:
            self._check_inline(spec, time.perf_counter() - started)

    async def _in_thread(
        self, spec: OpSpec, execute: Callable[..., Any], value: Any, kwargs: dict[str, object]
    ) -> Any:
        """``executor="thread"``: run it on one of the worker's job threads."""
        if self.pool is None:  # pragma: no cover - jobs run only inside serve()
            raise RuntimeError("a worker runs jobs only inside serve()")
        return await self.pool.run(functools.partial(execute, value, **kwargs))

    async def _in_process(
        self, spec: OpSpec, execute: Callable[..., Any], value: Any, kwargs: dict[str, object]
    ) -> Any:
        """``executor="process"`` (``cpu_bound=True``): a trio-parallel process, killed on abort.

        Such an operation takes no resources (its spec refuses them), so ``kwargs`` is empty.
        """
        import trio_parallel

        try:
            return await trio_parallel.run_sync(execute, value, kill_on_cancel=True)
        except trio_parallel.BrokenWorkerError as exc:
            raise process_died(spec, exc) from exc

    def _check_inline(self, spec: OpSpec, seconds: float) -> None:
        """Warn (once per operation) that an inline operation held the trio thread too long.

        While it runs nothing else on the worker does: no other job, no lease
        renewal, no Ctrl-C. A worker thread costs a little per job but keeps
        the loop free.
        """
        if seconds <= INLINE_WARN_AFTER or spec.name in self.warned_inline:
            return
        self.warned_inline.add(spec.name)
        _log.warning(
            "operation %r ran inline on worker %s for %.2f s, blocking the trio loop "
            "(other jobs, lease renewals and Ctrl-C wait meanwhile); give it "
            'executor="thread" (or cpu_bound=True for CPU-heavy work)',
            spec.name,
            self.worker_id,
            seconds,
        )


#: How each executor of :data:`~wireframe.jobs.operations.Executor` runs an ``execute``.
_EXECUTORS: Mapping[
    Executor,
    Callable[[Execution, OpSpec, Callable[..., Any], Any, dict[str, object]], Awaitable[Any]],
] = {
    "async": Execution._on_trio,
    "inline": Execution._inline,
    "thread": Execution._in_thread,
    "process": Execution._in_process,
}
