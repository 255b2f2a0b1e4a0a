"""The awaitables an orchestrator may await: each is resolved by history, not by trio.

An orchestrator is a coroutine the replay engine drives itself (see
:mod:`wireframe.durable.replay`). Awaiting a :class:`DurableTask` that is not
done yet *yields the task* to the engine, which stops driving the coroutine
until an event of history resolves it, then sends the coroutine on. Awaiting
anything else yields something that is not a ``DurableTask``: the engine
fails the instance naming it (trio's own traps, an asyncio future, ...).

Composites (:class:`AllTask`, :class:`AnyTask`) are done when their children
say so; a child tells its parents when it resolves.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any, Generic, Protocol, TypeVar

__all__ = ["AllTask", "AnyTask", "DurableTask"]

T = TypeVar("T")


class _Parent(Protocol):
    """Told when a task it watches resolves (a composite, or the engine's follow-up)."""

    def child_done(self, child: DurableTask[Any]) -> None: ...


class DurableTask(Generic[T]):
    """Something an orchestrator awaits; done once history resolved it (value or error)."""

    __slots__ = ("_done", "_error", "_parents", "_value", "what")

    def __init__(self, what: str) -> None:
        self.what = what  # for messages: "activity 'Charge' (action 3)"
        self._done = False
        self._value: Any = None
        self._error: BaseException | None = None
        self._parents: list[_Parent] = []

    @property
    def done(self) -> bool:
        """Whether the task has its value or its error."""
        return self._done

    def resolve(self, value: T) -> None:
        """Complete with ``value`` (once; later resolutions are ignored: a duplicate)."""
        if not self._done:
            self._done, self._value = True, value
            self._tell_parents()

    def fail(self, error: BaseException) -> None:
        """Complete with ``error``, raised where the task is awaited."""
        if not self._done:
            self._done, self._error = True, error
            self._tell_parents()

    def outcome(self) -> T:
        """The value, or the error raised."""
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[no-any-return]

    def _tell_parents(self) -> None:
        for parent in self._parents:
            parent.child_done(self)

    def __await__(self) -> Generator[DurableTask[Any], None, T]:
        if not self._done:
            yield self
        return self.outcome()

    def __repr__(self) -> str:
        return f"<{self.what}{' done' if self._done else ''}>"


class _Composite(DurableTask[T]):
    __slots__ = ("children",)

    def __init__(self, what: str, children: Sequence[DurableTask[Any]]) -> None:
        super().__init__(what)
        self.children = list(children)
        for child in self.children:
            child._parents.append(self)

    def child_done(self, child: DurableTask[Any]) -> None:
        raise NotImplementedError


class AllTask(_Composite[list[Any]]):
    """``ctx.all``: every child's value in order; fails only once every child finished.

    The error raised is the first failed child's, in the order given.
    """

    __slots__ = ("_left",)

    def __init__(self, children: Sequence[DurableTask[Any]]) -> None:
        super().__init__(f"ctx.all of {len(children)}", children)
        # counted, not looked over: a fan-out of n children costs O(n), not O(n**2)
        self._left = sum(not c.done for c in self.children)
        if not self._left:
            self._finish()

    def child_done(self, child: DurableTask[Any]) -> None:
        self._left -= 1
        if not self._done and self._left == 0:
            self._finish()

    def _finish(self) -> None:
        for c in self.children:
            if c._error is not None:
                self.fail(c._error)
                return
        self.resolve([c._value for c in self.children])


class AnyTask(_Composite[tuple[int, Any]]):
    """``ctx.any``: ``(index, value)`` of the first child to finish (its error, if it failed)."""

    __slots__ = ()

    def __init__(self, children: Sequence[DurableTask[Any]]) -> None:
        super().__init__(f"ctx.any of {len(children)}", children)
        if not self.children:
            raise ValueError("ctx.any needs at least one awaitable")
        for c in self.children:
            if c.done:
                self.child_done(c)
                break

    def child_done(self, child: DurableTask[Any]) -> None:
        if self._done:
            return
        if child._error is not None:
            self.fail(child._error)
        else:
            self.resolve((self.children.index(child), child._value))
