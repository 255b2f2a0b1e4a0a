"""What the orchestration store's conformance classes share: suite instances, turns, helpers.

:class:`OrchestrationStoreBase` is the :class:`~wireframe.testing.conformance.base.ConformanceBase`
of :class:`~wireframe.testing.OrchestrationStoreConformance` (see
:mod:`wireframe.testing.conformance.orchestrations`): the store of a test's
broker, suite instances created as a client would, work items taken within
patience, and turns written by hand (:func:`turn`) instead of by the replay
engine.
"""

from __future__ import annotations

import math
import time
from typing import Any

import trio

from wireframe.durable.history import (
    Event,
    ExecutionStarted,
    OrchestratorStarted,
)
from wireframe.durable.store import (
    Commit,
    Instance,
    OrchestrationStore,
    Status,
    WorkItem,
    activity_message_id,
    inbox_channel,
)
from wireframe.jobs.broker import Broker, Message
from wireframe.testing.conformance.base import ConformanceBase

__all__ = [
    "DATA",
    "LONG",
    "NAME",
    "OrchestrationStoreBase",
    "Taker",
    "activity",
    "row",
    "started",
    "turn",
]

#: The orchestrator name the suite's instances carry (no orchestrator runs).
NAME = "conformance-orchestrator"
#: A lease (seconds) that does not run out within a test.
LONG = 600.0
#: Plain data of every kind a payload may hold, to see it come back unchanged.
DATA: dict[str, Any] = {
    "text": "héllo ✓",
    "int": -(2**40),
    "float": 1.5,
    "flags": [True, False, None],
    "nested": {"list": [1, "two", {"three": 3.0}], "empty": {}},
}


def started(input: Any = None, *, parent_id: str | None = None, action: int = 0) -> Event:
    """The first event of a suite instance."""
    return ExecutionStarted(NAME, input, None, parent_id, action)


def row(iid: str, input: Any = None, *, parent_id: str | None = None) -> Instance:
    """A new suite instance's row, as a client would create it."""
    return Instance(iid, NAME, Status.PENDING, input, parent_id=parent_id)


def activity(iid: str, action: int, body: bytes = b"", generation: int = 0) -> Message:
    """The job message of action ``action``, an activity of ``iid``: replying to its inbox."""
    mid = activity_message_id(iid, generation, action)
    return Message(mid, body, reply_to=inbox_channel(iid))


def turn(item: WorkItem, *actions: Event, status: Status = Status.RUNNING, **fields: Any) -> Commit:
    """A commit of ``item``'s turn: its start, the inbox events it took, then ``actions``."""
    appended = [OrchestratorStarted(time.time()), *item.inbox, *actions]
    return Commit(appended, status, **fields)


class Taker:
    """A ``take_work`` in the background: ``items`` once it returned, ``done`` set then."""

    def __init__(self, store: OrchestrationStore, lease: float) -> None:
        self.store, self.lease = store, lease
        self.items: list[WorkItem] = []
        self.done = trio.Event()

    async def run(self) -> None:
        self.items = await self.store.take_work(1, self.lease)
        self.done.set()


class OrchestrationStoreBase(ConformanceBase):
    """Helpers of the orchestration store's conformance classes; it holds no test itself."""

    #: Seconds ahead a test puts a first event or a timer, and waits for nothing to happen.
    delay: float = 0.3

    # -- helpers ----------------------------------------------------------------------
    def store(self, broker: Broker) -> OrchestrationStore:
        """``broker`` as an orchestration store (the suite fails plainly if it is not one)."""
        assert isinstance(broker, OrchestrationStore), (
            f"{type(broker).__name__} does not implement OrchestrationStore"
        )
        return broker

    async def create(
        self,
        store: OrchestrationStore,
        iid: str,
        input: Any = None,
        *,
        visible_at: float = -math.inf,
        replace: bool = False,
    ) -> None:
        """Create suite instance ``iid`` with ``input`` (visible at once, as the client does)."""
        await store.create_instance(
            row(iid, input), started(input), visible_at=visible_at, replace=replace
        )

    async def take_turns(
        self, store: OrchestrationStore, n: int, *, limit: int = 1, lease: float = LONG
    ) -> list[WorkItem]:
        """Take exactly ``n`` work items (calls of at most ``limit``), within patience."""
        out: list[WorkItem] = []
        with trio.fail_after(self.patience):
            while len(out) < n:
                want = min(limit, n - len(out))
                batch = await store.take_work(want, lease)
                assert batch, "take_work returned an empty list; it must block instead"
                assert len(batch) <= want, f"take_work(limit={want}) returned {len(batch)}"
                out += batch
        ids = [i.instance.id for i in out]
        assert len(set(ids)) == len(ids), f"an instance was handed out twice at once: {ids}"
        return out

    async def take_turn(self, store: OrchestrationStore, *, lease: float = LONG) -> WorkItem:
        """Take one work item within patience."""
        return (await self.take_turns(store, 1, lease=lease))[0]

    async def assert_no_work(self, store: OrchestrationStore, within: float) -> None:
        """``take_work`` hands out nothing for ``within`` seconds."""
        with trio.move_on_after(within) as scope:
            got = await store.take_work(100, LONG)
        assert scope.cancelled_caught, f"expected no work, got {[i.instance.id for i in got]}"

    async def taken(self, taker: Taker) -> WorkItem:
        """What a background ``take_work`` returned, within patience."""
        with trio.fail_after(self.patience):
            await taker.done.wait()
        assert len(taker.items) == 1, taker.items
        return taker.items[0]

    async def instance_of(self, store: OrchestrationStore, iid: str) -> Instance:
        """The row of ``iid``, which must exist."""
        inst = await store.instance(iid)
        assert inst is not None, f"instance {iid!r} is missing"
        return inst

    async def finish(self, store: OrchestrationStore, iid: str, output: Any = None) -> None:
        """Run ``iid``'s turn (the only one with work) to completion."""
        item = await self.take_turn(store)
        assert item.instance.id == iid, item
        await store.commit(item, turn(item, status=Status.COMPLETED, output=output))
