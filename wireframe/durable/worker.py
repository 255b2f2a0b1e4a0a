"""The orchestration worker: take instances with new events under a lease, run a turn, commit.

One :class:`OrchestrationWorker` leases up to ``concurrency`` instances at a
time from its broker's :class:`~wireframe.durable.store.OrchestrationStore`,
runs each one's turn (:func:`~wireframe.durable.replay.run_turn`) and commits
what the turn decided (:func:`commit_of`) in one atomic step. Activities are
not run here: they are ordinary jobs, published by the commit, run by the
ordinary job workers, and their replies land in the instance's inbox.

*Kept engines.* A turn that committed leaves its replay engine in the state
the instance's history replays to; the worker keeps it (the ``cache`` most
recently used, by instance), so the instance's next turn applies only its new
events instead of replaying the whole history again. A kept engine is used
only if the instance's row is exactly as that commit left it (the same
generation, the revision one past the one taken, the history as long): any
other turn in between (another worker's after a lost lease, a replacement)
moved the revision, and the turn replays afresh — correctness never depends
on the cache. A turn that did not commit drops its engine.

Replay is pure CPU; a turn with many events to apply runs on a thread, so a big
replay never stalls the worker's other turns or its lease renewals. While a
turn runs its lease is renewed (one task renews them all). A turn whose lease was lost (``TurnLost``)
wrote nothing; the instance's events are taken again. A turn that fails in the
engine itself (an undecodable history, an orchestrator this worker does not
know) fails the instance with the reason, so it does not loop.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Sequence

import attrs
import trio

from wireframe.durable.history import (
    ChildCompleted,
    ChildCreated,
    ChildFailed,
    Event,
    EventRaised,
    EventSent,
    ExecutionCompleted,
    ExecutionStarted,
    OrchestratorStarted,
    TaskScheduled,
    TimerCreated,
    TimerFired,
)
from wireframe.durable.registry import spec_named
from wireframe.durable.replay import Replayer, Turn, recorded_activities
from wireframe.durable.store import (
    Commit,
    Instance,
    OrchestrationStore,
    Status,
    TurnLost,
    WorkItem,
    activity_message_id,
    inbox_channel,
)
from wireframe.jobs import instrument
from wireframe.jobs.broker import Broker, BrokerError, Message

__all__ = ["OrchestrationWorker", "commit_of", "store_of"]

_log = logging.getLogger("wireframe.durable")

#: Seconds a cancelled turn may take to give its instance back.
_RELEASE_GRACE = 5.0
#: Turns applying at least this many events (history replayed and new) run on a thread.
_THREAD_AT = 500
#: Replay engines kept by default (see the module doc): enough for every instance
#: in flight in a busy worker, a few KB each.
CACHE = 10_000
_STATUSES = {
    "pending": Status.PENDING,
    "running": Status.RUNNING,
    "continued": Status.RUNNING,
    "suspended": Status.SUSPENDED,
    "completed": Status.COMPLETED,
    "failed": Status.FAILED,
    "terminated": Status.TERMINATED,
}


def store_of(broker: Broker) -> OrchestrationStore:
    """``broker`` as an orchestration store; a clear error for a broker that keeps none."""
    if not isinstance(broker, OrchestrationStore):
        raise TypeError(
            f"broker {broker.url} keeps no durable orchestrations (its class "
            f"{type(broker).__name__} does not implement OrchestrationStore)"
        )
    return broker


def _started(item: WorkItem) -> ExecutionStarted | None:
    for event in (*item.history, *item.inbox):
        if isinstance(event, ExecutionStarted):
            return event
    return None


def commit_of(item: WorkItem, turn: Turn, queue: str, offset: float) -> Commit:
    """What to write for ``turn``: the history, the row and the outbox.

    ``offset`` is wall-clock seconds minus the broker's clock: a timer fires at
    a wall-clock time, and shows in the inbox at that reading of the broker's.
    """
    inst = item.instance
    activities: list[tuple[str, Message]] = []
    timers: list[tuple[float, Event]] = []
    sends: list[tuple[str, Event]] = []
    children: list[tuple[Instance, Event]] = []
    for event in turn.events:
        if isinstance(event, TaskScheduled):
            mid = activity_message_id(inst.id, inst.generation, event.action)
            message = Message(mid, event.body, reply_to=inbox_channel(inst.id))
            activities.append((event.queue or queue, message))
        elif isinstance(event, TimerCreated):
            if turn.status == "continued":  # it would fire into the next run, not this one
                continue
            timers.append((event.fire_at - offset, TimerFired(event.action, event.fire_at)))
        elif isinstance(event, EventSent):
            sends.append((event.instance_id, EventRaised(event.name, event.data)))
        elif isinstance(event, ChildCreated):
            child = Instance(
                event.instance_id, event.name, Status.PENDING, event.input, parent_id=inst.id
            )
            first = ExecutionStarted(
                event.name, event.input, inst.version, inst.id, parent_action=event.action
            )
            children.append((child, first))
    # how it began matters only at its end: not read (a scan of the history) every turn
    started = _started(item) if turn.finished or turn.status == "continued" else None
    if turn.finished and started is not None and started.parent_id:
        done: Event = (
            ChildCompleted(started.parent_action, turn.output, inst.id)
            if turn.status == "completed"
            else ChildFailed(started.parent_action, turn.error or turn.status, inst.id)
        )
        sends.append((started.parent_id, done))
    carryover: list[Event] = []
    if turn.status == "continued":
        name = started.name if started is not None else inst.name
        version = started.version if started is not None else inst.version
        parent = (started.parent_id, started.parent_action) if started else (None, 0)
        carryover = [ExecutionStarted(name, turn.output, version, *parent), *turn.carryover]
    return Commit(
        appended=[] if turn.status == "continued" else turn.events,
        status=_STATUSES[turn.status],
        output=turn.output,
        error=turn.error,
        custom_status=turn.custom_status,
        activities=activities,
        timers=timers,
        sends=sends,
        children=children,
        restart=turn.status == "continued",
        carryover=carryover,
    )


@attrs.frozen
class _Kept:
    """An engine whose turn committed, and the row it left: when the next turn may use it."""

    engine: Replayer
    generation: int
    revision: int
    events: int  # the history's length after that commit

    def fits(self, item: WorkItem) -> bool:
        """Whether ``item``'s instance is exactly as the commit left it."""
        inst = item.instance
        return (inst.generation, inst.revision, len(item.history)) == (
            self.generation,
            self.revision,
            self.events,
        )


def _broken(item: WorkItem) -> Commit:
    """The commit that fails an instance whose stored history cannot be read."""
    error = f"the stored history of instance {item.instance.id!r} cannot be read: {item.broken}"
    _log.error("orchestration worker: %s", error)
    return Commit(appended=[], status=Status.FAILED, error=error)


class OrchestrationWorker:
    """Runs the turns of a broker's orchestrations (see the module doc)."""

    def __init__(
        self,
        broker: Broker,
        *,
        concurrency: int = 64,
        queue: str = "default",
        lease: float | None = None,
        cache: int = CACHE,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"an orchestration worker needs concurrency >= 1, not {concurrency}")
        self.broker = broker
        self.store = store_of(broker)
        self.concurrency = concurrency
        self.queue = queue  # where activities go unless ctx.call(queue=...) says
        #: Seconds a turn holds its instance unless renewed: the broker URL's ``lease``.
        self.lease = broker.url.lease if lease is None else lease
        self.turns = 0
        #: Replay engines kept for the instances' next turns (see the module doc).
        self.cache = cache
        self._kept: collections.OrderedDict[str, _Kept] = collections.OrderedDict()
        self._running = 0
        self._held: dict[str, WorkItem] = {}  # the turns running, by lease token
        self._slot_free = trio.Event()
        self._stop = trio.Event()
        #: wall-clock seconds minus the broker's clock, read once: the turns' "now"
        self._offset = time.time() - broker.clock()

    def stop(self) -> None:
        """Take no more work; :meth:`serve` returns once the running turns committed."""
        self._stop.set()

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Take and run turns until :meth:`stop` (or cancelled)."""
        async with trio.open_nursery() as turns:
            task_status.started()
            turns.start_soon(self._keep_leases)
            with trio.CancelScope() as taking:
                turns.start_soon(self._stop_taking, taking)
                while True:
                    while self._running >= self.concurrency:
                        self._slot_free = trio.Event()
                        await self._slot_free.wait()
                    try:
                        items = await self.store.take_work(
                            self.concurrency - self._running, self.lease
                        )
                    except BrokerError as exc:  # unavailable, or a passing fault: look again
                        _log.warning("orchestration worker: cannot take work now: %s", exc)
                        await trio.sleep(1.0)
                        continue
                    for item in items:
                        self._running += 1
                        turns.start_soon(self._turn, item)
            with trio.move_on_after(self.lease):  # the turns running commit, then we stop
                while self._running:
                    self._slot_free = trio.Event()
                    await self._slot_free.wait()
            turns.cancel_scope.cancel()

    async def _stop_taking(self, taking: trio.CancelScope) -> None:
        await self._stop.wait()
        taking.cancel()

    async def _turn(self, item: WorkItem) -> None:
        """Run and commit one turn (its lease kept by :meth:`_keep_leases`); a lost
        lease or a broker error drops the turn (its events are taken again), and a
        turn cancelled with the worker releases its instance."""
        self._held[item.lease_token] = item
        try:
            with instrument.turning(item.instance.name, item.instance.id):
                if item.broken is not None:
                    self._kept.pop(item.instance.id, None)
                    await self.store.commit(item, _broken(item))
                else:
                    turn, engine = await self._run(item)
                    commit = commit_of(item, turn, self.queue, self._offset)
                    await self.store.commit(item, commit)
                    if engine is not None and turn.status in ("running", "pending", "suspended"):
                        self._keep(item, turn, engine)
            self.turns += 1
        except trio.Cancelled:
            # the worker is cancelled (its grace ran out): give the instance back, so
            # another worker takes it now rather than when the lease runs out
            with trio.CancelScope(shield=True), trio.move_on_after(_RELEASE_GRACE):
                try:
                    await self.store.release(item, 0.0)
                except BrokerError:  # committed after all, or lost: nothing to give back
                    pass
            raise
        except TurnLost as lost:
            _log.warning("orchestration worker: %s", lost, extra={"instance_id": item.instance.id})
        except BrokerError as failed:
            _log.warning(
                "orchestration worker: the turn of %r was dropped, to run again: %s",
                item.instance.id, failed, extra={"instance_id": item.instance.id},
            )  # fmt: skip
        except Exception:  # a bug of ours or a store's: one instance must not stop the rest
            _log.exception(
                "orchestration worker: the turn of %r failed in the worker itself; the "
                "instance is taken again once its lease runs out",
                item.instance.id, extra={"instance_id": item.instance.id},
            )  # fmt: skip
        finally:
            del self._held[item.lease_token]
            self._running -= 1
            self._slot_free.set()

    async def _run(self, item: WorkItem) -> tuple[Turn, Replayer | None]:
        """The turn of ``item``, and the engine that ran it (None if none could)."""
        inst = item.instance
        now = self._offset + self.broker.clock()
        kept = self._kept.pop(inst.id, None)  # used once: a turn that fails must not leave it
        try:
            spec = spec_named(inst.name)
        except Exception as exc:  # the history still tells how it began and why it failed
            error = f"{type(exc).__name__}: {exc}"
            done = ExecutionCompleted("failed", None, error)
            return Turn([OrchestratorStarted(now), *item.inbox, done], "failed", error=error), None
        history: Sequence[Event] = ()
        if kept is not None and kept.engine.spec is spec and kept.fits(item):
            engine = kept.engine  # the code registered under the name is the same
        else:
            recorded = recorded_activities(item.history)
            engine, history = Replayer(spec, inst.id, inst.generation, recorded), item.history
        if len(history) + len(item.inbox) < _THREAD_AT:
            return engine.turn(history, item.inbox, now), engine
        return await trio.to_thread.run_sync(engine.turn, history, item.inbox, now), engine

    def _keep(self, item: WorkItem, turn: Turn, engine: Replayer) -> None:
        """Keep the engine of a committed turn for the instance's next turn."""
        if self.cache < 1:
            return
        inst = item.instance
        events = len(item.history) + len(turn.events)
        self._kept[inst.id] = _Kept(engine, inst.generation, inst.revision + 1, events)
        while len(self._kept) > self.cache:
            self._kept.popitem(last=False)  # the least recently used

    async def _keep_leases(self) -> None:
        """Renew the lease of every turn running, every third of a lease.

        One task for all turns, not one per turn: most turns end long before a
        renewal is due, and a task per turn cost more than the turn's replay.
        A renewal that finds the lease gone leaves the turn to find out at its
        commit (which then writes nothing).
        """
        while True:
            await trio.sleep(self.lease / 3)
            for item in list(self._held.values()):
                if item.lease_token in self._held:
                    try:
                        await self.store.extend_work(item, self.lease)
                    except BrokerError as exc:  # lost, or not now: the commit will say
                        _log.warning("orchestration worker: %s", exc)
