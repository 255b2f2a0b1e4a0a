"""The replay engine: one turn of an orchestration, computed from its history and new events.

trio runs ready tasks in a deliberately random order, so an orchestrator run
as trio tasks would number its actions differently on each replay. The engine
therefore drives the orchestrator's coroutine itself, with ``send``: each
awaited :class:`~wireframe.durable.tasks.DurableTask` that is not done yet is
yielded back to it, and the coroutine is not sent on before an event resolves
that task. Everything is pure CPU and deterministic: the same history always
gives the same actions.

A turn (:func:`run_turn`) replays the recorded history (``is_replaying``),
then applies the turn's new events (an activity's completion, a timer that
fired, a raised event, a suspend or terminate), and returns what to append:
``OrchestratorStarted``, the new events, the actions the orchestrator took
(scheduled activities, timers, children, events sent) and, if it finished,
``ExecutionCompleted`` or ``ContinuedAsNew``.

Replay checks every recorded action against the one the code takes under the
same number and raises :class:`~wireframe.durable.errors.NonDeterminismError`
naming both; the turn then fails the instance. While suspended, events wait
in the history unprocessed until ``ExecutionResumed``.
"""

from __future__ import annotations

import collections
import gc
import re
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

import attrs

from wireframe.durable.context import Context, plain
from wireframe.durable.errors import (
    ActivityFailed,
    ChildFailed,
    EventTimeout,
    NonDeterminismError,
    OrchestratorError,
)
from wireframe.durable.history import (
    ACTIONS,
    ChildCompleted,
    ChildCreated,
    ContinuedAsNew,
    Event,
    EventRaised,
    EventSent,
    ExecutionCompleted,
    ExecutionResumed,
    ExecutionStarted,
    ExecutionSuspended,
    ExecutionTerminated,
    OrchestratorStarted,
    TaskCompleted,
    TaskFailed,
    TaskScheduled,
    TimerCreated,
    TimerFired,
)
from wireframe.durable.history import (
    ChildFailed as ChildFailedEvent,
)
from wireframe.durable.registry import OrchestratorSpec
from wireframe.durable.tasks import AllTask, AnyTask, DurableTask
from wireframe.jobs.codec import decode_result, structure
from wireframe.jobs.errors import ErrorKind, RemoteError
from wireframe.jobs.retry import RetryPolicy

__all__ = ["Replayer", "Turn", "describe_action", "recorded_activities", "run_turn"]

_NOT_CONTINUED = object()


@attrs.frozen
class Turn:
    """What one turn decided.

    ``events`` are appended to the history in order. ``status`` is
    ``running`` (waiting on something), ``pending`` (not started yet), ``suspended``, ``completed``,
    ``failed``, ``terminated`` or ``continued`` (continue-as-new: start afresh
    with ``output`` as input, carrying ``carryover`` events over).
    """

    events: list[Event]
    status: str
    output: Any = None
    error: str | None = None
    custom_status: Any = None
    carryover: list[Event] = attrs.Factory(list)

    @property
    def finished(self) -> bool:
        """Whether the instance is done (completed, failed or terminated)."""
        return self.status in ("completed", "failed", "terminated")


def describe_action(event: Event) -> str:
    """An action event in words, for non-determinism errors."""
    if isinstance(event, TaskScheduled):
        return f"activity {event.name!r}"
    if isinstance(event, TimerCreated):
        return "a timer"
    if isinstance(event, EventSent):
        return f"event {event.name!r} sent to {event.instance_id!r}"
    if isinstance(event, ChildCreated):
        return f"sub-orchestration {event.name!r}"
    return type(event).__name__


def _same_action(a: Event, b: Event) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, TaskScheduled | ChildCreated):
        return a.name == b.name  # type: ignore[union-attr]
    if isinstance(a, EventSent):
        return (a.name, a.instance_id) == (b.name, b.instance_id)  # type: ignore[union-attr]
    return True


class Replayer:
    """The state of one orchestration while a turn replays it (see the module doc)."""

    def __init__(
        self,
        spec: OrchestratorSpec,
        instance_id: str,
        generation: int = 0,
        recorded: frozenset[int] = frozenset(),
    ) -> None:
        self.spec = spec
        #: The actions history has as scheduled activities (their bodies are not needed).
        self._recorded = recorded
        self.instance_id = instance_id
        self.generation = generation  # the instance's run (see Instance.generation)
        self.ctx = Context(self, instance_id, None)
        self.is_replaying = True
        self.now = 0.0
        self.custom_status: Any = None
        self._actions = 0
        #: Actions the code took that history has not confirmed yet, by number.
        self._unconfirmed: dict[int, Event] = {}
        #: Job bodies of activities taken while replaying, encoded only if they are new.
        self._bodies: dict[int, Callable[[], bytes]] = {}
        #: What to do when the completion of an action arrives, by number.
        self._pending: dict[int, _Pending] = {}
        self._waiters: dict[str, collections.deque[DurableTask[Any]]] = {}
        self._buffered: dict[str, collections.deque[Any]] = {}
        #: The event name each wait (resolved or not) waits for.
        self._waits_for: dict[DurableTask[Any], str] = {}
        self._suspended: list[Event] | None = None
        self._coro: Coroutine[Any, Any, Any] | None = None
        self._awaiting: DurableTask[Any] | None = None
        self._continued: Any = _NOT_CONTINUED
        #: Inbox events of a continued turn that came after the code returned.
        self._late: list[Event] = []
        self.result: tuple[str, Any, str | None] | None = None  # (status, output, error)

    # -- what the context calls -------------------------------------------------------
    def next_action(self) -> int:
        """The number of the action being taken."""
        self._actions += 1
        return self._actions

    def child_id(self, action: int) -> str:
        """The default id of the child action ``action`` starts: this run's own (a run
        continued as new, or a replacement, takes the same action numbers again)."""
        if not self.generation:
            return f"{self.instance_id}:{action}"
        return f"{self.instance_id}#{self.generation}:{action}"

    def job_body(self, action: int, encode: Callable[[], bytes]) -> bytes:
        """An activity's job body: encoded now, or, while replaying an action history
        has, only if it is retried (a replayed action's body is never used).

        An action history lacks is encoded at once, replaying or not: its input may
        not encode, and the call must then raise as it did on the first run."""
        if not (self.is_replaying and action in self._recorded):
            return encode()
        self._bodies[action] = encode
        return b""

    def record(self, event: Event) -> None:
        """The code took action ``event``: history confirms it, or the turn appends it."""
        self._unconfirmed[event.action] = event  # type: ignore[union-attr]

    def schedule_activity(
        self,
        event: TaskScheduled,
        output_type: Any,
        task: DurableTask[Any],
        retry: RetryPolicy | None,
        attempt: int,
    ) -> None:
        """Record an activity; resolve ``task`` from its completion, retrying by ``retry``."""
        self.record(event)

        def completed(done: Event) -> None:
            error = self._activity_error(done, output_type, task)
            if error is None:
                return
            delay = retry.delay_before(attempt + 1) if retry is not None else None
            if delay is None:
                task.fail(ActivityFailed(event.name, error))
                return
            again = self.timer(self.now + delay)  # a durable pause, then the same job anew
            again._parents.append(
                _Then(lambda: self._retry(event, output_type, task, retry, attempt))
            )

        self._pending[event.action] = _Pending((TaskCompleted, TaskFailed), completed)

    def _retry(
        self,
        event: TaskScheduled,
        output_type: Any,
        task: DurableTask[Any],
        retry: RetryPolicy | None,
        attempt: int,
    ) -> None:
        action = self.next_action()
        again = TaskScheduled(action, event.name, event.body, event.queue)
        if event.action in self._bodies:
            self._bodies[action] = self._bodies[event.action]
        self.schedule_activity(again, output_type, task, retry, attempt + 1)

    def _activity_error(
        self, done: Event, output_type: Any, task: DurableTask[Any]
    ) -> RemoteError | None:
        """Resolve ``task`` from a completion; the remote error instead, if it failed."""
        if isinstance(done, TaskFailed):
            return RemoteError(ErrorKind.DEAD, "DeadLetter", done.reason)
        assert isinstance(done, TaskCompleted)
        try:
            result = decode_result(done.result, output_type)
        except Exception as exc:
            return RemoteError.from_exception(exc)
        if result.error is not None:
            return result.error
        task.resolve(result.value)
        return None

    def timer(self, fire_at: float) -> DurableTask[None]:
        """Record a durable timer firing at ``fire_at``; the task resolves when it fired."""
        action = self.next_action()
        task: DurableTask[None] = DurableTask(f"timer (action {action})")
        self.record(TimerCreated(action, fire_at))
        self._pending[action] = _Pending((TimerFired,), lambda _: task.resolve(None))
        return task

    def wait_for_event(self, name: str, timeout: float | None) -> DurableTask[Any]:
        """The next event ``name``: from the buffer at once, or when it is raised."""
        task: DurableTask[Any] = DurableTask(f"event {name!r}")
        buffered = self._buffered.get(name)
        if buffered:
            task.resolve(buffered.popleft())
            return task
        self._waiters.setdefault(name, collections.deque()).append(task)
        self._waits_for[task] = name
        if timeout is not None:
            timer = self.timer(self.now + timeout)
            timer._parents.append(_Then(lambda: self._time_out(name, timeout, task)))
        return task

    def _time_out(self, name: str, timeout: float, task: DurableTask[Any]) -> None:
        if task.done:
            return
        self._waiters[name].remove(task)
        task.fail(EventTimeout(name, timeout))

    def start_child(
        self, event: ChildCreated, spec: OrchestratorSpec, task: DurableTask[Any]
    ) -> None:
        """Record a child instance; resolve ``task`` from its completion."""
        self.record(event)

        def completed(done: Event) -> None:
            if isinstance(done, ChildCompleted):
                try:
                    task.resolve(structure(done.output, spec.output_type, "$.output"))
                except Exception as exc:
                    task.fail(exc)
            else:
                assert isinstance(done, ChildFailedEvent)
                task.fail(ChildFailed(event.name, event.instance_id, done.error))

        kinds = (ChildCompleted, ChildFailedEvent)
        self._pending[event.action] = _Pending(kinds, completed, event.instance_id)

    def continue_as_new(self, input: Any) -> None:
        """Note that the instance starts afresh with ``input`` when the code returns."""
        where = f"the input orchestrator {self.spec.name!r} continues as new with"
        self._continued = plain(input, self.spec.input_type, where)

    # -- applying events --------------------------------------------------------------
    def apply(self, event: Event) -> None:
        """Apply one event of history (or of this turn) to the orchestration."""
        if self.result is not None:
            if isinstance(event, ACTIONS):
                self._confirm(event)  # history has more actions than the code now takes
            elif self.result[0] == "continued":  # the turn's inbox after the code returned
                if isinstance(event, ExecutionTerminated):
                    self._terminate(event)
                elif isinstance(event, EventRaised | ExecutionSuspended | ExecutionResumed):
                    self._late.append(event)  # not consumed: the next generation's
            return
        if self._suspended is not None and not isinstance(
            event, ExecutionResumed | ExecutionTerminated | OrchestratorStarted
        ):  # the turns' times still count: what runs at the resume runs at its time
            if not isinstance(event, ExecutionSuspended):  # suspended already: one resume does
                self._suspended.append(event)
            return
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event)
        elif isinstance(event, ACTIONS):
            self._confirm(event)

    def _start(self, event: ExecutionStarted) -> None:
        self.ctx.version = event.version
        args: list[Any] = [self.ctx]
        if self.spec.input_type is not type(None):
            where = f"the input of orchestrator {self.spec.name!r}"
            args.append(structure(event.input, self.spec.input_type, where))
        self._coro = self.spec.fn(*args)
        self._step()

    def _confirm(self, event: Event) -> None:
        action: int = event.action  # type: ignore[union-attr]
        mine = self._unconfirmed.pop(action, None)
        if mine is None:
            raise NonDeterminismError(action, describe_action(event), "nothing")
        if not _same_action(mine, event):
            raise NonDeterminismError(action, describe_action(event), describe_action(mine))

    def _complete(self, event: Event) -> None:
        action: int = event.action  # type: ignore[union-attr]
        pending = self._pending.get(action)
        # else a duplicate, or of an earlier run's action of that number (a child that
        # outlived a continue-as-new): not this run's
        if pending is not None and pending.takes(event):
            del self._pending[action]
            pending.fn(event)
            self._step()

    def _raise_event(self, event: EventRaised) -> None:
        for task in self._waiters.get(event.name, ()):
            if self._wanted(task):  # the oldest wait something still waits on
                self._waiters[event.name].remove(task)
                task.resolve(event.data)
                self._step()
                return
        self._buffered.setdefault(event.name, collections.deque()).append(event.data)

    def _wanted(self, task: DurableTask[Any]) -> bool:
        """Whether something may still await ``task``: the code does now, it stands on its
        own, or an unfinished ``all``/``any`` that is wanted holds it. The wait of an
        ``any`` that another child won is not: an event goes to a wait that is."""
        if task is self._awaiting:
            return True
        composites = [p for p in task._parents if isinstance(p, AllTask | AnyTask)]
        return not composites or any(not p.done and self._wanted(p) for p in composites)

    def _revive(self, task: DurableTask[Any]) -> None:
        """The code awaits ``task``: a wait in it left behind (see :meth:`_wanted`) takes
        the events raised meanwhile, in order."""
        if task.done:
            return
        if isinstance(task, AllTask | AnyTask):
            for child in task.children:
                self._revive(child)
            return
        name = self._waits_for.get(task)
        buffered = self._buffered.get(name) if name is not None else None
        if name is not None and buffered:
            self._waiters[name].remove(task)
            task.resolve(buffered.popleft())

    def _suspend(self, _: ExecutionSuspended) -> None:
        self._suspended = []

    def _resume(self, _: ExecutionResumed) -> None:
        waiting, self._suspended = self._suspended or [], None
        for event in waiting:
            self.apply(event)

    def _terminate(self, event: ExecutionTerminated) -> None:
        self._finish("terminated", event.output, None)

    def _finish(self, status: str, output: Any, error: str | None) -> None:
        self.result = (status, output, error)
        if self._coro is not None:
            self._coro.close()

    def _step(self) -> None:
        """Send the coroutine on while what it awaits is done."""
        coro = self._coro
        while coro is not None and self.result is None:
            if self._awaiting is not None and not self._awaiting.done:
                return
            self._awaiting = None
            try:
                yielded = coro.send(None)
            except StopIteration as stop:
                self._returned(stop.value)
                return
            except Exception as exc:
                if _FOREIGN_LOOP.search(str(exc)):  # trio or asyncio, called outside its loop
                    exc = _foreign_await(
                        self.spec.name,
                        f"something that needs an event loop ({type(exc).__name__}: {exc})",
                    )
                self.result = ("failed", None, _named(exc))
                return
            if not isinstance(yielded, DurableTask):
                self._finish("failed", None, _named(_foreign_await(self.spec.name, yielded)))
                return
            self._awaiting = yielded
            self._revive(yielded)

    def _returned(self, value: Any) -> None:
        if self._continued is not _NOT_CONTINUED:
            self.result = ("continued", self._continued, None)
            return
        try:
            output = plain(value, self.spec.output_type, f"the output of {self.spec.name!r}")
        except OrchestratorError as exc:
            self.result = ("failed", None, _named(exc))
            return
        self.result = ("completed", output, None)

    def turn(self, history: Iterable[Event], new: Iterable[Event], now: float) -> Turn:
        """Replay ``history``, apply the ``new`` events at time ``now``: one turn.

        A fresh engine replays the whole history. An engine whose last turn
        committed (and did not finish the instance) may take the next turn
        with no history at all: it is the state that history would replay to,
        so only the new events are applied (the orchestration worker keeps
        such engines, checked against the instance's revision, so that a turn
        costs the new events rather than the whole history).
        """
        history, new = list(history), list(new)
        if len(history) + len(new) < _QUIET_GC_AT or not gc.isenabled():
            return _turn(self, history, new, now)
        # Pause Python's cyclic collector for a long turn: every task and event a
        # replay makes lives until the turn ends, so the collector's passes would
        # scan a heap that only grows, again and again (a fan-out of 10,000 took
        # 486 ms with it, 127 ms without: linear). Nothing of the turn is garbage
        # before it ends; the collector resumes after. (A plain try/finally: a
        # contextmanager here measured 100 ms slower on that turn.)
        gc.disable()
        try:
            return _turn(self, history, new, now)
        finally:
            gc.enable()

    def carryover(self) -> list[Event]:
        """Events raised but never consumed, and the client's suspend or resume that came
        after the code continued as new: the next generation keeps them."""
        buffered = [EventRaised(n, data) for n, queue in self._buffered.items() for data in queue]
        return [*buffered, *self._late]

    def new_actions(self) -> list[Event]:
        """The actions the code took that history does not have yet, in order."""
        events = [self._unconfirmed[a] for a in sorted(self._unconfirmed)]
        return [
            attrs.evolve(e, body=self._bodies[e.action]())
            if isinstance(e, TaskScheduled) and e.action in self._bodies
            else e
            for e in events
        ]


@attrs.frozen
class _Pending:
    """An action waiting for its completion: of which kinds, and (a child's) of which instance."""

    kinds: tuple[type, ...]
    fn: Callable[[Event], None]
    child_id: str | None = None

    def takes(self, event: Event) -> bool:
        """Whether ``event`` completes this action."""
        if not isinstance(event, self.kinds):
            return False
        other = getattr(event, "instance_id", None)
        return other is None or self.child_id is None or other == self.child_id


class _Then:
    """A parent of a task that only calls ``fn`` when the task resolves (retries, timeouts)."""

    def __init__(self, fn: Callable[[], None]) -> None:
        self.fn = fn

    def child_done(self, _: DurableTask[Any]) -> None:
        self.fn()


def _named(exc: BaseException) -> str:
    """An error as an instance records it: the exception's type, then its message."""
    return f"{type(exc).__name__}: {exc}"


#: What trio and asyncio say when awaited outside their loop (the engine drives no loop).
_FOREIGN_LOOP = re.compile(r"must be called from async context|no running event loop")


def _foreign_await(name: str, yielded: object) -> OrchestratorError:
    what = yielded if isinstance(yielded, str) else repr(yielded)
    return OrchestratorError(
        f"orchestrator {name!r} awaited {what}, which is not one of its context's "
        "awaitables; an orchestrator may await only ctx.call, ctx.sleep, "
        "ctx.wait_for_event, ctx.call_orchestrator, ctx.all and ctx.any (do I/O and "
        "sleeping in activities)"
    )


_HANDLERS: dict[type, Callable[[Replayer, Any], None]] = {
    ExecutionStarted: Replayer._start,
    OrchestratorStarted: lambda r, e: setattr(r, "now", e.at),
    TaskCompleted: Replayer._complete,
    TaskFailed: Replayer._complete,
    TimerFired: Replayer._complete,
    ChildCompleted: Replayer._complete,
    ChildFailedEvent: Replayer._complete,
    EventRaised: Replayer._raise_event,
    ExecutionSuspended: Replayer._suspend,
    ExecutionResumed: Replayer._resume,
    ExecutionTerminated: Replayer._terminate,
    ContinuedAsNew: lambda r, e: None,
    ExecutionCompleted: lambda r, e: None,
}


def run_turn(
    spec: OrchestratorSpec,
    instance_id: str,
    history: Iterable[Event],
    new: Iterable[Event],
    now: float,
    generation: int = 0,
) -> Turn:
    """Replay ``history``, apply the ``new`` events at time ``now``: what to append, and how it stands.

    ``generation`` is the instance's run (its row's), which default child ids name.
    """
    history = list(history)
    engine = Replayer(spec, instance_id, generation, recorded_activities(history))
    return engine.turn(history, new, now)


def recorded_activities(history: Iterable[Event]) -> frozenset[int]:
    """The actions ``history`` has as scheduled activities (what :class:`Replayer` takes)."""
    return frozenset(e.action for e in history if isinstance(e, TaskScheduled))


#: Turns of at least this many events run with the cyclic garbage collector paused.
_QUIET_GC_AT = 2000


def _turn(
    engine: Replayer,
    history: list[Event],
    new: list[Event],
    now: float,
) -> Turn:
    appended: list[Event] = [OrchestratorStarted(now)]
    try:
        for event in history:
            engine.apply(event)
        engine.is_replaying = False
        engine.apply(appended[0])
        for event in new:
            appended.append(event)
            engine.apply(event)
    except Exception as exc:  # diverged from history, a payload it cannot decode, an engine bug
        engine._finish("failed", None, _named(exc))
    # not started: its start_at is still ahead, and an event came first
    waiting = "running" if engine._coro is not None else "pending"
    status, output, error = engine.result or (
        "suspended" if engine._suspended is not None else waiting,
        None,
        None,
    )
    if status not in ("failed", "terminated"):  # a failed turn's actions never happen
        appended += engine.new_actions()
    # what the code took is in ``appended`` now: a turn that goes on from this engine
    # (``Replayer.turn`` with no history, once this turn committed) takes it as history
    engine._unconfirmed.clear()
    carryover: list[Event] = []
    if status == "continued":
        appended.append(ContinuedAsNew(output))
        carryover = engine.carryover()
    elif engine.result is not None:
        appended.append(ExecutionCompleted(status, output, error))
    return Turn(appended, status, output, error, engine.custom_status, carryover)
