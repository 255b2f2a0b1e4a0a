"""The memory broker's orchestration store: instances, histories and inboxes in one process.

:class:`Orchestrations` lives in the broker's shared :class:`~.state.State`,
so runtimes, job workers and orchestration workers opened on one
``memory://NAME`` see the same instances. Everything a commit does happens
without a checkpoint in between, which is what makes it atomic here; an
activity's reply reaches its instance's inbox from inside the job's
``complete`` (``State.post``). Times are trio's clock (leases, visibility), so
``MockClock`` drives orchestrations in tests; instance rows carry wall-clock
seconds derived from it.
"""

from __future__ import annotations

import bisect
import itertools
import math
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs
import trio

from wireframe.durable.history import (
    Event,
)
from wireframe.durable.store import (
    INBOX_PREFIX,
    KEPT_ON_RESTART,
    Commit,
    Instance,
    InstanceExists,
    Status,
    TurnLost,
    UnknownInstance,
    WorkItem,
    child_exists,
    reply_event,
)
from wireframe.jobs.broker import Message, Reply

if TYPE_CHECKING:
    from wireframe.jobs.brokers.memory.state import State

__all__ = ["MemoryOrchestrationStore", "Orchestrations"]


class _Inst:
    __slots__ = ("changed", "expires", "history", "inbox", "row", "token")

    def __init__(self, row: Instance) -> None:
        self.row = row
        self.history: list[Event] = []
        self.inbox: list[tuple[float, int, Event]] = []  # by (visible at, seq)
        self.token: str | None = None
        self.expires = -math.inf
        self.changed = trio.Event()

    def touch(self, **changes: object) -> None:
        """Update the row (and its revision); wake whoever waits for a change."""
        self.row = attrs.evolve(self.row, revision=self.row.revision + 1, **changes)  # type: ignore[arg-type]
        self.changed.set()
        self.changed = trio.Event()


class Orchestrations:
    """Every instance of one memory broker name (see the module doc)."""

    def __init__(self, publish: Callable[[str, Message], None]) -> None:
        self.instances: dict[str, _Inst] = {}
        self._publish = publish
        self._seq = itertools.count()
        self._wake = trio.Event()
        #: wall-clock seconds minus trio's clock, read once
        self.offset = time.time() - trio.current_time()

    def epoch(self) -> float:
        """Now, as wall-clock seconds (moved by trio's clock)."""
        return self.offset + trio.current_time()

    def notify(self) -> None:
        self._wake.set()
        self._wake = trio.Event()

    def put(self, inst: _Inst, event: Event, visible_at: float) -> None:
        bisect.insort(inst.inbox, (visible_at, next(self._seq), event), key=lambda e: e[:2])
        self.notify()

    def deliver(self, channel: str, reply: Reply) -> None:
        """An activity's reply, posted by the job's completion: into its instance's inbox."""
        inst = self.instances.get(channel[len(INBOX_PREFIX) :])
        if inst is None:
            return  # purged meanwhile: nobody waits for it
        event = reply_event(inst.row.id, inst.row.generation, reply)
        if event is not None:
            self.put(inst, event, trio.current_time())

    def visible(self, inst: _Inst, now: float) -> list[tuple[float, int, Event]]:
        return [e for e in inst.inbox if e[0] <= now]


class MemoryOrchestrationStore:
    """The :class:`~wireframe.durable.store.OrchestrationStore` role of a memory broker.

    A mixin of :class:`~wireframe.jobs.brokers.memory.MemoryBroker`: the
    instances live in its shared state.
    """

    _state: State

    def _orchestrations(self) -> Orchestrations:
        return self._state.orchestrations()

    async def create_instance(
        self, instance: Instance, first: Event, *, visible_at: float, replace: bool
    ) -> None:
        """Create ``instance`` with ``first`` in its inbox (see the protocol)."""
        await trio.lowlevel.checkpoint()
        o = self._orchestrations()
        known = o.instances.get(instance.id)
        if known is not None and not (replace and known.row.status.finished):
            raise InstanceExists(
                f"an instance with id {instance.id!r} exists ({known.row.status.value})"
            )
        now = o.epoch()
        changes: dict[str, object] = {"created_at": now, "updated_at": now}
        if known is not None:  # a replacement goes on from the old run (see the protocol)
            changes.update(revision=known.row.revision + 1, generation=known.row.generation + 1)
        inst = _Inst(attrs.evolve(instance, **changes))  # type: ignore[arg-type]
        o.instances[instance.id] = inst
        o.put(inst, first, visible_at)
        if known is not None:
            known.changed.set()

    async def take_work(self, limit: int, lease: float) -> list[WorkItem]:
        """Lease up to ``limit`` instances with visible inbox events; block until one."""
        await trio.lowlevel.checkpoint()
        o = self._orchestrations()
        while True:
            now, items, wake_at = trio.current_time(), [], math.inf
            for inst in o.instances.values():
                if not inst.inbox:
                    continue
                if inst.row.status.finished:  # nothing more happens to it: drop what came
                    inst.inbox.clear()
                    continue
                if inst.token is not None and inst.expires > now:
                    wake_at = min(wake_at, inst.expires)
                    continue
                visible = o.visible(inst, now)
                if not visible:
                    wake_at = min(wake_at, inst.inbox[0][0])
                    continue
                inst.token, inst.expires = uuid.uuid4().hex, now + lease
                taken = tuple(seq for _, seq, _ in visible)
                items.append(
                    WorkItem(
                        inst.row, list(inst.history), [e for *_, e in visible], inst.token, taken
                    )
                )
                if len(items) == limit:
                    break
            if items:
                return items
            wake = o._wake
            with trio.move_on_at(wake_at):
                await wake.wait()

    def _leased(self, item: WorkItem, what: str) -> _Inst:
        inst = self._orchestrations().instances.get(item.instance.id)
        if inst is None or inst.token != item.lease_token or inst.expires <= trio.current_time():
            raise TurnLost(item.instance.id, what)
        return inst

    async def commit(self, item: WorkItem, commit: Commit) -> None:
        """Apply a turn atomically; ``LockLost`` (writing nothing) if the lease is gone."""
        await trio.lowlevel.checkpoint_if_cancelled()
        o = self._orchestrations()
        inst = self._leased(item, "the commit")
        now = trio.current_time()
        taken = set(item.taken)
        inst.inbox = [e for e in inst.inbox if e[1] not in taken]
        generation = inst.row.generation
        if commit.restart:
            inst.history = list(commit.appended)
            inst.inbox = [e for e in inst.inbox if isinstance(e[2], KEPT_ON_RESTART)]
            generation += 1
        else:
            inst.history.extend(commit.appended)
        for queue, message in commit.activities:
            o._publish(queue, message)
        for visible_at, event in commit.timers:
            o.put(inst, event, visible_at)
        for iid, event in commit.sends:
            other = o.instances.get(iid)
            if other is not None and not other.row.status.finished:
                o.put(other, event, now)
        for child, first in commit.children:
            if child.id in o.instances:  # taken by another instance: the child fails
                o.put(inst, child_exists(child, first), now)
                continue
            epoch = o.epoch()
            new = _Inst(attrs.evolve(child, created_at=epoch, updated_at=epoch))
            o.instances[child.id] = new
            o.put(new, first, now)
        for event in commit.carryover:
            o.put(inst, event, -math.inf)  # ahead of what waits: ExecutionStarted first
        if commit.status.finished:
            inst.inbox.clear()  # its last turn: what it left (timers, events) never runs
        inst.token, inst.expires = None, -math.inf
        inst.touch(
            status=commit.status,
            output=commit.output,
            error=commit.error,
            custom_status=commit.custom_status,
            updated_at=o.epoch(),
            generation=generation,
        )
        o.notify()

    async def release(self, item: WorkItem, delay: float) -> None:
        """Give the instance back without a turn; its events show again after ``delay``."""
        await trio.lowlevel.checkpoint_if_cancelled()
        o = self._orchestrations()
        inst = self._leased(item, "the release")
        inst.token = None
        if delay > 0:
            inst.token, inst.expires = "released", trio.current_time() + delay
        o.notify()

    async def extend_work(self, item: WorkItem, lease: float) -> None:
        """Renew the lease of a long turn; ``LockLost`` if it is gone."""
        await trio.lowlevel.checkpoint_if_cancelled()
        self._leased(item, "renewing the lease").expires = trio.current_time() + lease

    async def send_event(self, instance_id: str, event: Event) -> None:
        """Put ``event`` in the instance's inbox (dropped if it finished); :class:`UnknownInstance` if none."""
        await trio.lowlevel.checkpoint()
        o = self._orchestrations()
        inst = o.instances.get(instance_id)
        if inst is None:
            raise UnknownInstance(f"no orchestration instance has id {instance_id!r}")
        if not inst.row.status.finished:  # a finished instance takes no more turns
            o.put(inst, event, trio.current_time())

    async def instance(self, instance_id: str) -> Instance | None:
        """The instance's row, or None."""
        await trio.lowlevel.checkpoint()
        inst = self._orchestrations().instances.get(instance_id)
        return None if inst is None else inst.row

    async def history(self, instance_id: str) -> list[Event]:
        """The instance's history, in order (empty for an unknown id)."""
        await trio.lowlevel.checkpoint()
        inst = self._orchestrations().instances.get(instance_id)
        return [] if inst is None else list(inst.history)

    async def instances(self, status: Status | None, limit: int) -> list[Instance]:
        """Instances (of one status, or all), most recently updated first."""
        await trio.lowlevel.checkpoint()
        rows = [i.row for i in self._orchestrations().instances.values()]
        rows = [r for r in rows if status is None or r.status is status]
        rows.sort(key=lambda r: (-r.updated_at, r.id))
        return rows[:limit]

    async def wait_changed(self, instance_id: str, revision: int) -> Instance:
        """The instance once its revision is past ``revision`` (blocks)."""
        while True:
            inst = self._orchestrations().instances.get(instance_id)
            if inst is None:
                raise UnknownInstance(f"no orchestration instance has id {instance_id!r}")
            if inst.row.revision > revision:
                await trio.lowlevel.checkpoint()
                return inst.row
            await inst.changed.wait()

    async def purge_instance(self, instance_id: str) -> bool:
        """Remove a finished instance with its history; False if there is none."""
        await trio.lowlevel.checkpoint()
        o = self._orchestrations()
        inst = o.instances.get(instance_id)
        if inst is None or not inst.row.status.finished:
            return False
        del o.instances[instance_id]
        inst.changed.set()
        return True
