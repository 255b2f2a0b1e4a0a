"""An orchestration's history: the append-only events its progress is replayed from.

Every turn of an instance appends events and never changes one: an
``OrchestratorStarted`` carrying the turn's time (what ``ctx.now()`` reads),
the inbox events the turn consumed (an activity's completion, a timer that
fired, an event raised), then what the orchestrator decided (an activity
scheduled, a timer created, a child started, an event sent) and, at the end,
how it finished. Replaying the history through the same function reproduces
the same decisions: that is how a worker that took over after a crash carries
on where the dead one stopped, without running any activity again.

Actions are numbered in the order the orchestrator takes them (``action``,
from 1): a completion names the action it completes, and replay checks that
the code still takes action *n* the way history says it did.

Payloads are kept as the job codec makes them: an activity's job body and
result bytes (so a history event is what crossed the job queue), and other
values as plain msgpack-ready data (``data``).
"""

from __future__ import annotations

from typing import Any

import attrs

__all__ = [
    "ChildCompleted",
    "ChildCreated",
    "ChildFailed",
    "ContinuedAsNew",
    "Event",
    "EventRaised",
    "EventSent",
    "ExecutionCompleted",
    "ExecutionResumed",
    "ExecutionStarted",
    "ExecutionSuspended",
    "ExecutionTerminated",
    "OrchestratorStarted",
    "TaskCompleted",
    "TaskFailed",
    "TaskScheduled",
    "TimerCreated",
    "TimerFired",
]


@attrs.frozen
class ExecutionStarted:
    """The instance began: the orchestrator's name, its input (plain data) and version."""

    name: str
    input: Any = None
    version: str | None = None
    parent_id: str | None = None
    parent_action: int = 0  # the parent's action that started this child


@attrs.frozen
class OrchestratorStarted:
    """A turn began at ``at`` (seconds since the epoch): ``ctx.now()`` until the next one."""

    at: float


@attrs.frozen
class TaskScheduled:
    """Action ``action`` scheduled activity ``name``; ``body`` is its job body.

    ``queue`` is where the job goes (``""``: the orchestration worker's default).
    """

    action: int
    name: str
    body: bytes
    queue: str = ""


@attrs.frozen
class TaskCompleted:
    """Action ``action``'s activity finished; ``result`` is its job result body."""

    action: int
    result: bytes


@attrs.frozen
class TaskFailed:
    """Action ``action``'s activity died (dead-lettered): ``reason`` says why."""

    action: int
    reason: str


@attrs.frozen
class TimerCreated:
    """Action ``action`` is a durable timer firing at ``fire_at`` (seconds since the epoch)."""

    action: int
    fire_at: float


@attrs.frozen
class TimerFired:
    """Action ``action``'s timer fired."""

    action: int
    fire_at: float


@attrs.frozen
class EventRaised:
    """An external event ``name`` with ``data`` reached the instance."""

    name: str
    data: Any = None


@attrs.frozen
class EventSent:
    """Action ``action`` sent event ``name`` with ``data`` to instance ``instance_id``."""

    action: int
    instance_id: str
    name: str
    data: Any = None


@attrs.frozen
class ChildCreated:
    """Action ``action`` started orchestrator ``name`` as instance ``instance_id``."""

    action: int
    name: str
    instance_id: str
    input: Any = None


@attrs.frozen
class ChildCompleted:
    """Action ``action``'s child instance ``instance_id`` completed with ``output``.

    ``instance_id`` tells a child of an earlier run (continued as new) from this
    run's child of the same action number (None: written before it was kept).
    """

    action: int
    output: Any = None
    instance_id: str | None = None


@attrs.frozen
class ChildFailed:
    """Action ``action``'s child instance ``instance_id`` failed (or was terminated, or
    never started): ``error`` says why."""

    action: int
    error: str
    instance_id: str | None = None


@attrs.frozen
class ExecutionSuspended:
    """A client suspended the instance: events wait, nothing runs, until it resumes."""

    reason: str = ""


@attrs.frozen
class ExecutionResumed:
    """A client resumed the suspended instance."""


@attrs.frozen
class ExecutionTerminated:
    """A client terminated the instance, with ``output`` as its output."""

    output: Any = None


@attrs.frozen
class ContinuedAsNew:
    """The orchestrator continued as new with ``input``: the history starts afresh."""

    input: Any = None


@attrs.frozen
class ExecutionCompleted:
    """The instance finished: ``status`` completed, failed or terminated."""

    status: str
    output: Any = None
    error: str | None = None


Event = (
    ExecutionStarted
    | OrchestratorStarted
    | TaskScheduled
    | TaskCompleted
    | TaskFailed
    | TimerCreated
    | TimerFired
    | EventRaised
    | EventSent
    | ChildCreated
    | ChildCompleted
    | ChildFailed
    | ExecutionSuspended
    | ExecutionResumed
    | ExecutionTerminated
    | ContinuedAsNew
    | ExecutionCompleted
)

#: Events that record a decision of the orchestrator (they carry the action number).
ACTIONS = (TaskScheduled, TimerCreated, EventSent, ChildCreated)
