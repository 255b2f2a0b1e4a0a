"""Limits in the memory broker: what ``LimitsConformance`` does not pin down, on trio's MockClock.

Order and priority of held messages, slots given back by a lease running out
in another queue or a deleted queue, redefinitions, aborted held jobs, and a
held consumer that sleeps (no polling) until a token or a slot.
"""

from __future__ import annotations

import uuid

import pytest
import trio
import trio.testing
from trio.testing import MockClock

from wireframe.jobs.broker import Delivery, Message
from wireframe.jobs.brokers import memory
from wireframe.jobs.brokers.memory import MemoryBroker
from wireframe.jobs.limits import Limit


@pytest.fixture
def url() -> str:
    return f"memory://mem-limits-{uuid.uuid4().hex}?lease=10"


def limited(ids: str, limit: str = "L", priority: int = 0) -> list[Message]:
    return [Message(i, i.encode(), priority=priority, limit=limit) for i in ids]


def ids(deliveries: list[Delivery]) -> list[str]:
    return [d.message.id for d in deliveries]


async def held_q(broker: MemoryBroker, queue: str = "q") -> tuple[int, int]:
    [s] = [s for s in await broker.stats() if s.queue == queue]
    return s.queued, s.held


async def test_held_messages_keep_their_order_and_priority(
    url: str, autojump_clock: MockClock
) -> None:
    async with memory.open(url) as broker:
        await broker.define_limit(Limit("L", concurrency=1))
        await broker.publish("q", [*limited("ab"), *limited("c", priority=5), *limited("d")])
        await broker.publish("q", [Message("x", b"x")])
        first = await broker.consume("q", 10)
        assert ids(first) == ["c", "x"]  # the top priority first; x is not held back
        await broker.publish("q", limited("e"))  # behind the held a, b, d
        assert await held_q(broker) == (4, 4)
        order = []
        running = first[0]
        for _ in range(4):
            await broker.complete(running, None)
            [running] = await broker.consume("q", 10)
            order.append(running.message.id)
        assert order == ["a", "b", "d", "e"]
        assert running.deliveries == 1


async def test_a_lease_running_out_in_another_queue_frees_the_slot(
    url: str, autojump_clock: MockClock
) -> None:
    async with memory.open(url) as broker:
        await broker.define_limit(Limit("L", concurrency=1))
        await broker.publish("q1", limited("a"))
        await broker.publish("q2", limited("b"))
        start = trio.current_time()
        [a] = await broker.consume("q1", 1)
        [b] = await broker.consume("q2", 1)  # nobody consumes q1: q2's consumer looks
        assert b.message.id == "b" and trio.current_time() == a.lease_expires == start + 10


async def test_a_deleted_queue_gives_its_slots_back(url: str, autojump_clock: MockClock) -> None:
    async with memory.open(url) as broker:
        await broker.define_limit(Limit("L", concurrency=1))
        await broker.publish("q1", limited("a"))
        await broker.publish("q2", limited("b"))
        await broker.consume("q1", 1)
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            got: list[Delivery] = []

            async def consume() -> None:
                got.extend(await broker.consume("q2", 1))

            nursery.start_soon(consume)
            await trio.sleep(1)
            assert not got
            await broker.delete_queue("q1")
        assert ids(got) == ["b"] and trio.current_time() - start < 2


async def test_a_cap_lowered_below_the_slots_in_use(url: str, autojump_clock: MockClock) -> None:
    async with memory.open(url) as broker:
        await broker.define_limit(Limit("L", concurrency=2))
        await broker.publish("q", limited("abc"))
        a, b = await broker.consume("q", 2)
        await broker.define_limit(Limit("L", concurrency=1))
        await broker.complete(a, None)
        assert await held_q(broker) == (1, 1)
        with trio.move_on_after(5) as waited:
            await broker.consume("q", 1)
        assert waited.cancelled_caught, "one running under a cap of one: c must wait"
        await broker.complete(b, None)
        assert ids(await broker.consume("q", 1)) == ["c"]


async def test_a_redefinition_keeps_the_tokens_and_wakes_who_waits(
    url: str, autojump_clock: MockClock
) -> None:
    async with memory.open(url) as broker:
        await broker.define_limit(Limit("R", rate=2, per=10.0))
        await broker.publish("q", limited("abcd", "R"))
        start = trio.current_time()
        assert ids(await broker.consume("q", 10)) == ["a", "b"]  # the burst empties it
        await broker.define_limit(Limit("R", rate=4, per=10.0))  # empty still: 1 token / 2.5 s
        [c] = await broker.consume("q", 10)
        assert c.message.id == "c" and trio.current_time() - start == pytest.approx(2.5)
        await broker.define_limit(Limit("L2", concurrency=1))
        await broker.publish("q2", limited("ef", "L2"))
        [e] = await broker.consume("q2", 10)
        got: list[Delivery] = []
        async with trio.open_nursery() as nursery:

            async def consume() -> None:
                got.extend(await broker.consume("q2", 10))

            nursery.start_soon(consume)
            await trio.sleep(1)
            assert not got
            await broker.define_limit(Limit("L2", concurrency=2))  # room now: wakes it
        assert ids(got) == ["f"] and e.message.id == "e"


async def test_an_aborted_held_job_never_runs(url: str, autojump_clock: MockClock) -> None:
    async with memory.open(url) as broker:
        await broker.define_limit(Limit("L", concurrency=1))
        for message in limited("jk"):
            await broker.submit("q", message)
        [j] = await broker.consume("q", 10)
        record = await broker.abort_job("k")
        assert record is not None and record.status.value == "aborted"
        await broker.complete(j, None)
        with trio.move_on_after(60) as waited:
            await broker.consume("q", 10)
        assert waited.cancelled_caught
        [s] = await broker.stats()
        assert (s.queued, s.held, s.done) == (0, 0, 2)


async def test_a_held_consumer_sleeps_until_the_next_token(
    url: str, mock_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With time standing still a held consume stays blocked, without looking again."""
    async with memory.open(url) as broker:
        await broker.define_limit(Limit("R", rate=1, per=10.0))
        await broker.publish("q", limited("ab", "R"))
        await broker.consume("q", 1)  # the one token
        looks = 0
        lease = broker._lease

        def counting(*args: object) -> list[Delivery]:
            nonlocal looks
            looks += 1
            return lease(*args)  # type: ignore[arg-type]

        monkeypatch.setattr(broker, "_lease", counting)
        got: list[Delivery] = []

        async def consumer() -> None:
            got.extend(await broker.consume("q", 1))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consumer)
            await trio.testing.wait_all_tasks_blocked()
            mock_clock.jump(9.999)
            await trio.testing.wait_all_tasks_blocked()
            assert got == [] and looks == 1, looks
            mock_clock.jump(0.001)
        assert ids(got) == ["b"] and looks == 2, looks
