"""The orchestration store: a broker role keeping instances, their histories and inboxes.

A broker that keeps orchestrations implements :class:`OrchestrationStore` on
the same object (``isinstance(broker, OrchestrationStore)`` finds it). Its
contract, held by one conformance suite:

* **Instances** have a row (:class:`Instance`), an append-only history and an
  *inbox* of events not yet applied, each visible from a time on (a timer's
  ``TimerFired`` is an inbox event visible when it fires).
* **Turns under a lease.** :meth:`~OrchestrationStore.take_work` leases
  instances with visible inbox events (an instance is leased to one worker at
  a time) and hands out each with its history and those events
  (:class:`WorkItem`). :meth:`~OrchestrationStore.commit` then applies a turn
  atomically: the history appended, the row updated, the consumed inbox events
  removed, and the outbox — activity jobs published, timers and events put in
  inboxes, child instances created — or nothing at all: a commit whose lease
  ran out, or was taken over, raises ``LockLost`` and writes nothing.
* **A finished instance takes no more turns**: events sent to it, and the
  timers and events its last turn left, are dropped; ``take_work`` never
  hands it out, so its row and history stay as that turn left them.
* **Activity completions land in the inbox atomically with the job's
  completion**: an activity's job replies to :func:`inbox_channel` of its
  instance, and the broker's ``complete`` (or its dead-lettering) puts the
  reply in that inbox in the same step, as a ``TaskCompleted`` (or
  ``TaskFailed``) for the action the job's message id names.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import attrs

from wireframe.durable.errors import DurableError
from wireframe.durable.history import (
    ChildFailed,
    Event,
    EventRaised,
    ExecutionResumed,
    ExecutionStarted,
    ExecutionSuspended,
    ExecutionTerminated,
    TaskCompleted,
    TaskFailed,
)
from wireframe.jobs.broker import DURABLE_INBOX_PREFIX, BrokerError, LockLost, Message, Reply

__all__ = [
    "INBOX_PREFIX",
    "KEPT_ON_RESTART",
    "Commit",
    "Instance",
    "InstanceExists",
    "OrchestrationStore",
    "Status",
    "TurnLost",
    "UnknownInstance",
    "WorkItem",
    "activity_message_id",
    "child_exists",
    "inbox_channel",
    "reply_event",
]

#: The inbox events a continue-as-new (``Commit.restart``) keeps for the next run:
#: raised events and the client's suspend, resume and terminate. The rest (an
#: old run's completions and timers) belongs to the run that ended.
KEPT_ON_RESTART = (EventRaised, ExecutionSuspended, ExecutionResumed, ExecutionTerminated)

#: Reply channels with this prefix are orchestration inboxes, not result channels.
INBOX_PREFIX = DURABLE_INBOX_PREFIX


class Status(enum.Enum):
    """Where an instance stands."""

    PENDING = "pending"  # started, no turn yet
    RUNNING = "running"  # also while it waits on a timer, an event or an activity
    SUSPENDED = "suspended"
    COMPLETED = "completed"
    FAILED = "failed"
    TERMINATED = "terminated"

    @property
    def finished(self) -> bool:
        """Completed, failed or terminated: nothing more will happen to it."""
        return self in (Status.COMPLETED, Status.FAILED, Status.TERMINATED)


@attrs.frozen
class Instance:
    """An orchestration instance as a client sees it (a snapshot).

    ``input``, ``output`` and ``custom_status`` are plain data as the codec
    made them; ``error`` names the exception type and message; times are
    seconds since the epoch.
    """

    id: str
    name: str
    status: Status
    input: Any = None
    output: Any = None
    error: str | None = None
    custom_status: Any = None
    created_at: float = 0.0
    updated_at: float = 0.0
    parent_id: str | None = None
    version: str | None = None
    generation: int = 0  # its run: bumped by each continue-as-new and by a replacement
    revision: int = 0  # bumped by every change: what :meth:`wait_changed` waits past


@attrs.frozen
class WorkItem:
    """An instance leased for one turn: its row, history and visible inbox events."""

    instance: Instance
    history: Sequence[Event]
    inbox: Sequence[Event]
    lease_token: str
    #: Which inbox events the turn takes, as the store knows them.
    taken: Any = None
    #: Why the instance's stored history or inbox cannot be read (a damaged or
    #: foreign value): the worker then fails the instance with this reason
    #: instead of taking it again and again.
    broken: str | None = None


@attrs.frozen
class Commit:
    """What a turn writes, all or nothing.

    ``restart`` (continue-as-new) replaces the history by ``appended`` and bumps
    the instance's generation; the inbox keeps only raised events and the
    client's suspend/resume/terminate (an old generation's completions and
    timers are dropped), and ``carryover`` events go in first.
    """

    appended: Sequence[Event]
    status: Status
    output: Any = None
    error: str | None = None
    custom_status: Any = None
    activities: Sequence[tuple[str, Message]] = ()  # (queue, job message)
    timers: Sequence[tuple[float, Event]] = ()  # (broker clock, TimerFired) for this inbox
    sends: Sequence[tuple[str, Event]] = ()  # (instance id, event) for other inboxes
    children: Sequence[tuple[Instance, Event]] = ()  # new instances and their first event
    restart: bool = False
    carryover: Sequence[Event] = ()


class TurnLost(LockLost):
    """A turn's lease on its instance ran out or was taken over: the turn wrote nothing.

    A :class:`~wireframe.jobs.broker.LockLost`, as for a job: the instance's
    events are taken again (by this worker or another) and the turn runs anew.
    """

    def __init__(self, instance_id: str, what: str) -> None:
        self.message_id, self.queue = instance_id, ""
        BrokerError.__init__(
            self,
            f"{what} of orchestration {instance_id!r}: its lease ran out or was taken over; "
            "the turn wrote nothing and runs again",
        )


class InstanceExists(DurableError):
    """``start`` of an instance id that exists (and may not be replaced)."""


class UnknownInstance(DurableError):
    """No instance has this id (never started, or purged)."""


@runtime_checkable
class OrchestrationStore(Protocol):
    """Instances, histories and inboxes in a broker (see the module doc)."""

    async def create_instance(
        self, instance: Instance, first: Event, *, visible_at: float, replace: bool
    ) -> None:
        """Create ``instance`` with ``first`` in its inbox, visible at ``visible_at``.

        Raises :class:`InstanceExists` if the id exists, unless ``replace`` and
        the existing instance finished (it is dropped with its history and
        inbox). A replacement's ``revision`` and ``generation`` go on from the
        old instance's (one past each): a ``wait_changed`` past the old
        revision wakes for it, and the old run's activities, which may still
        be running, reply to a generation that is gone.
        """
        ...

    async def take_work(self, limit: int, lease: float) -> list[WorkItem]:
        """Lease up to ``limit`` instances with visible inbox events; block until one."""
        ...

    async def commit(self, item: WorkItem, commit: Commit) -> None:
        """Apply a turn atomically; ``LockLost`` (writing nothing) if the lease is gone."""
        ...

    async def release(self, item: WorkItem, delay: float) -> None:
        """Give the instance back without a turn; its events are visible again after ``delay``."""
        ...

    async def extend_work(self, item: WorkItem, lease: float) -> None:
        """Renew the lease of a long turn; ``LockLost`` if it is gone."""
        ...

    async def send_event(self, instance_id: str, event: Event) -> None:
        """Put ``event`` in the instance's inbox (dropped if it finished); :class:`UnknownInstance` if none."""
        ...

    async def instance(self, instance_id: str) -> Instance | None:
        """The instance's row, or None."""
        ...

    async def history(self, instance_id: str) -> list[Event]:
        """The instance's history, in order (empty for an unknown id)."""
        ...

    async def instances(self, status: Status | None, limit: int) -> list[Instance]:
        """Instances (of one status, or all), most recently updated first."""
        ...

    async def wait_changed(self, instance_id: str, revision: int) -> Instance:
        """The instance once its revision is past ``revision`` (blocks; :class:`UnknownInstance`)."""
        ...

    async def purge_instance(self, instance_id: str) -> bool:
        """Remove a finished instance with its history; False if there is none."""
        ...


def child_exists(child: Instance, first: Event) -> Event:
    """The event telling a parent its child could not start: the child's id is taken."""
    action = first.parent_action if isinstance(first, ExecutionStarted) else 0
    return ChildFailed(
        action,
        f"instance id {child.id!r} is taken by another instance: the child never started",
        child.id,
    )


def inbox_channel(instance_id: str) -> str:
    """The reply channel an activity of ``instance_id`` replies to: its inbox."""
    return INBOX_PREFIX + instance_id


def activity_message_id(instance_id: str, generation: int, action: int) -> str:
    """The job message id of an activity: unique, and naming its action."""
    return f"{instance_id}|{generation}|{action}"


def reply_event(instance_id: str, generation: int, reply: Reply) -> Event | None:
    """The inbox event for an activity's reply, or None if it belongs to another generation."""
    iid, _, rest = reply.message_id.rpartition("|")
    owner, _, gen = iid.rpartition("|")
    if owner != instance_id or gen != str(generation) or not rest.isdigit():
        return None
    action = int(rest)
    if reply.dead_reason is not None:
        return TaskFailed(action, reply.dead_reason)
    return TaskCompleted(action, reply.body or b"")
