"""The Redis broker's group commit, on its own: batches, outcomes, and cancelled waiters."""

from __future__ import annotations

import trio
import trio.testing

from wireframe.jobs.brokers.redis.group_commit import GroupCommit


async def test_calls_that_arrive_during_a_flush_go_together_in_the_next() -> None:
    batches: list[list[int]] = []

    async def flush(items: list[int]) -> list[object]:
        batches.append(items)
        await trio.sleep(0.01)
        return [x * 10 for x in items]

    group: GroupCommit[int] = GroupCommit(flush, most=3)
    got: dict[int, object] = {}

    async def submit(x: int) -> None:
        got[x] = await group.submit(x)

    async with trio.open_nursery() as nursery:
        for x in range(6):
            nursery.start_soon(submit, x)
            await trio.testing.wait_all_tasks_blocked()
    assert got == {x: x * 10 for x in range(6)}
    assert batches[0] == [0] and sorted(x for b in batches for x in b) == list(range(6))
    assert max(len(b) for b in batches) == 3  # at most ``most`` a flush


async def test_a_waiter_cancelled_during_its_flush_still_gets_its_outcome() -> None:
    """Its item is sent: it learns how that ended, and the cancel comes at its next checkpoint."""
    gates = [trio.Event(), trio.Event()]
    flushes: list[list[int]] = []

    async def flush(items: list[int]) -> list[object]:
        flushes.append(items)
        await gates[len(flushes) - 1].wait()
        return [f"done {x}" for x in items]

    group: GroupCommit[int] = GroupCommit(flush)
    seen: list[object] = []
    scope = trio.CancelScope()

    async def waiter() -> None:
        with scope:
            seen.append(await group.submit(3))
            seen.append("after")
            await trio.lowlevel.checkpoint()
            seen.append("not reached")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(group.submit, 1)  # the lead of the first flush
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(group.submit, 2)  # leads the second, with 3 in it
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        gates[0].set()
        await trio.testing.wait_all_tasks_blocked()
        assert flushes == [[1], [2, 3]]
        scope.cancel()  # while the flush carrying its item is in flight
        await trio.testing.wait_all_tasks_blocked()
        assert seen == []  # still waiting: cancelling it does not abandon its item
        gates[1].set()
    assert seen == ["done 3", "after"]
