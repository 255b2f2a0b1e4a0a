"""What happened to each task, as a live snapshot and as the final report.

The same frozen classes serve :meth:`Service.status` while the service runs and
:meth:`Service.run`'s result when it ends, so the CLI renders one shape.
"""

from __future__ import annotations

import enum
import traceback
from collections.abc import Mapping

import attrs

from wireframe.service.tasks import TaskKind

__all__ = [
    "ErrorInfo",
    "HookReport",
    "ServiceError",
    "ServiceReport",
    "TaskReport",
    "TaskState",
    "describe",
]


class TaskState(enum.Enum):
    """Where a task is in its life."""

    PENDING = "pending"  # wired, not yet scheduled
    WAITING = "waiting"  # gated: waiting for the precondition barrier
    RUNNING = "running"
    FINISHED = (
        "finished"  # returned: a oneshot or precondition always; a long-running task before stop
    )
    STOPPED = (
        "stopped"  # ended because of the stop (returned after it, cancelled by it, never started)
    )
    FAILED = "failed"  # raised
    TIMED_OUT = "timed_out"  # still running after the grace period: cancelled

    @property
    def is_final(self) -> bool:
        """Whether the task has ended."""
        return self in _FINAL

    @property
    def is_failure(self) -> bool:
        """Whether this ending makes the service's run fail."""
        return self in (TaskState.FAILED, TaskState.TIMED_OUT)


_FINAL = frozenset({TaskState.FINISHED, TaskState.STOPPED, TaskState.FAILED, TaskState.TIMED_OUT})


@attrs.frozen
class ErrorInfo:
    """An exception, kept as text so reports can be printed, compared and sent."""

    type: str
    message: str
    traceback: str

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorInfo:
        """Capture ``exc``'s type name, message and formatted traceback.

        An exception group holding a single exception (what a nursery raises
        for one failing child) is named by that exception; the traceback keeps
        the whole group.
        """
        leaf = _single_leaf(exc)
        kind = type(leaf)
        name = (
            kind.__qualname__
            if kind.__module__ == "builtins"
            else f"{kind.__module__}.{kind.__qualname__}"
        )
        return cls(
            type=name,
            message=str(leaf),
            traceback="".join(traceback.format_exception(exc)),
        )

    def __str__(self) -> str:
        return f"{self.type}: {self.message}" if self.message else self.type


def _single_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def describe(exc: BaseException) -> str:
    """``"ValueError: bad input"`` — one line for messages, unwrapping one-exception groups."""
    leaf = _single_leaf(exc)
    return f"{type(leaf).__name__}: {leaf}" if str(leaf) else type(leaf).__name__


@attrs.frozen
class TaskReport:
    """One task's record: times are trio clock readings (``trio.current_time()``).

    ``restarts`` counts how often a task with a restart policy was started
    again; ``last_error`` is the error that caused the latest restart.
    """

    id: str
    kind: TaskKind
    layer: str
    state: TaskState
    started_at: float | None = None
    ended_at: float | None = None
    error: ErrorInfo | None = None
    restarts: int = 0
    last_error: ErrorInfo | None = None


@attrs.frozen
class HookReport:
    """One shutdown step: a layer's lifetime closing, or a :class:`ShutdownHook`."""

    name: str
    what: str  # "teardown" or "hook"
    state: TaskState  # FINISHED, FAILED or TIMED_OUT
    error: ErrorInfo | None = None


@attrs.frozen
class ServiceReport:
    """Everything a run did: tasks by id (in wiring order), shutdown steps, why it stopped."""

    tasks: Mapping[str, TaskReport]
    shutdown: tuple[HookReport, ...] = ()
    stop_reason: str | None = None
    started_at: float | None = None
    ended_at: float | None = None

    @property
    def failures(self) -> list[str]:
        """One line per failed or timed-out task or shutdown step."""
        lines = [
            f"task {t.id!r} {t.state.value}" + (f": {t.error}" if t.error else "")
            for t in self.tasks.values()
            if t.state.is_failure
        ]
        lines += [
            f"{h.what} {h.name!r} {h.state.value}" + (f": {h.error}" if h.error else "")
            for h in self.shutdown
            if h.state.is_failure
        ]
        return lines

    @property
    def ok(self) -> bool:
        """True when nothing failed or timed out."""
        return not self.failures


class ServiceError(Exception):
    """The service failed: a task or shutdown step failed or timed out, or it had no tasks.

    ``report`` holds the full :class:`ServiceReport`.
    """

    def __init__(self, message: str, report: ServiceReport) -> None:
        super().__init__(message)
        self.report = report

    @classmethod
    def from_report(cls, report: ServiceReport) -> ServiceError:
        """An error whose message lists every failure in ``report``."""
        lines = report.failures
        return cls(f"service failed ({len(lines)} failure(s)):\n  " + "\n  ".join(lines), report)
