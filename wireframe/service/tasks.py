"""The five kinds of task a service runs, and a decorator that makes one from a function.

A task is anything with an ``id`` and ``async def run(self, stop)``. Its *kind*
is which base class it derives from, and the kind alone decides when the task
starts and what its ending means for the service:

=========================  ===================  ======================  ==========================
kind                       starts               returns normally        raises
=========================  ===================  ======================  ==========================
Task                       when barrier lifts   the service stops       the service stops, failed
OneshotTask                when barrier lifts   nothing else happens    the service stops, failed
Precondition               at once              its barrier slot frees  stops, failed; gated never start
UnconstrainedTask          at once              the service stops       the service stops, failed
UnconstrainedOneshotTask   at once              nothing else happens    the service stops, failed
=========================  ===================  ======================  ==========================

The bases are plain abstract classes, not attrs classes, so an attrs class can
derive from one and keep its own fields.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from wireframe.service.stop import StopReceiver

__all__ = [
    "OneshotTask",
    "Precondition",
    "Task",
    "TaskKind",
    "UnconstrainedOneshotTask",
    "UnconstrainedTask",
    "task",
]


class TaskKind(enum.Enum):
    """Which of the five kinds a task is; its value is the kind's class name."""

    TASK = "Task"
    ONESHOT = "OneshotTask"
    PRECONDITION = "Precondition"
    UNCONSTRAINED = "UnconstrainedTask"
    UNCONSTRAINED_ONESHOT = "UnconstrainedOneshotTask"

    @property
    def gated(self) -> bool:
        """Whether tasks of this kind wait for the precondition barrier."""
        return self in (TaskKind.TASK, TaskKind.ONESHOT)

    @property
    def stops_service_on_return(self) -> bool:
        """Whether returning normally sends the service's stop signal."""
        return self in (TaskKind.TASK, TaskKind.UNCONSTRAINED)


class _TaskBase(abc.ABC):
    """What every kind shares: an ``id`` and an ``async run(stop)``."""

    kind: ClassVar[TaskKind]
    id: str

    @abc.abstractmethod
    async def run(self, stop: StopReceiver) -> None:
        """Do the task's work; return when done or soon after ``stop`` arrives."""


class Task(_TaskBase):
    """A long-running task, started when the barrier lifts; its return stops the service."""

    kind = TaskKind.TASK


class OneshotTask(_TaskBase):
    """A task that runs once after the barrier lifts; its return changes nothing else."""

    kind = TaskKind.ONESHOT


class Precondition(_TaskBase):
    """A task that must return before any gated task (Task, OneshotTask) starts."""

    kind = TaskKind.PRECONDITION


class UnconstrainedTask(_TaskBase):
    """A long-running task that starts at once, not waiting for preconditions."""

    kind = TaskKind.UNCONSTRAINED


class UnconstrainedOneshotTask(_TaskBase):
    """A task that runs once, at once, not waiting for preconditions."""

    kind = TaskKind.UNCONSTRAINED_ONESHOT


_KIND_CLASSES: tuple[type[_TaskBase], ...] = (
    Task,
    OneshotTask,
    Precondition,
    UnconstrainedTask,
    UnconstrainedOneshotTask,
)
TASK_BASES: dict[TaskKind, type[_TaskBase]] = {cls.kind: cls for cls in _KIND_CLASSES}

AnyTask = _TaskBase
"""The type every task of any kind satisfies."""


def is_task_type(tp: object) -> bool:
    """Whether ``tp`` is a task class (a subclass of one of the five kinds)."""
    return isinstance(tp, type) and issubclass(tp, _TaskBase)


TaskFunction = Callable[["StopReceiver"], Awaitable[None]]


def _function_task_class(kind: TaskKind) -> type[_TaskBase]:
    base = TASK_BASES[kind]

    def __init__(self: _TaskBase, id: str, fn: TaskFunction) -> None:
        self.id = id
        self._fn = fn  # type: ignore[attr-defined]

    async def run(self: _TaskBase, stop: StopReceiver) -> None:
        await self._fn(stop)  # type: ignore[attr-defined]

    def __repr__(self: _TaskBase) -> str:
        return f"<{base.__name__} {self.id!r} from {self._fn.__qualname__}>"  # type: ignore[attr-defined]

    return type(
        f"Function{base.__name__}",
        (base,),
        {"__init__": __init__, "run": run, "__repr__": __repr__, "__doc__": base.__doc__},
    )


_FUNCTION_TASKS = {kind: _function_task_class(kind) for kind in TaskKind}


def task(
    *, kind: TaskKind | str = TaskKind.TASK, id: str | None = None
) -> Callable[[TaskFunction], Any]:
    """Turn ``async def fn(stop)`` into a task instance of the given kind.

    ``kind`` is a :class:`TaskKind` or its value (``"OneshotTask"``); ``id``
    defaults to the function's name. The result is an instance of that kind's
    base class (typed ``Any`` so it fits an output field of that kind)::

        @wf.task(kind=wf.TaskKind.ONESHOT, id="migrate")
        async def migrate(stop: wf.StopReceiver) -> None: ...
    """
    try:
        resolved = kind if isinstance(kind, TaskKind) else TaskKind(kind)
    except ValueError:
        choices = ", ".join(repr(k.value) for k in TaskKind)
        raise ValueError(f"unknown task kind {kind!r}; choose one of {choices}") from None

    def decorate(fn: TaskFunction) -> _TaskBase:
        task_id = id if id is not None else getattr(fn, "__name__", None)
        if not task_id:
            raise ValueError(f"cannot derive a task id from {fn!r}: pass id=...")
        return _FUNCTION_TASKS[resolved](task_id, fn)  # type: ignore[call-arg]

    return decorate
