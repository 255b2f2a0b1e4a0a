"""A layer's lifetime, held open in a task of its own.

An async-generator ``wire`` may enter nurseries and cancel scopes before its
``yield`` and leave them after it — ``async with open_broker(url) as broker:
yield Output(broker)`` is the point of the feature. trio requires a task to
leave scopes in the reverse order it entered them, so the generator must be
started and finished by one task that enters nothing else in between. That
task is :meth:`Lifetime.hold`.

While the lifetime is held, something inside it can fail (a child of a
nursery the layer opened raises). Its cancellation arrives in ``hold``, which
throws it into the generator at its ``yield`` so the generator's own scopes
unwind it, and tells the service, which stops.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Any

import attrs
import trio

from wireframe.service.report import ErrorInfo, TaskState
from wireframe.service.stop import StopSignal

__all__ = ["Lifetime"]


@attrs.define(eq=False)
class Lifetime:
    """One layer's async-generator ``wire``, driven by a dedicated task."""

    name: str
    generator: AsyncGenerator[Any, None]
    on_failure: Callable[[str, BaseException], None]
    release: trio.Event = attrs.field(factory=trio.Event)
    done: trio.Event = attrs.field(factory=trio.Event)
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    error: BaseException | None = None

    async def hold(
        self,
        stop: StopSignal,
        task_status: trio.TaskStatus[tuple[bool, Any]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run to the ``yield``, report ``(True, output)``, hold until released, finish.

        A failure before the ``yield`` is reported as ``(False, exception)``
        (``(False, None)`` if the stop cancelled it), and the task ends.
        """
        started = False
        try:
            with self.scope:
                unregister = stop.cancel_on_send(self.scope)  # a stop while wiring cancels us
                try:
                    output = await self.generator.__anext__()
                except StopAsyncIteration:
                    raise RuntimeError(
                        "wire() is an async generator that never yielded its output"
                    ) from None
                finally:
                    unregister()
                task_status.started((True, output))
                started = True
                try:
                    await self.release.wait()
                except BaseException as exc:
                    # Cancelled by a scope inside the generator (a child it started
                    # failed), by our own scope (teardown timed out) or from outside:
                    # the generator's scopes must see it, at the yield.
                    await self._throw(exc)
                else:
                    await self._finish()
        except BaseException as exc:
            if not started:
                task_status.started((False, exc if isinstance(exc, Exception) else None))
                started = True
                if not isinstance(exc, Exception) and not _is_cancelled(exc):
                    raise
                return
            self.error = exc
            if not self.release.is_set():
                self.on_failure(self.name, exc)
            if not isinstance(exc, Exception) and not _is_cancelled(exc):
                raise
        finally:
            if not started:  # cancelled before the yield by the stop: nothing to report
                task_status.started((False, None))
            self.done.set()

    async def _finish(self) -> None:
        try:
            await self.generator.__anext__()
        except StopAsyncIteration:
            return
        await self.generator.aclose()
        raise RuntimeError("wire() yielded more than once; it must yield exactly once")

    async def _throw(self, exc: BaseException) -> None:
        try:
            await self.generator.athrow(exc)
        except StopAsyncIteration:
            return  # the generator handled it and returned
        else:
            await self.generator.aclose()
            raise RuntimeError("wire() yielded more than once; it must yield exactly once")

    async def close(self, timeout: float) -> tuple[TaskState, ErrorInfo | None]:
        """Release the lifetime and wait for its teardown, at most ``timeout`` seconds."""
        self.release.set()
        with trio.CancelScope(shield=True):
            with trio.move_on_after(timeout) as waited:
                await self.done.wait()
            if waited.cancelled_caught:
                self.scope.cancel()
                await self.done.wait()
                message = f"teardown {self.name!r} did not finish within {timeout:g} s"
                return TaskState.TIMED_OUT, ErrorInfo("TimeoutError", message, "")
        if self.error is not None and not _is_cancelled(self.error):
            return TaskState.FAILED, ErrorInfo.from_exception(self.error)
        return TaskState.FINISHED, None


def _is_cancelled(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_is_cancelled(e) for e in exc.exceptions)
    return isinstance(exc, trio.Cancelled)
