"""The work queue's conformance: publish and consume under leases, abandon, dead letters.

What :class:`~wireframe.jobs.broker.WorkQueue` promises — at-least-once
delivery under leases, a reply posted atomically with each completion, a
message that failed too often dead-lettered with its reason — checked on a
broker opened by the test class (see :mod:`wireframe.testing.conformance`).
"""

from __future__ import annotations

import time

import pytest
import trio

from wireframe.jobs.broker import (
    Broker,
    BrokerURL,
    DeadLetter,
    Delivery,
    LockLost,
    Message,
    QueueStats,
    Reply,
)
from wireframe.testing import UrlFactory
from wireframe.testing.conformance.base import (
    ConformanceBase,
    ids_of,
    make_messages,
    stats_by_queue,
)

__all__ = ["WorkQueueConformance"]


class WorkQueueConformance(ConformanceBase):
    """The work queue role: opening, FIFO consume, leases, abandon, delays, dead letters."""

    # -- basics -----------------------------------------------------------------------
    async def test_opens_pings_and_closes_idempotently(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url(lease=7.5, max_deliveries=3)) as broker:
            assert isinstance(broker, Broker)
            assert isinstance(broker.url, BrokerURL)
            assert broker.url.lease == 7.5
            assert broker.url.max_deliveries == 3
            assert isinstance(broker.clock(), float)
            await broker.ping()
            await broker.aclose()
            await broker.aclose()  # and once more when the context exits

    async def test_publish_consume_is_fifo_per_queue(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as broker:
            first = make_messages([f"a{i}" for i in range(5)], reply_to="ch")
            second = make_messages([f"b{i}" for i in range(5)])
            await broker.publish("q", first)
            await broker.publish("other", make_messages(["o1"]))
            await broker.publish("q", second)
            before = broker.clock()
            got = await self.take(broker, "q", 10, limit=3)
            after = broker.clock()
            assert [d.message for d in got] == first + second
            assert all(d.queue == "q" and d.deliveries == 1 for d in got), got
            assert len({d.lease_token for d in got}) == 10, "lease tokens must differ"
            lease = broker.url.lease
            for d in got:
                assert before < d.lease_expires <= after + lease + 1.0, (d, before, after)
            other = await self.take_one(broker, "other")
            assert other.message.id == "o1" and other.queue == "other"

    async def test_consume_blocks_until_a_message_is_published(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as broker:
            got: list[Delivery] = []
            arrived = trio.Event()

            async def consumer() -> None:
                got.extend(await broker.consume("q", 5))
                arrived.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(consumer)
                with trio.move_on_after(0.2):
                    await arrived.wait()
                assert not arrived.is_set(), f"consume returned {got} from an empty queue"
                await broker.publish("q", make_messages(["m"]))
                with trio.fail_after(self.patience):
                    await arrived.wait()
            assert ids_of(got) == ["m"]

    async def test_consume_is_cancellable_and_loses_nothing(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as broker:
            await broker.declare_queue("q")
            with trio.move_on_after(0.1) as scope:
                await broker.consume("q", 1)
            assert scope.cancelled_caught
            async with trio.open_nursery() as nursery:
                nursery.start_soon(broker.consume, "q", 1)
                await trio.sleep(0.05)
                nursery.cancel_scope.cancel()
            await broker.publish("q", make_messages(["m"]))
            d = await self.take_one(broker, "q")
            assert d.message.id == "m" and d.deliveries == 1

    async def test_concurrent_consumers_each_message_is_delivered_once(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        url = make_url()
        ids = [f"m{i:02}" for i in range(40)]
        async with self.open(url) as a, self.open(url) as b:
            await a.publish("q", make_messages(ids))
            seen: list[str] = []
            all_seen = trio.Event()

            async def worker(broker: Broker) -> None:
                while True:
                    for d in await broker.consume("q", 3):
                        seen.append(d.message.id)
                        await broker.complete(d, None)
                        if len(set(seen)) == len(ids):
                            all_seen.set()

            async with trio.open_nursery() as nursery:
                for broker in (a, b, a, b):
                    nursery.start_soon(worker, broker)
                with trio.fail_after(self.patience):
                    await all_seen.wait()
                nursery.cancel_scope.cancel()
            twice = sorted({i for i in seen if seen.count(i) > 1})
            assert sorted(seen) == ids, f"each message must reach one consumer; twice: {twice}"
            # (a consume cancelled in flight may leave a lease behind to run out: not counted)
            stats = stats_by_queue(await b.stats())["q"]
            assert (stats.queued, stats.done) == (0, 40), stats

    # -- leases -----------------------------------------------------------------------
    async def test_expired_lease_redelivers_with_incremented_count(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url(lease=self.lease)) as broker:
            [m] = make_messages(["m"], reply_to="ch")
            await broker.publish("q", [m])
            first = await self.take_one(broker, "q")
            started = trio.current_time()
            second = await self.take_one(broker, "q")  # blocks until the lease runs out
            assert trio.current_time() - started >= self.lease / 2, "redelivered too early"
            assert second.message == m
            assert (first.deliveries, second.deliveries) == (1, 2)
            assert second.lease_token != first.lease_token
            with pytest.raises(LockLost):
                await broker.extend(first)
            with pytest.raises(LockLost):
                await broker.abandon(first)
            with pytest.raises(LockLost):
                await broker.dead_letter(first, "stale holder")
            await broker.complete(second, b"ok")
            assert await self.replies(broker, "ch", 1) == [Reply("m", body=b"ok")]

    async def test_extend_prevents_redelivery(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        lease = 0.5
        url = make_url(lease=lease)
        async with self.open(url) as broker, self.open(url) as other:
            await broker.publish("q", make_messages(["m"]))
            d = await self.take_one(broker, "q")
            first_expiry = d.lease_expires

            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.assert_no_delivery, other, "q", lease * 1.2)
                for _ in range(6):  # 0.6 s in all: longer than the lease
                    await trio.sleep(lease / 5)
                    d = await broker.extend(d)
            assert d.lease_expires > first_expiry
            assert d.deliveries == 1
            await broker.complete(d, None)  # still ours

    async def test_complete_after_lease_ran_out_raises_lock_lost(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url(lease=self.lease)) as broker:
            await broker.publish("q", make_messages(["m"], reply_to="ch"))
            d = await self.take_one(broker, "q")
            await self.pass_time(self.lease * 1.5)  # nobody else took it, but it ran out
            with pytest.raises(LockLost) as info:
                await broker.complete(d, b"stale")
            assert info.value.message_id == "m" and info.value.queue == "q"
            again = await self.take_one(broker, "q")
            assert again.deliveries == 2
            await broker.complete(again, b"fresh")
            assert await self.replies(broker, "ch", 1) == [Reply("m", body=b"fresh")]
            await self.assert_no_reply(broker, "ch", 0.2)

    async def test_reply_delivered_once_when_message_ran_twice(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        url = make_url(lease=self.lease)
        async with self.open(url) as one, self.open(url) as two:
            await one.publish("q", make_messages(["m"], reply_to="ch"))
            first = await self.take_one(one, "q")
            second = await self.take_one(two, "q")  # after first's lease ran out
            assert second.deliveries == 2
            await two.complete(second, b"second")
            with pytest.raises(LockLost):
                await one.complete(first, b"first")
            assert await self.replies(one, "ch", 1) == [Reply("m", body=b"second")]
            await self.assert_no_reply(two, "ch", 0.2)
            stats = stats_by_queue(await one.stats())["q"]
            assert (stats.queued, stats.running, stats.done, stats.dead) == (0, 0, 1, 0), stats

    # -- abandon and dead letters -----------------------------------------------------
    async def test_abandon_makes_message_visible_again(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as broker:
            [m] = make_messages(["m"])
            await broker.publish("q", [m])
            d = await self.take_one(broker, "q")
            await broker.abandon(d)
            again = await self.take_one(broker, "q")
            assert again.message == m and again.deliveries == 2
            with pytest.raises(LockLost):
                await broker.complete(d, None)

    async def test_abandon_with_delay_hides_message_that_long(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        delay = 0.4
        async with self.open(make_url()) as broker:
            await broker.publish("q", make_messages(["m"]))
            d = await self.take_one(broker, "q")
            started = trio.current_time()
            await broker.abandon(d, delay=delay)
            await self.assert_no_delivery_until(broker, "q", started + delay / 2)
            again = await self.take_one(broker, "q")
            assert trio.current_time() - started >= delay * 0.9, "visible before its delay"
            assert again.message.id == "m" and again.deliveries == 2

    async def test_publish_with_delay(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        delay = 0.4
        async with self.open(make_url()) as broker:
            started = trio.current_time()
            await broker.publish("q", make_messages(["later"]), delay=delay)
            await broker.publish("q", make_messages(["now"]))
            assert (await self.take_one(broker, "q")).message.id == "now"
            await self.assert_no_delivery_until(broker, "q", started + delay / 2)
            later = await self.take_one(broker, "q")
            assert trio.current_time() - started >= delay * 0.9, "visible before its delay"
            assert later.message.id == "later" and later.deliveries == 1

    async def test_abandon_with_new_body_resets_delivery_count(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url(max_deliveries=2)) as broker:
            await broker.publish("q", [Message("m", b"v1", "ch")])
            d = await self.take_one(broker, "q")
            await broker.abandon(d)
            d = await self.take_one(broker, "q")
            assert d.deliveries == 2
            await broker.abandon(d, body=b"v2")
            d = await self.take_one(broker, "q")  # would be dead without the reset
            assert d.message == Message("m", b"v2", "ch")
            assert d.deliveries == 1
            await broker.abandon(d)
            d = await self.take_one(broker, "q")
            assert (d.message.body, d.deliveries) == (b"v2", 2)
            await broker.complete(d, b"done")
            assert await self.replies(broker, "ch", 1) == [Reply("m", body=b"done")]
            assert await broker.dead_letters("q") == []

    async def test_max_deliveries_exceeded_goes_to_dead_letters(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url(max_deliveries=2)) as broker:
            [m] = make_messages(["m"], reply_to="ch")
            await broker.publish("q", [m])
            for expected in (1, 2):
                d = await self.take_one(broker, "q")
                assert d.deliveries == expected
                await broker.abandon(d)
            await broker.publish("q", make_messages(["n"]))
            started = time.time()
            got = await self.take_one(broker, "q")  # m dies on the way
            assert got.message.id == "n"
            [dead] = await broker.dead_letters("q")
            assert (dead.message, dead.queue) == (m, "q"), dead
            assert dead.deliveries == 2, (
                f"DeadLetter.deliveries counts the deliveries made (2), not the refused one: {dead}"
            )
            assert "max_deliveries" in dead.reason, (
                f"the reason should name max_deliveries, got {dead.reason!r}"
            )
            assert started - 60 <= dead.died_at <= time.time() + 1, "died_at is epoch seconds"
            [reply] = await self.replies(broker, "ch", 1)
            assert reply == Reply("m", body=None, dead_reason=dead.reason) and reply.is_dead
            assert await broker.dead_letters() == [dead]
            stats = stats_by_queue(await broker.stats())["q"]
            assert (stats.queued, stats.running, stats.done, stats.dead) == (0, 1, 0, 1), stats

    async def test_lease_expiring_too_often_goes_to_dead_letters(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url(lease=self.lease, max_deliveries=1)) as broker:
            await broker.publish("q", make_messages(["m"], reply_to="ch"))
            d = await self.take_one(broker, "q")  # and its worker "dies"
            [dead] = await self.wait_dead(broker, "q", 1)
            assert dead.message.id == "m", dead
            assert dead.deliveries == 1, (
                f"DeadLetter.deliveries counts the deliveries made (1), not the refused one: {dead}"
            )
            [reply] = await self.replies(broker, "ch", 1)
            assert reply.is_dead and reply.message_id == "m"
            with pytest.raises(LockLost):
                await broker.complete(d, b"too late")
            await self.assert_no_reply(broker, "ch", 0.1)

    async def test_dead_letter_by_consumer_then_next_message(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as broker:
            bad, good = Message("bad", b"\xff\x00", "ch"), Message("good", b"ok", "ch")
            await broker.publish("q", [bad, good])
            d = await self.take_one(broker, "q")
            assert d.message == bad
            await broker.dead_letter(d, "cannot decode: truncated")
            with pytest.raises(LockLost):
                await broker.dead_letter(d, "twice")
            nxt = await self.take_one(broker, "q")
            assert nxt.message == good
            [dead] = await broker.dead_letters("q")
            assert (dead.message, dead.queue, dead.reason, dead.deliveries) == (
                bad,
                "q",
                "cannot decode: truncated",
                1,
            )
            assert isinstance(dead, DeadLetter)
            assert await self.replies(broker, "ch", 1) == [
                Reply("bad", dead_reason="cannot decode: truncated")
            ]
            await broker.complete(nxt, b"fine")
            assert await self.replies(broker, "ch", 1) == [Reply("good", body=b"fine")]

    # -- queues and housekeeping ------------------------------------------------------
    async def test_declare_queue_is_idempotent(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as broker:
            await broker.declare_queue("q")
            await broker.declare_queue("q")
            await broker.publish("q", make_messages(["m"]))
            await broker.declare_queue("q")
            await broker.declare_queue("empty")
            stats = await broker.stats()
            assert [s.queue for s in stats] == sorted(s.queue for s in stats), "sorted by name"
            by_queue = stats_by_queue(stats)
            assert by_queue["q"] == QueueStats("q", queued=1, running=0, done=0, dead=0)
            assert by_queue["empty"] == QueueStats("empty", queued=0, running=0, done=0, dead=0)
            d = await self.take_one(broker, "q")
            await broker.declare_queue("q")
            await broker.complete(d, None)  # declaring again did not drop the lease

    async def test_delete_queue(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as broker:
            await broker.publish("q", make_messages(["m"]))
            await broker.publish("keep", make_messages(["k"]))
            await broker.delete_queue("q")
            await broker.delete_queue("never-declared")
            names = {s.queue for s in await broker.stats()}
            assert "q" not in names and "keep" in names, names
            await self.assert_no_delivery(broker, "q", 0.1)
            assert (await self.take_one(broker, "keep")).message.id == "k"
