"""``durable.Context``: everything an orchestrator may do, each a recorded, replayable action.

An orchestrator must not touch the world itself (no I/O, no clock, no random):
it asks its context, and the context either finds the answer in history
(replay) or records a new action for the turn to commit. Every action takes the
next action number; replay checks the numbers line up (see
:class:`~wireframe.durable.errors.NonDeterminismError`).
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import msgpack

from wireframe.durable.errors import OrchestratorError
from wireframe.durable.history import ChildCreated, EventSent, TaskScheduled
from wireframe.durable.registry import name_of, spec_named
from wireframe.durable.tasks import AllTask, AnyTask, DurableTask
from wireframe.jobs.codec import encode_input, encode_operation, unstructure
from wireframe.jobs.operations import Operation, spec_of
from wireframe.jobs.retry import RetryPolicy

if TYPE_CHECKING:
    from wireframe.durable.replay import Replayer

__all__ = ["Context", "plain"]

I = TypeVar("I")  # noqa: E741
O = TypeVar("O")  # noqa: E741

_UUIDS = uuid.UUID("6f1b0c1e-2b57-4c1e-9d0e-77a1f0d7a001")


def plain(value: Any, typ: Any, what: str) -> Any:
    """``value`` as the plain data a store keeps (by its declared type ``typ``).

    Raises :class:`OrchestratorError` naming ``what`` if msgpack cannot carry it:
    found here, it fails the instance; found by the store, its commit would fail
    every time the instance is taken.
    """
    try:
        data = unstructure(value, typ)
        msgpack.packb(data, use_bin_type=True, datetime=False)
    except Exception as exc:
        raise OrchestratorError(
            f"{what} cannot be encoded ({type(exc).__name__}: {exc}); a value an "
            "orchestrator hands on must be plain data (or of its declared type)"
        ) from None
    return data


class Context:
    """What an orchestrator is given: its identity, its clock, and its actions."""

    def __init__(self, engine: Replayer, instance_id: str, version: str | None) -> None:
        self._engine = engine
        self.instance_id = instance_id
        self.version = version
        self._uuids = 0

    @property
    def is_replaying(self) -> bool:
        """True while the engine replays history (log only when this is False)."""
        return self._engine.is_replaying

    def now(self) -> dt.datetime:
        """The current turn's time from history (aware, UTC): never the wall clock."""
        return dt.datetime.fromtimestamp(self._engine.now, dt.UTC)

    def uuid(self) -> uuid.UUID:
        """A UUID that is the same on every replay (derived from the instance and the turn)."""
        self._uuids += 1
        return uuid.uuid5(_UUIDS, f"{self.instance_id}/{self._engine.now!r}/{self._uuids}")

    def call(
        self,
        op: Operation[I, O],
        input: I,
        *,
        retry: RetryPolicy | None = None,
        queue: str | None = None,
    ) -> DurableTask[O]:
        """Run ``op`` on ``input`` as a job (an activity); await it for its output.

        A failure raises :class:`~wireframe.durable.errors.ActivityFailed`; with
        ``retry``, the activity is first run again after the policy's delays
        (durable timers), up to its ``max_attempts``.
        """
        spec = spec_of(type(op))
        engine = self._engine
        action = engine.next_action()

        def body() -> bytes:
            label = f"the input of activity {spec.name!r} (action {action}) of {self.instance_id!r}"
            return encode_input(
                encode_operation(op), self.instance_id, action, input, spec, label=label
            )

        task: DurableTask[O] = DurableTask(f"activity {spec.name!r} (action {action})")
        event = TaskScheduled(action, spec.name, engine.job_body(action, body), queue or "")
        engine.schedule_activity(event, spec.output_type, task, retry, attempt=1)
        return task

    def sleep(self, seconds: float) -> DurableTask[None]:
        """A durable timer: resolves ``seconds`` after this turn's time, whatever crashes between."""
        if not (isinstance(seconds, int | float) and math.isfinite(seconds) and seconds >= 0):
            raise OrchestratorError(f"ctx.sleep({seconds!r}): seconds must be finite and >= 0")
        return self._engine.timer(self._engine.now + float(seconds))

    def sleep_until(self, when: dt.datetime) -> DurableTask[None]:
        """A durable timer resolving at ``when`` (an aware datetime)."""
        if when.tzinfo is None:
            raise OrchestratorError(f"ctx.sleep_until({when!r}): give an aware datetime")
        return self._engine.timer(when.timestamp())

    def wait_for_event(self, name: str, timeout: float | None = None) -> DurableTask[Any]:
        """The data of the next event ``name`` raised to this instance (buffered, in order).

        With ``timeout`` (seconds), raises
        :class:`~wireframe.durable.errors.EventTimeout` if none arrives in time. A
        wait that a ``ctx.any`` left behind (another of its tasks finished first)
        takes no event, unless it is awaited again: a later wait gets it.
        """
        if not name:
            raise OrchestratorError("ctx.wait_for_event needs a non-empty event name")
        if timeout is not None and not (math.isfinite(timeout) and timeout >= 0):
            raise OrchestratorError(f"ctx.wait_for_event timeout={timeout!r}: finite and >= 0")
        return self._engine.wait_for_event(name, timeout)

    def call_orchestrator(
        self, fn: Any, input: Any = None, *, instance_id: str | None = None
    ) -> DurableTask[Any]:
        """Start orchestrator ``fn`` as a child instance; await it for its output.

        A child id defaults to ``<this id>:<action number>`` (``<this id>#<generation>:<action
        number>`` in a run continued as new or replaced), the same on replay.
        A failed or terminated child raises
        :class:`~wireframe.durable.errors.ChildFailed`.
        """
        spec = spec_named(name_of(fn))
        action = self._engine.next_action()
        child_id = instance_id or self._engine.child_id(action)
        data = plain(input, spec.input_type, f"the input of sub-orchestration {spec.name!r}")
        task: DurableTask[Any] = DurableTask(f"sub-orchestration {spec.name!r} (action {action})")
        self._engine.start_child(ChildCreated(action, spec.name, child_id, data), spec, task)
        return task

    def send_event(self, instance_id: str, name: str, data: Any = None) -> None:
        """Raise event ``name`` with ``data`` on instance ``instance_id`` (once, durably)."""
        if not name:
            raise OrchestratorError("ctx.send_event needs a non-empty event name")
        action = self._engine.next_action()
        data = plain(data, Any, f"the data of event {name!r} sent to {instance_id!r}")
        self._engine.record(EventSent(action, instance_id, name, data))

    def set_status(self, value: Any) -> None:
        """The instance's custom status, for clients to read (plain data)."""
        self._engine.custom_status = plain(value, Any, "the custom status")

    def continue_as_new(self, input: Any) -> None:
        """Start afresh with ``input`` once the orchestrator returns (history is dropped)."""
        self._engine.continue_as_new(input)

    def all(self, tasks: Sequence[DurableTask[Any]]) -> DurableTask[list[Any]]:
        """Every task's value, in order; fails (with the first error) once all finished."""
        return AllTask(tasks)

    def any(self, tasks: Sequence[DurableTask[Any]]) -> DurableTask[tuple[int, Any]]:
        """``(index, value)`` of the first task to finish."""
        return AnyTask(tasks)
