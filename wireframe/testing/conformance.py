"""The broker conformance suite: the behaviour every broker shares, as pytest tests.

Every broker behind :class:`~wireframe.jobs.broker.Broker` must behave the same;
:class:`BrokerConformance` checks that it does. Subclass it in a test module and
give it a ``broker_url`` fixture returning a fresh, isolated URL per test::

    from wireframe.testing import BrokerConformance

    class TestMyBroker(BrokerConformance):
        @pytest.fixture
        def broker_url(self, tmp_path):
            return f"mybroker:///{tmp_path}/state"

This module imports pytest; :mod:`wireframe.testing` loads it only when
``BrokerConformance`` is asked for, so the rest of ``wireframe.testing``
imports without pytest installed.

Each test opens brokers with :func:`~wireframe.jobs.broker.open_broker` on that
URL with extra query options (a short ``lease``, a small ``max_deliveries``,
see :func:`~wireframe.testing.with_options`), so two brokers opened in one test
share the same store, as two processes would. The tests are marked
``@pytest.mark.trio`` and need pytest-trio but not its ``trio_mode``.

Time: brokers measuring leases on the wall clock (SQLite, Redis) run the suite
in real time, a few seconds in all (each wait is at most ~0.6 s). A broker that
measures on trio's clock (``memory://``) may override the ``broker_clock``
fixture to return ``trio.testing.MockClock(autojump_threshold=0)`` and run the
suite in virtual time. ``lease`` and ``patience`` are class attributes a slow
broker may raise."""

from __future__ import annotations

import time
from collections.abc import Sequence

import attrs
import pytest
import trio

from wireframe.jobs.broker import (
    Broker,
    BrokerURL,
    ChannelLost,
    DeadLetter,
    Delivery,
    LockLost,
    Message,
    QueueStats,
    Reply,
    WorkerInfo,
    open_broker,
)
from wireframe.testing import UrlFactory, with_options
from wireframe.testing.jobstore import JobStoreConformance

__all__ = ["BrokerConformance"]


def _messages(ids: Sequence[str], reply_to: str = "") -> list[Message]:
    return [Message(i, f"body of {i}".encode(), reply_to) for i in ids]


def _ids(deliveries: Sequence[Delivery]) -> list[str]:
    return [d.message.id for d in deliveries]


def _by_queue(stats: Sequence[QueueStats]) -> dict[str, QueueStats]:
    return {s.queue: s for s in stats}


@pytest.mark.trio
class BrokerConformance(JobStoreConformance):
    """The behaviour every broker shares; subclass it and provide ``broker_url``.

    See the module docstring for the fixtures and how time is handled.
    """

    #: Lease (seconds) of the tests that wait for a lease to run out.
    lease: float = 0.3
    #: How long to wait (seconds) for something that must happen before failing.
    patience: float = 10.0

    # -- fixtures -----------------------------------------------------------------
    @pytest.fixture
    def broker_url(self) -> str:
        """A fresh, isolated broker URL per test: subclasses must override this."""
        raise NotImplementedError(
            f"{type(self).__name__} must define a `broker_url` fixture returning a fresh URL"
        )

    @pytest.fixture
    def broker_clock(self) -> trio.abc.Clock | None:
        """The clock the tests run under: None is trio's real clock."""
        return None

    @pytest.fixture
    def make_url(self, broker_url: str) -> UrlFactory:
        """The test's URL with a given ``lease`` and ``max_deliveries``."""

        def make(*, lease: float | None = None, max_deliveries: int | None = None) -> str:
            return with_options(broker_url, lease=lease, max_deliveries=max_deliveries)

        return make

    # -- helpers ----------------------------------------------------------------------
    async def take(
        self, broker: Broker, queue: str, n: int, limit: int | None = None
    ) -> list[Delivery]:
        """Consume exactly ``n`` deliveries (calls of at most ``limit``), within patience."""
        out: list[Delivery] = []
        with trio.fail_after(self.patience):
            while len(out) < n:
                want = min(limit or n, n - len(out))
                batch = await broker.consume(queue, want)
                assert batch, "consume returned an empty list; it must block instead"
                assert len(batch) <= want, f"consume(limit={want}) returned {len(batch)}"
                out += batch
        return out

    async def take_one(self, broker: Broker, queue: str) -> Delivery:
        """Consume one delivery within patience."""
        return (await self.take(broker, queue, 1))[0]

    async def replies(self, broker: Broker, channel: str, n: int, limit: int = 100) -> list[Reply]:
        """Receive exactly ``n`` replies within patience."""
        out: list[Reply] = []
        with trio.fail_after(self.patience):
            while len(out) < n:
                batch = await broker.receive_replies(channel, limit)
                assert batch, "receive_replies returned an empty list; it must block instead"
                assert len(batch) <= limit, f"receive_replies(limit={limit}) gave {len(batch)}"
                out += batch
        assert len(out) == n, f"expected {n} replies, got {out}"
        return out

    async def assert_no_delivery(self, broker: Broker, queue: str, within: float) -> None:
        """Nothing can be consumed from ``queue`` for ``within`` seconds."""
        with trio.move_on_after(within) as scope:
            got = await broker.consume(queue, 100)
        assert scope.cancelled_caught, f"expected nothing on {queue!r}, got {got}"

    async def assert_no_delivery_until(self, broker: Broker, queue: str, deadline: float) -> None:
        """Nothing can be consumed from ``queue`` until trio's clock reads ``deadline``.

        On a machine so slow that the deadline has passed already, checks nothing.
        """
        window = deadline - trio.current_time()
        if window > 0:
            await self.assert_no_delivery(broker, queue, window)

    async def wait_dead(self, broker: Broker, queue: str, n: int) -> list[DeadLetter]:
        """Keep a consumer on ``queue`` (which must get nothing) until ``n`` dead letters.

        This is how a message over ``max_deliveries`` dies: a consume finds it.
        """

        async def consume_nothing() -> None:
            got = await broker.consume(queue, 100)
            raise AssertionError(f"expected no delivery on {queue!r}, got {got}")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume_nothing)
            with trio.fail_after(self.patience):
                while len(dead := await broker.dead_letters(queue)) < n:
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
        assert len(dead) == n, dead
        return dead

    async def assert_no_reply(self, broker: Broker, channel: str, within: float) -> None:
        """Nothing arrives on ``channel`` for ``within`` seconds."""
        with trio.move_on_after(within) as scope:
            got = await broker.receive_replies(channel, 100)
        assert scope.cancelled_caught, f"expected no reply on {channel!r}, got {got}"

    # -- basics -----------------------------------------------------------------------
    async def test_opens_pings_and_closes_idempotently(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with open_broker(make_url(lease=7.5, max_deliveries=3)) as broker:
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
        async with open_broker(make_url()) as broker:
            first = _messages([f"a{i}" for i in range(5)], reply_to="ch")
            second = _messages([f"b{i}" for i in range(5)])
            await broker.publish("q", first)
            await broker.publish("other", _messages(["o1"]))
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
        async with open_broker(make_url()) as broker:
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
                await broker.publish("q", _messages(["m"]))
                with trio.fail_after(self.patience):
                    await arrived.wait()
            assert _ids(got) == ["m"]

    async def test_consume_is_cancellable_and_loses_nothing(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with open_broker(make_url()) as broker:
            await broker.declare_queue("q")
            with trio.move_on_after(0.1) as scope:
                await broker.consume("q", 1)
            assert scope.cancelled_caught
            async with trio.open_nursery() as nursery:
                nursery.start_soon(broker.consume, "q", 1)
                await trio.sleep(0.05)
                nursery.cancel_scope.cancel()
            await broker.publish("q", _messages(["m"]))
            d = await self.take_one(broker, "q")
            assert d.message.id == "m" and d.deliveries == 1

    async def test_concurrent_consumers_each_message_is_delivered_once(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        url = make_url()
        ids = [f"m{i:02}" for i in range(40)]
        async with open_broker(url) as a, open_broker(url) as b:
            await a.publish("q", _messages(ids))
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
            stats = _by_queue(await b.stats())["q"]
            assert (stats.queued, stats.done) == (0, 40), stats

    # -- leases -----------------------------------------------------------------------
    async def test_expired_lease_redelivers_with_incremented_count(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with open_broker(make_url(lease=self.lease)) as broker:
            [m] = _messages(["m"], reply_to="ch")
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
        async with open_broker(url) as broker, open_broker(url) as other:
            await broker.publish("q", _messages(["m"]))
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
        async with open_broker(make_url(lease=self.lease)) as broker:
            await broker.publish("q", _messages(["m"], reply_to="ch"))
            d = await self.take_one(broker, "q")
            await trio.sleep(self.lease * 1.5)  # nobody else took it, but it ran out
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
        async with open_broker(url) as one, open_broker(url) as two:
            await one.publish("q", _messages(["m"], reply_to="ch"))
            first = await self.take_one(one, "q")
            second = await self.take_one(two, "q")  # after first's lease ran out
            assert second.deliveries == 2
            await two.complete(second, b"second")
            with pytest.raises(LockLost):
                await one.complete(first, b"first")
            assert await self.replies(one, "ch", 1) == [Reply("m", body=b"second")]
            await self.assert_no_reply(two, "ch", 0.2)
            stats = _by_queue(await one.stats())["q"]
            assert (stats.queued, stats.running, stats.done, stats.dead) == (0, 0, 1, 0), stats

    # -- abandon and dead letters -----------------------------------------------------
    async def test_abandon_makes_message_visible_again(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with open_broker(make_url()) as broker:
            [m] = _messages(["m"])
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
        async with open_broker(make_url()) as broker:
            await broker.publish("q", _messages(["m"]))
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
        async with open_broker(make_url()) as broker:
            started = trio.current_time()
            await broker.publish("q", _messages(["later"]), delay=delay)
            await broker.publish("q", _messages(["now"]))
            assert (await self.take_one(broker, "q")).message.id == "now"
            await self.assert_no_delivery_until(broker, "q", started + delay / 2)
            later = await self.take_one(broker, "q")
            assert trio.current_time() - started >= delay * 0.9, "visible before its delay"
            assert later.message.id == "later" and later.deliveries == 1

    async def test_abandon_with_new_body_resets_delivery_count(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with open_broker(make_url(max_deliveries=2)) as broker:
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
        async with open_broker(make_url(max_deliveries=2)) as broker:
            [m] = _messages(["m"], reply_to="ch")
            await broker.publish("q", [m])
            for expected in (1, 2):
                d = await self.take_one(broker, "q")
                assert d.deliveries == expected
                await broker.abandon(d)
            await broker.publish("q", _messages(["n"]))
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
            stats = _by_queue(await broker.stats())["q"]
            assert (stats.queued, stats.running, stats.done, stats.dead) == (0, 1, 0, 1), stats

    async def test_lease_expiring_too_often_goes_to_dead_letters(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with open_broker(make_url(lease=self.lease, max_deliveries=1)) as broker:
            await broker.publish("q", _messages(["m"], reply_to="ch"))
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
        async with open_broker(make_url()) as broker:
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

    async def test_requeue_dead_resets_count(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with open_broker(make_url(max_deliveries=1)) as broker:
            await broker.publish("q", _messages(["a"]))
            d = await self.take_one(broker, "q")
            await broker.abandon(d)
            await self.wait_dead(broker, "q", 1)  # a consume kills "a"
            await broker.publish("q", _messages(["b"]))
            await broker.dead_letter(await self.take_one(broker, "q"), "undecodable")
            await broker.publish("q2", _messages(["c"]))
            await broker.dead_letter(await self.take_one(broker, "q2"), "undecodable")
            assert [x.message.id for x in await broker.dead_letters("q")] == ["a", "b"]
            assert [x.message.id for x in await broker.dead_letters()] == ["a", "b", "c"]
            assert [x.message.id for x in await broker.dead_letters(limit=2)] == ["a", "b"]

            assert await broker.requeue_dead("q") == 2
            assert await broker.dead_letters("q") == []
            got = await self.take(broker, "q", 2)
            assert sorted(_ids(got)) == ["a", "b"]
            assert all(x.deliveries == 1 for x in got), "requeue resets the delivery count"
            assert [x.message.body for x in got] == [
                b"body of " + x.message.id.encode() for x in got
            ]
            assert await broker.requeue_dead() == 1
            c = await self.take_one(broker, "q2")
            assert (c.message.id, c.deliveries) == ("c", 1)
            assert await broker.requeue_dead() == 0

    # -- queues and housekeeping ------------------------------------------------------
    async def test_declare_queue_is_idempotent(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with open_broker(make_url()) as broker:
            await broker.declare_queue("q")
            await broker.declare_queue("q")
            await broker.publish("q", _messages(["m"]))
            await broker.declare_queue("q")
            await broker.declare_queue("empty")
            stats = await broker.stats()
            assert [s.queue for s in stats] == sorted(s.queue for s in stats), "sorted by name"
            by_queue = _by_queue(stats)
            assert by_queue["q"] == QueueStats("q", queued=1, running=0, done=0, dead=0)
            assert by_queue["empty"] == QueueStats("empty", queued=0, running=0, done=0, dead=0)
            d = await self.take_one(broker, "q")
            await broker.declare_queue("q")
            await broker.complete(d, None)  # declaring again did not drop the lease

    async def test_stats_counts(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with open_broker(make_url()) as broker:
            await broker.publish("q", _messages(["a", "b", "c", "d"]))
            await broker.publish("q", _messages(["later"]), delay=60)
            await broker.publish("r", _messages(["x"]))
            await broker.complete(await self.take_one(broker, "q"), None)
            await broker.dead_letter(await self.take_one(broker, "q"), "bad")
            await self.take_one(broker, "q")  # stays leased
            await broker.abandon(await self.take_one(broker, "q"), delay=60)  # queued again
            stats = await broker.stats()
            by_queue = _by_queue(stats)
            assert by_queue["q"] == QueueStats("q", queued=2, running=1, done=1, dead=1)
            assert by_queue["r"] == QueueStats("r", queued=1, running=0, done=0, dead=0)
            assert [s.queue for s in stats] == sorted(s.queue for s in stats)

    async def test_purge_removes_finished_state_only(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with open_broker(make_url()) as broker:
            await broker.publish("q", _messages(["done", "dead", "leased", "queued"]))
            await broker.publish("q", _messages(["delayed"]), delay=60)
            await broker.complete(await self.take_one(broker, "q"), b"")
            await broker.dead_letter(await self.take_one(broker, "q"), "bad")
            leased = await self.take_one(broker, "q")
            assert leased.message.id == "leased"
            await broker.publish("q2", _messages(["other"]))
            await broker.complete(await self.take_one(broker, "q2"), None)

            assert await broker.purge("q") == 2
            by_queue = _by_queue(await broker.stats())
            assert by_queue["q"] == QueueStats("q", queued=2, running=1, done=0, dead=0)
            assert by_queue["q2"].done == 1, "purge of one queue left the others alone"
            assert await broker.dead_letters() == []
            await broker.complete(leased, None)  # the lease survived
            assert (await self.take_one(broker, "q")).message.id == "queued"
            assert await broker.purge() == 2  # "leased" in q, "other" in q2
            assert await broker.purge() == 0
            by_queue = _by_queue(await broker.stats())
            assert by_queue["q"] == QueueStats("q", queued=1, running=1, done=0, dead=0)

    async def test_delete_queue(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with open_broker(make_url()) as broker:
            await broker.publish("q", _messages(["m"]))
            await broker.publish("keep", _messages(["k"]))
            await broker.delete_queue("q")
            await broker.delete_queue("never-declared")
            names = {s.queue for s in await broker.stats()}
            assert "q" not in names and "keep" in names, names
            await self.assert_no_delivery(broker, "q", 0.1)
            assert (await self.take_one(broker, "keep")).message.id == "k"

    # -- result channels --------------------------------------------------------------
    async def test_replies_are_kept_until_taken_in_arrival_order(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with open_broker(make_url()) as broker:
            await broker.publish("q", _messages([f"m{i}" for i in range(5)], reply_to="ch"))
            await broker.publish("q", _messages(["silent"], reply_to="ch"))
            await broker.publish("q", _messages(["nobody"]))
            for d in await self.take(broker, "q", 5):
                await broker.complete(d, d.message.id.encode() if d.message.id != "m0" else b"")
            await broker.complete(await self.take_one(broker, "q"), None)  # posts nothing
            await broker.complete(await self.take_one(broker, "q"), b"to nobody")
            got = await self.replies(broker, "ch", 5, limit=3)
            assert got == [Reply("m0", body=b"")] + [
                Reply(f"m{i}", body=f"m{i}".encode()) for i in range(1, 5)
            ]
            assert not got[0].is_dead and got[0].body == b""
            await self.assert_no_reply(broker, "ch", 0.1)

    async def test_receive_replies_blocks_until_a_reply_arrives(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with open_broker(make_url()) as broker:
            got: list[Reply] = []
            arrived = trio.Event()

            async def receiver() -> None:
                got.extend(await broker.receive_replies("ch", 10))
                arrived.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(receiver)
                with trio.move_on_after(0.2):
                    await arrived.wait()
                assert not arrived.is_set(), f"receive_replies returned {got} on an empty channel"
                await broker.publish("q", _messages(["m"], reply_to="ch"))
                await broker.complete(await self.take_one(broker, "q"), b"r")
                with trio.fail_after(self.patience):
                    await arrived.wait()
            assert got == [Reply("m", body=b"r")]

    async def test_receive_replies_is_cancellable_and_loses_nothing(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with open_broker(make_url()) as broker:
            with trio.move_on_after(0.1) as scope:
                await broker.receive_replies("ch", 1)
            assert scope.cancelled_caught
            async with trio.open_nursery() as nursery:
                nursery.start_soon(broker.receive_replies, "ch", 1)
                await trio.sleep(0.05)
                nursery.cancel_scope.cancel()
            await broker.publish("q", _messages(["m"], reply_to="ch"))
            await broker.complete(await self.take_one(broker, "q"), b"r")
            assert await self.replies(broker, "ch", 1) == [Reply("m", body=b"r")]

    async def test_each_reply_is_taken_by_one_receiver(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        url = make_url()
        ids = [f"m{i:02}" for i in range(30)]
        async with open_broker(url) as a, open_broker(url) as b:
            taken: list[str] = []
            all_taken = trio.Event()

            async def receiver(broker: Broker) -> None:
                while True:
                    for reply in await broker.receive_replies("ch", 4):
                        taken.append(reply.message_id)
                        if len(set(taken)) == len(ids):
                            all_taken.set()

            async with trio.open_nursery() as nursery:
                for broker in (a, b, a, b):
                    nursery.start_soon(receiver, broker)
                await a.publish("q", _messages(ids, reply_to="ch"))
                for d in await self.take(a, "q", len(ids), limit=7):
                    await a.complete(d, b"r")
                with trio.fail_after(self.patience):
                    await all_taken.wait()
                nursery.cancel_scope.cancel()
            twice = sorted({i for i in taken if taken.count(i) > 1})
            assert sorted(taken) == ids, f"each reply must be taken by one call; twice: {twice}"

    async def test_delete_channel(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with open_broker(make_url()) as broker:
            await broker.publish("q", _messages(["m", "n"], reply_to="ch"))
            await broker.complete(await self.take_one(broker, "q"), b"dropped")
            await broker.delete_channel("ch")
            await broker.delete_channel("never-used")
            await self.assert_no_reply(broker, "ch", 0.1)
            await broker.complete(await self.take_one(broker, "q"), b"kept")
            assert await self.replies(broker, "ch", 1) == [Reply("n", body=b"kept")]

    # -- broadcast ----------------------------------------------------------------------
    async def test_broadcast_reaches_every_subscriber(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        url = make_url()
        async with open_broker(url) as a, open_broker(url) as b:
            await a.broadcast("abort", b"before anyone listens")
            received: dict[str, list[bytes]] = {"a1": [], "a2": [], "b": [], "other": []}
            done = {key: trio.Event() for key in received}

            async def listen(
                broker: Broker,
                topic: str,
                key: str,
                *,
                task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
            ) -> None:
                async with broker.subscribe(topic) as bodies:
                    task_status.started()
                    async for body in bodies:
                        received[key].append(body)
                        if len(received[key]) == 2:
                            done[key].set()

            async with trio.open_nursery() as nursery:
                await nursery.start(listen, a, "abort", "a1")
                await nursery.start(listen, a, "abort", "a2")
                await nursery.start(listen, b, "abort", "b")
                await nursery.start(listen, b, "other", "other")
                await a.broadcast("abort", b"one")
                await b.broadcast("abort", b"two")
                with trio.fail_after(self.patience):
                    for key in ("a1", "a2", "b"):
                        await done[key].wait()
                nursery.cancel_scope.cancel()
            for key in ("a1", "a2", "b"):
                assert sorted(received[key]) == [b"one", b"two"], (key, received)
            assert received["other"] == [], "a topic's broadcast reached another topic"

    # -- run channels -------------------------------------------------------------------
    async def test_closed_channel_drops_late_replies_and_settles_its_jobs(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with open_broker(make_url()) as broker:
            await broker.open_channel("run", 60.0)
            await broker.publish("q", _messages(["running", "queued"], reply_to="run"))
            running = await self.take_one(broker, "q")
            await broker.complete(await self.take_one(broker, "q"), b"before the close")
            await broker.close_channel("run")
            await broker.complete(running, b"after the close")  # its lease still holds
            await self.assert_no_reply(broker, "run", 0.1)
            await broker.publish("q", _messages(["orphan"], reply_to="run"))
            await self.assert_no_delivery(broker, "q", 0.2)
            with pytest.raises(ChannelLost):
                await broker.keep_channel("run", 60.0)
            (stats,) = [s for s in await broker.stats() if s.queue == "q"]
            assert (stats.queued, stats.running, stats.done) == (0, 0, 3)

    async def test_channel_not_kept_alive_dies(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        ttl = self.lease
        async with open_broker(make_url()) as broker:
            await broker.open_channel("kept", ttl)
            await broker.open_channel("left", ttl)
            await broker.publish("q", _messages(["to-left"], reply_to="left"))
            await broker.complete(await self.take_one(broker, "q"), b"waiting in left")
            await broker.publish("q", _messages(["orphan"], reply_to="left"))
            await broker.publish("q", _messages(["alive"], reply_to="kept"))
            deadline = trio.current_time() + 3 * ttl
            while trio.current_time() < deadline:
                await broker.keep_channel("kept", ttl)
                await trio.sleep(ttl / 4)
            with pytest.raises(ChannelLost, match="'left'"):
                await broker.keep_channel("left", ttl)
            assert _ids([await self.take_one(broker, "q")]) == ["alive"]
            await self.assert_no_delivery(broker, "q", 0.1)
            assert await broker.purge() >= 1, "purge left the dead channel's reply"
            await self.assert_no_reply(broker, "left", 0.1)

    async def test_keep_channel_of_an_unknown_channel_raises_channel_lost(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with open_broker(make_url()) as broker:
            with pytest.raises(ChannelLost) as info:
                await broker.keep_channel("never-opened", 30.0)
            assert info.value.channel == "never-opened"
            assert "no record" in str(info.value)
            await broker.open_channel("opened", 30.0)
            await broker.delete_channel("opened")  # forgotten, as a broker that lost its data
            with pytest.raises(ChannelLost):
                await broker.keep_channel("opened", 30.0)

    # -- workers ------------------------------------------------------------------------
    async def test_heartbeats_list_live_workers(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        url = make_url()
        async with open_broker(url) as a, open_broker(url) as b:
            w1 = WorkerInfo("w1", "q", 4, "host-a", 11, started_at=time.time(), running=2)
            w2 = WorkerInfo("w2", "other", 1, "host-b", 12, started_at=time.time())
            await a.heartbeat(w1, 60.0)
            await a.heartbeat(w2, self.lease)
            listed = await b.workers()
            assert [w.id for w in listed] == ["w2", "w1"], "sorted by queue, then id"
            (one,) = await b.workers("q")
            assert attrs.evolve(one, seen_at=0.0) == w1
            assert abs(one.seen_at - b.clock()) < 5.0
            by_queue = _by_queue(await b.stats())
            assert (by_queue["q"].workers, by_queue["other"].workers) == (1, 1)
            await trio.sleep(self.lease * 1.5)
            assert [w.id for w in await b.workers()] == ["w1"], "an expired worker is listed"
            await a.heartbeat(w1, 0.0)
            assert await b.workers() == []
