"""memory://: workers that die at random points lose nothing and duplicate nothing.

The memory broker lives in one process, so a worker "dies" in-process: its task
is cancelled while its view of the broker (:class:`Mortal`) stops answering —
every call it makes from then on hangs, like a call to a broker from a process
that is gone, so its leases are never given back (the worker's shielded
abandon-on-cancel runs out its grace period and gives up). The same directive as
the process test (1,000 map jobs folded with a non-commutative monoid) runs on
trio's MockClock with a 1 s lease while a killer kills a random worker every
1-30 ms of virtual time and starts a fresh one; the source is gated so the run
cannot end before 20 kills.
"""

from __future__ import annotations

import inspect
import random
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from crash_harness import ExecutionLog
from crash_ops import Concat, Work, expected_fold, render

from wireframe import jobs
from wireframe.jobs import Broker, Worker, open_broker

N = 1000
KILLS = 20
MAX_KILLS = 40


@attrs.frozen
class LateFirst(jobs.Operation[int, str], name="crash.LateFirst"):
    """Later inputs finish first: results arrive in reverse input order."""

    n: int

    async def execute(self, x: int) -> str:
        await trio.sleep((self.n - x) * 0.01)
        return render(x)


async def test_fold_combine_ids_never_collide_with_map_ids(autojump_clock: trio.abc.Clock) -> None:
    """Combine jobs started while low-index map jobs still run keep their own ids.

    Regression: a combine job's id was ``<run>.<k>`` with k counting from 1 —
    the id of map job k — so a combine published while map job k was still
    pending took over its slot in the result channel and the fold never ended.
    """
    n = 20
    async with jobs.connect("memory://?workers=1", worker_concurrency=n) as rt:
        with trio.fail_after(60):
            assert await jobs.from_iter(range(n)).map(LateFirst(n)).fold(Concat()).run(rt) == (
                expected_fold(n)
            )


async def test_slow_async_source_is_not_held_back_by_the_publish_batch(
    autojump_clock: trio.abc.Clock,
) -> None:
    """An item of an async source is published before the source yields the next one.

    Regression: a map published its jobs in batches of ``publish_batch`` (512) and
    sent a partial batch only when the source ended, so a slow async source's
    items waited for the next ones — here forever (found by the gated source of
    the worker-kill test).
    """
    first_done = trio.Event()

    async def source() -> AsyncIterator[int]:
        yield 0
        await first_done.wait()  # e.g. the next request comes only after this answer
        yield 1

    seen = []
    with trio.fail_after(60):
        async with (
            jobs.connect("memory://?workers=1") as rt,
            jobs.from_iter(source()).map(LateFirst(1)).stream(rt) as items,
        ):
            async for item in items:
                seen.append(item.index)
                first_done.set()
    assert sorted(seen) == [0, 1]


class Mortal:
    """One worker's view of a broker; after :meth:`die` every call hangs forever."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self.url = broker.url
        self.dead = False

    def die(self) -> None:
        """From now on nothing this worker sends reaches the broker, nor comes back."""
        self.dead = True

    def clock(self) -> float:
        """The broker's clock."""
        return self._broker.clock()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._broker, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.dead:
                await trio.sleep_forever()
            result = await attr(*args, **kwargs)
            if self.dead:  # it happened, but the answer never arrives
                await trio.sleep_forever()
            return result

        return call


@pytest.mark.slow
async def test_dying_workers_lose_nothing_and_duplicate_nothing(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    url = f"memory://crash-{uuid.uuid4().hex}?lease=1&max_deliveries=50"
    log_path = tmp_path / "executions.log"
    log = ExecutionLog(log_path)
    rng = random.Random(4)
    kills = 0
    killed = trio.Event()

    async def gated() -> AsyncIterator[int]:
        nonlocal killed
        for i in range(N):
            while kills < (i + 1) * KILLS // N:
                await killed.wait()
            yield i

    async with open_broker(url) as broker, jobs.connect(url) as rt:

        async def worker(task_status: trio.TaskStatus[tuple[Mortal, trio.CancelScope]]) -> None:
            mortal = Mortal(broker)
            with trio.CancelScope() as scope:
                task_status.started((mortal, scope))
                await Worker(mortal, concurrency=8).serve()  # type: ignore[arg-type]

        async def killer(nursery: trio.Nursery) -> None:
            nonlocal kills, killed
            workers = [await nursery.start(worker) for _ in range(2)]
            while kills < MAX_KILLS:
                await trio.sleep(rng.uniform(0.001, 0.03))
                i = rng.randrange(len(workers))
                mortal, scope = workers[i]
                mortal.die()
                scope.cancel()
                kills += 1
                killed.set()
                killed = trio.Event()
                workers[i] = await nursery.start(worker)

        with trio.fail_after(600):  # virtual seconds
            async with trio.open_nursery() as nursery:
                nursery.start_soon(killer, nursery)
                work = Work(log=str(log_path), pause=0.005)
                result = await jobs.from_iter(gated()).map(work).fold(Concat()).run(rt)
                nursery.cancel_scope.cancel()
        stats = await broker.stats()
        dead = await broker.dead_letters()

    assert result == expected_fold(N)
    assert kills >= KILLS
    assert [(s.queued, s.running, s.dead) for s in stats] == [(0, 0, 0)] * len(stats)
    assert dead == []
    log.poll()
    assert sorted(log.by_index) == list(range(N))
    reruns = sum(1 for c in log.by_index.values() if c > 1)
    assert reruns > 0, "no job ran twice: the deaths hit nothing"
    print(f"memory: {kills} worker deaths, {log.total} executions of {N} jobs ({reruns} reran)")
