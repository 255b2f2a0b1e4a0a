"""The limits conformance: rate and concurrency limits kept in the broker, across every consumer.

:class:`LimitsConformance` checks ``WorkQueue.define_limit`` and what
``consume`` does with a message whose ``limit`` names one (see
:mod:`wireframe.jobs.limits`): a concurrency cap shared by consumers and
queues, slots given back by every way a lease ends, a token bucket's burst and
refill, held messages that use up no delivery and hold back nothing behind
them, a sleeping consumer woken when one may go, and the ``scheduled`` and
``held`` counts. It runs at the broker level, in real time on wall-clock
brokers (each wait a few tenths of a second).
"""

from __future__ import annotations

import trio

from wireframe.jobs.broker import Broker, Delivery, LockLost, Message
from wireframe.jobs.limits import Limit
from wireframe.testing import UrlFactory
from wireframe.testing.conformance.base import ConformanceBase, ids_of, stats_by_queue

__all__ = ["LimitsConformance"]


def _limited(ids: str, limit: str = "L") -> list[Message]:
    """One message per character of ``ids``, each naming ``limit``."""
    return [Message(i, f"body of {i}".encode(), limit=limit) for i in ids]


class LimitsConformance(ConformanceBase):
    """Limits across consumers: part of :class:`~wireframe.testing.BrokerConformance`."""

    #: Seconds between two tokens of the rate tests' bucket.
    token_every: float = 0.1

    async def held(self, broker: Broker, queue: str) -> None:
        """Nothing more can be consumed from ``queue`` for a while (a limit holds it)."""
        await self.assert_no_delivery(broker, queue, 3 * self.token_every)

    async def test_a_concurrency_limit_holds_across_consumers_and_queues(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as one, self.open(make_url()) as two:
            await one.define_limit(Limit("L", concurrency=2))
            await one.publish("q1", _limited("abc"))
            await one.publish("q2", _limited("de"))
            first = await self.take(one, "q1", 2)
            assert ids_of(first) == ["a", "b"]
            await self.held(two, "q2")
            await self.held(one, "q1")
            await one.complete(first[0], b"")
            assert ids_of(await self.take(two, "q2", 1)) == ["d"]
            await self.held(one, "q1")

    async def test_held_messages_hold_back_nothing_behind_them(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as broker:
            await broker.define_limit(Limit("L", concurrency=1))
            free = [Message("c", b"c"), Message("d", b"d", limit="never-defined")]
            await broker.publish("q", [*_limited("ab"), *free])
            got = await self.take(broker, "q", 3)
            assert ids_of(got) == ["a", "c", "d"]
            await self.held(broker, "q")
            await broker.complete(got[0], b"")
            b = await self.take_one(broker, "q")
            assert b.message.id == "b"
            assert b.deliveries == 1, "a held message must not use up a delivery"
            assert b.message == _limited("b")[0]

    async def test_a_sleeping_consumer_wakes_when_a_slot_is_freed(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as broker, self.open(make_url()) as other:
            await broker.define_limit(Limit("L", concurrency=1))
            await broker.publish("q", _limited("ab"))
            a = await self.take_one(broker, "q")
            got: list[Delivery] = []

            async def consume() -> None:
                got.extend(await other.consume("q", 10))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(consume)
                await trio.sleep(3 * self.token_every)
                assert not got, f"a limit of 1 let {ids_of(got)} go beside a running one"
                await broker.complete(a, b"")
                with trio.fail_after(self.patience):
                    while not got:
                        await trio.sleep(0.01)
            assert ids_of(got) == ["b"]

    async def test_every_end_of_a_lease_gives_its_slot_back(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url(lease=self.lease)) as broker:
            await broker.define_limit(Limit("L", concurrency=1))
            await broker.publish("q", _limited("abc"))
            a = await self.take_one(broker, "q")
            await broker.abandon(a, delay=60.0)
            b = await self.take_one(broker, "q")
            assert b.message.id == "b"
            await broker.dead_letter(b, "poison")
            c = await self.take_one(broker, "q")
            assert c.message.id == "c"
            # c's lease runs out: its slot is free again and c is handed out anew
            again = await self.take_one(broker, "q")
            assert again.message.id == "c" and again.deliveries == 2
            try:
                await broker.complete(c, b"late")
            except LockLost:
                pass
            else:
                raise AssertionError("completing a lost lease must raise LockLost")
            await broker.complete(again, b"")

    async def test_a_rate_limit_is_a_token_bucket(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        every = self.token_every
        async with self.open(make_url()) as broker:
            await broker.define_limit(Limit("R", rate=4, per=4 * every))
            await broker.publish("q", _limited("abcdefgh", "R"))
            start = trio.current_time()
            burst = await self.take(broker, "q", 4)
            assert ids_of(burst) == list("abcd"), "a full bucket allows a burst of rate"
            times = []
            for _ in range(4):
                await self.take_one(broker, "q")
                times.append(trio.current_time() - start)
            # one token per `every` after the burst: the 4th comes no earlier than 4 tokens later
            assert times[0] >= 0.5 * every, f"a fifth job went after {times[0]:.3f} s"
            assert times[-1] >= 3.5 * every, f"eight jobs went within {times[-1]:.3f} s"

    async def test_redefining_a_limit_replaces_it(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as broker:
            await broker.define_limit(Limit("L", concurrency=1))
            await broker.define_limit(Limit("L", concurrency=1))  # idempotent
            await broker.publish("q", _limited("abc"))
            await self.take_one(broker, "q")
            await self.held(broker, "q")
            await broker.define_limit(Limit("L", concurrency=3))
            assert ids_of(await self.take(broker, "q", 2)) == ["b", "c"]

    async def test_stats_count_scheduled_and_held_messages(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as broker:
            await broker.define_limit(Limit("L", concurrency=1))
            await broker.publish("q", _limited("abc"))
            await broker.publish("q", [Message("later", b"")], delay=60.0)
            await self.take_one(broker, "q")
            q = stats_by_queue(await broker.stats())["q"]
            assert (q.queued, q.running, q.scheduled, q.held) == (3, 1, 1, 2), q

    async def test_a_tracked_job_obeys_its_limit(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as broker:
            await broker.define_limit(Limit("L", concurrency=1))
            for message in _limited("jk"):
                await broker.submit("q", message, operation="op")
            j = await self.take_one(broker, "q")
            await self.held(broker, "q")
            record = await broker.job("k")
            assert record is not None and record.status.value == "queued"
            await broker.complete(j, b"")
            assert (await self.take_one(broker, "q")).message.id == "k"
