"""What only the memory broker has: shared state by name, trio's clock, no polling."""

from __future__ import annotations

import uuid

import pytest
import trio
import trio.testing
from trio.testing import MockClock

from wireframe.jobs.broker import BrokerError, Delivery, LockLost, Message
from wireframe.jobs.brokers import memory
from wireframe.jobs.brokers.memory import MemoryBroker
from wireframe.testing import fresh_memory_url


@pytest.fixture
def name() -> str:
    return f"mem-{uuid.uuid4().hex}"


def msgs(*ids: str, reply_to: str = "") -> list[Message]:
    return [Message(i, i.encode(), reply_to) for i in ids]


async def test_brokers_of_one_name_share_state(name: str, autojump_clock: MockClock) -> None:
    async with memory.open(f"memory://{name}") as a, memory.open(f"memory://{name}?lease=5") as b:
        await a.publish("q", msgs("m"))
        [d] = await b.consume("q", 10)
        assert d.message.id == "m" and d.lease_expires == trio.current_time() + 5
        await a.complete(d, None)  # a delivery of b settles through a
        assert [(s.queue, s.done) for s in await b.stats()] == [("q", 1)]


async def test_complete_after_expiry_before_anyone_looked(
    name: str, autojump_clock: MockClock
) -> None:
    async with memory.open(f"memory://{name}?lease=10") as broker:
        await broker.publish("q", msgs("m"))
        [d] = await broker.consume("q", 1)
        await trio.sleep(10)
        with pytest.raises(LockLost, match="after the lease ran out"):
            await broker.extend(d)
        [again] = await broker.consume("q", 1)
        assert again.deliveries == 2


async def test_brokers_of_different_names_are_isolated(name: str) -> None:
    async with memory.open(f"memory://{name}-a") as a, memory.open(f"memory://{name}-b") as b:
        await a.publish("q", msgs("m"))
        assert await b.stats() == []
        with trio.move_on_after(0.01) as scope:
            await b.consume("q", 1)
        assert scope.cancelled_caught


async def test_state_lives_while_any_broker_of_the_name_is_open(name: str) -> None:
    url = f"memory://{name}"
    async with memory.open(url) as keeper:
        async with memory.open(url) as a:
            await a.publish("q", msgs("m"))
        assert [s.queued for s in await keeper.stats()] == [1]
    async with memory.open(url) as fresh:
        assert await fresh.stats() == [], "the last close dropped the state"
    assert name not in memory.REGISTRY


async def test_unnamed_brokers_share_one_state() -> None:
    async with memory.open("memory://") as a, memory.open("memory://?workers=2") as b:
        await a.publish("unnamed-q", msgs("m"))
        assert (await b.consume("unnamed-q", 1))[0].message.id == "m"
        assert b.url.options["workers"] == 2


async def test_lease_expiry_on_mock_clock_wakes_exactly_at_expiry(
    name: str, autojump_clock: MockClock
) -> None:
    async with memory.open(f"memory://{name}?lease=10") as broker:
        await broker.publish("q", msgs("m"))
        [first] = await broker.consume("q", 1)
        assert first.lease_expires == trio.current_time() + 10
        [second] = await broker.consume("q", 1)
        assert trio.current_time() == first.lease_expires
        assert second.deliveries == 2
        with pytest.raises(LockLost, match="no current lease"):
            await broker.complete(first, b"late")


async def test_blocked_consumer_does_not_poll(name: str, mock_clock: MockClock) -> None:
    """With time standing still, a blocked consume stays blocked; it wakes at the lease end."""
    async with memory.open(f"memory://{name}?lease=10") as broker:
        await broker.publish("q", msgs("m"))
        await broker.consume("q", 1)  # leased until t+10
        got: list[Delivery] = []

        async def consumer() -> None:
            got.extend(await broker.consume("q", 1))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consumer)
            await trio.testing.wait_all_tasks_blocked()
            mock_clock.jump(9.999)
            await trio.testing.wait_all_tasks_blocked()
            assert got == []
            mock_clock.jump(0.001)
        assert [d.deliveries for d in got] == [2]


async def test_leases_of_different_lengths_expire_in_their_own_order(
    name: str, autojump_clock: MockClock
) -> None:
    async with (
        memory.open(f"memory://{name}?lease=100") as long,
        memory.open(f"memory://{name}?lease=1") as short,
    ):
        await long.publish("q", msgs("a", "b"))
        await long.consume("q", 1)  # "a", lease 100, granted first
        await short.consume("q", 1)  # "b", lease 1
        [again] = await long.consume("q", 5)
        assert (again.message.id, trio.current_time()) == ("b", 1.0)


async def test_extended_lease_is_not_reclaimed_at_the_old_expiry(
    name: str, autojump_clock: MockClock
) -> None:
    async with memory.open(f"memory://{name}?lease=10") as broker:
        await broker.publish("q", msgs("m"))
        [d] = await broker.consume("q", 1)
        await trio.sleep(5)
        d = await broker.extend(d)
        assert d.lease_expires == 15
        [again] = await broker.consume("q", 1)
        assert trio.current_time() == 15 and again.deliveries == 2


async def test_delays_follow_the_mock_clock(name: str, autojump_clock: MockClock) -> None:
    async with memory.open(f"memory://{name}") as broker:
        await broker.publish("q", msgs("late"), delay=7)
        await broker.publish("q", msgs("later"), delay=9)
        [d] = await broker.consume("q", 5)
        assert (d.message.id, trio.current_time()) == ("late", 7)
        await broker.abandon(d, delay=3)
        ids_times = []
        for _ in range(2):
            [d] = await broker.consume("q", 5)
            ids_times.append((d.message.id, trio.current_time()))
        assert ids_times == [("later", 9), ("late", 10)]


async def test_settled_calls_cannot_be_rejected_after_the_fact(name: str) -> None:
    """A cancelled scope stops a call before it acts, never after."""
    async with memory.open(f"memory://{name}") as broker:
        await broker.publish("q", msgs("m"))
        with trio.CancelScope() as scope:
            scope.cancel()
            await broker.consume("q", 1)
        assert [s.running for s in await broker.stats()] == [0], "cancelled consume leased"
        [d] = await broker.consume("q", 1)
        with trio.CancelScope() as scope:
            scope.cancel()
            await broker.complete(d, None)
        assert [s.running for s in await broker.stats()] == [1], "cancelled complete acted"
        await broker.complete(d, None)


async def test_deleting_a_queue_wakes_its_consumers(name: str) -> None:
    async with memory.open(f"memory://{name}") as broker:
        got: list[Delivery] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: _collect(broker, got))
            await trio.testing.wait_all_tasks_blocked()
            await broker.delete_queue("q")
            await trio.testing.wait_all_tasks_blocked()
            await broker.publish("q", msgs("after"))
        assert [d.message.id for d in got] == ["after"]


async def _collect(broker: MemoryBroker, into: list[Delivery]) -> None:
    into.extend(await broker.consume("q", 1))


async def test_closed_broker_refuses_calls_and_ends_subscriptions(name: str) -> None:
    async with memory.open(f"memory://{name}") as broker:
        received: list[bytes] = []
        async with trio.open_nursery() as nursery:

            async def listen(*, task_status: trio.TaskStatus[None]) -> None:
                async with broker.subscribe("abort") as bodies:
                    task_status.started()
                    async for body in bodies:
                        received.append(body)

            await nursery.start(listen)
            await broker.broadcast("abort", b"x")
            await broker.aclose()  # the listener's loop ends: the nursery can exit
        assert received == [b"x"]
        with pytest.raises(BrokerError, match="closed"):
            await broker.publish("q", msgs("m"))
        with pytest.raises(BrokerError, match="closed"):
            await broker.ping()


async def test_argument_errors(name: str) -> None:
    async with memory.open(f"memory://{name}") as broker:
        with pytest.raises(ValueError, match="limit=0"):
            await broker.consume("q", 0)
        with pytest.raises(ValueError, match="limit=0"):
            await broker.receive_replies("ch", 0)
        with pytest.raises(ValueError, match="delay=-1"):
            await broker.publish("q", msgs("m"), delay=-1)


async def test_many_messages_flow_in_batches(name: str) -> None:
    async with memory.open(f"memory://{name}") as broker:
        ids = [f"m{i}" for i in range(2000)]
        for start in range(0, len(ids), 500):
            await broker.publish("q", msgs(*ids[start : start + 500], reply_to="ch"))
        seen: list[str] = []
        while len(seen) < len(ids):
            for d in await broker.consume("q", 100):
                await broker.complete(d, b"")
            seen += [r.message_id for r in await broker.receive_replies("ch", 1000)]
        assert seen == ids
        [stats] = await broker.stats()
        assert (stats.queued, stats.running, stats.done) == (0, 0, 2000)
        q = memory.REGISTRY[name].queues["q"]
        assert all(len(order) == 0 for order in q.orders.values()), "stale leases were trimmed"


async def test_stale_lease_records_do_not_pile_up_behind_a_held_lease(
    name: str, autojump_clock: MockClock
) -> None:
    async with memory.open(f"memory://{name}?lease=30") as broker:
        await broker.publish("q", msgs("held"))
        await broker.consume("q", 1)  # held, never settled, for the whole test
        for start in range(0, 20_000, 500):
            await broker.publish("q", msgs(*(f"m{i}" for i in range(start, start + 500))))
            for _ in range(5):
                batch = await broker.consume("q", 100)
                assert len(batch) == 100
                for d in batch:
                    await broker.complete(d, None)
        [stats] = await broker.stats()
        assert (stats.queued, stats.running, stats.done) == (0, 1, 20_000)
        order = memory.REGISTRY[name].queues["q"].orders[30.0]
        assert len(order) <= 5000, len(order)


async def test_fresh_memory_urls_are_isolated() -> None:
    one, two = fresh_memory_url(workers=2), fresh_memory_url()
    assert one != two and one.endswith("?workers=2")
    async with memory.open(one) as a, memory.open(two) as b:
        await a.publish("q", msgs("m"))
        assert await b.stats() == []


async def test_delete_channel_forgets_it_unless_someone_waits(name: str) -> None:
    async with memory.open(f"memory://{name}") as broker:
        channels = memory.REGISTRY[name].channels
        with trio.move_on_after(0.01):
            await broker.receive_replies("ch", 1)  # a receiver that gave up
        await broker.delete_channel("ch")
        assert "ch" not in channels
        got = []
        async with trio.open_nursery() as nursery:

            async def receive() -> None:
                got.extend(await broker.receive_replies("ch", 1))

            nursery.start_soon(receive)
            await trio.testing.wait_all_tasks_blocked()
            await broker.delete_channel("ch")  # the waiting receiver keeps its channel
            await broker.publish("q", msgs("m", reply_to="ch"))
            [d] = await broker.consume("q", 1)
            await broker.complete(d, b"r")
        assert [r.message_id for r in got] == ["m"]
