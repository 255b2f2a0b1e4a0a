"""The orchestration worker's kept replay engines: a speed-up that correctness never depends on.

A worker keeps the engine of a turn it committed, so the instance's next turn
applies only its new events. These tests drive two workers' turns by hand on
one memory store and check that a kept engine is used only when the instance
is exactly as its commit left it: after another worker's turn, or after a turn
that lost its lease, the history is replayed afresh.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import trio

from wireframe import durable, jobs
from wireframe.durable import history as h
from wireframe.durable import worker as worker_module
from wireframe.durable.replay import Replayer
from wireframe.durable.store import OrchestrationStore


@durable.orchestrator(name="kept-collects")
async def collects(ctx: durable.Context, n: int) -> list[int]:
    got = []
    for _ in range(n):
        got.append(await ctx.wait_for_event("x"))
    return got


class _Counting(Replayer):
    made = 0

    def __init__(self, *args: object, **kwargs: object) -> None:
        type(self).made += 1
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def fresh_replays(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_Counting]]:
    """Counts the engines the workers make (each one a replay of the whole history)."""
    _Counting.made = 0
    monkeypatch.setattr(worker_module, "Replayer", _Counting)
    yield _Counting


async def _turn_by(worker: durable.OrchestrationWorker, store: OrchestrationStore) -> None:
    [item] = await store.take_work(1, lease=30)
    worker._running += 1  # as serve counts the turns it starts
    await worker._turn(item)


async def test_a_kept_engine_takes_the_next_turn_without_replaying(
    fresh_replays: type[_Counting],
) -> None:
    async with jobs.open_broker(f"memory://kept-{uuid.uuid4().hex[:8]}") as broker:
        client = durable.Client(broker)
        iid = await client.start(collects, 3)
        worker = durable.OrchestrationWorker(broker)
        await _turn_by(worker, client.store)
        for x in (1, 2, 3):
            await client.raise_event(iid, "x", x)
            await _turn_by(worker, client.store)
        inst = await client.get(iid)
        assert inst is not None and inst.output == [1, 2, 3]
    assert fresh_replays.made == 1  # the first turn's; the others went on from it
    assert iid not in worker._kept  # a finished instance's engine is not kept


async def test_a_kept_engine_is_not_used_after_another_worker_took_a_turn(
    fresh_replays: type[_Counting],
) -> None:
    async with jobs.open_broker(f"memory://kept-{uuid.uuid4().hex[:8]}") as broker:
        client = durable.Client(broker)
        iid = await client.start(collects, 3)
        a, b = durable.OrchestrationWorker(broker), durable.OrchestrationWorker(broker)
        await _turn_by(a, client.store)
        await client.raise_event(iid, "x", 1)
        await _turn_by(b, client.store)  # a's engine no longer is what history replays to
        await client.raise_event(iid, "x", 2)
        await _turn_by(a, client.store)
        await client.raise_event(iid, "x", 3)
        await _turn_by(a, client.store)
        inst = await client.get(iid)
        history = await client.history(iid)
    assert inst is not None and inst.output == [1, 2, 3]
    assert fresh_replays.made == 3  # a's first, b's, a's after b's; a's last went on
    assert sum(isinstance(e, h.EventRaised) for e in history) == 3


async def test_a_turn_that_lost_its_lease_keeps_no_engine() -> None:
    async with jobs.open_broker(f"memory://kept-{uuid.uuid4().hex[:8]}") as broker:
        client = durable.Client(broker)
        iid = await client.start(collects, 2)
        a, b = durable.OrchestrationWorker(broker), durable.OrchestrationWorker(broker)
        [stale] = await client.store.take_work(1, lease=0.05)
        await trio.sleep(0.1)  # its lease ran out
        await _turn_by(b, client.store)
        a._running += 1
        await a._turn(stale)  # TurnLost: it wrote nothing, and keeps nothing
        assert iid not in a._kept and iid in b._kept
        for x in (1, 2):
            await client.raise_event(iid, "x", x)
            await _turn_by(a, client.store)
        inst = await client.get(iid)
    assert inst is not None and inst.output == [1, 2]


async def test_a_worker_keeps_at_most_its_cache_of_engines() -> None:
    async with jobs.open_broker(f"memory://kept-{uuid.uuid4().hex[:8]}") as broker:
        client = durable.Client(broker)
        ids = [await client.start(collects, 1) for _ in range(3)]
        worker = durable.OrchestrationWorker(broker, cache=2)
        for _ in ids:
            await _turn_by(worker, client.store)
        assert len(worker._kept) == 2
        for iid in ids:
            await client.raise_event(iid, "x", 7)
        for _ in ids:
            await _turn_by(worker, client.store)
        outputs = [(await client.get(iid)).output for iid in ids]  # type: ignore[union-attr]
    assert outputs == [[7], [7], [7]]
