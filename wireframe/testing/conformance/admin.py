"""The administration conformance: counts, dead letters, requeue and purge, as tools see them.

What :class:`~wireframe.jobs.broker.BrokerAdmin` promises: ``stats`` counts
each state right, ``requeue_dead`` gives dead letters a fresh start, and
``purge`` deletes finished state only, never a queued or leased message.
"""

from __future__ import annotations

import trio

from wireframe.jobs.broker import QueueStats
from wireframe.testing import UrlFactory
from wireframe.testing.conformance.base import (
    ConformanceBase,
    ids_of,
    make_messages,
    stats_by_queue,
)

__all__ = ["AdminConformance"]


class AdminConformance(ConformanceBase):
    """The administration role: stats, dead letters, requeue, purge."""

    async def test_requeue_dead_resets_count(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url(max_deliveries=1)) as broker:
            await broker.publish("q", make_messages(["a"]))
            d = await self.take_one(broker, "q")
            await broker.abandon(d)
            await self.wait_dead(broker, "q", 1)  # a consume kills "a"
            await broker.publish("q", make_messages(["b"]))
            await broker.dead_letter(await self.take_one(broker, "q"), "undecodable")
            await broker.publish("q2", make_messages(["c"]))
            await broker.dead_letter(await self.take_one(broker, "q2"), "undecodable")
            assert [x.message.id for x in await broker.dead_letters("q")] == ["a", "b"]
            assert [x.message.id for x in await broker.dead_letters()] == ["a", "b", "c"]
            assert [x.message.id for x in await broker.dead_letters(limit=2)] == ["a", "b"]

            assert await broker.requeue_dead("q") == 2
            assert await broker.dead_letters("q") == []
            got = await self.take(broker, "q", 2)
            assert sorted(ids_of(got)) == ["a", "b"]
            assert all(x.deliveries == 1 for x in got), "requeue resets the delivery count"
            assert [x.message.body for x in got] == [
                b"body of " + x.message.id.encode() for x in got
            ]
            assert await broker.requeue_dead() == 1
            c = await self.take_one(broker, "q2")
            assert (c.message.id, c.deliveries) == ("c", 1)
            assert await broker.requeue_dead() == 0

    async def test_stats_counts(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as broker:
            await broker.publish("q", make_messages(["a", "b", "c", "d"]))
            await broker.publish("q", make_messages(["later"]), delay=60)
            await broker.publish("r", make_messages(["x"]))
            await broker.complete(await self.take_one(broker, "q"), None)
            await broker.dead_letter(await self.take_one(broker, "q"), "bad")
            await self.take_one(broker, "q")  # stays leased
            await broker.abandon(await self.take_one(broker, "q"), delay=60)  # queued again
            stats = await broker.stats()
            by_queue = stats_by_queue(stats)
            assert by_queue["q"] == QueueStats(
                "q", queued=2, running=1, done=1, dead=1, scheduled=2
            )
            assert by_queue["r"] == QueueStats("r", queued=1, running=0, done=0, dead=0)
            assert [s.queue for s in stats] == sorted(s.queue for s in stats)

    async def test_purge_removes_finished_state_only(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as broker:
            await broker.publish("q", make_messages(["done", "dead", "leased", "queued"]))
            await broker.publish("q", make_messages(["delayed"]), delay=60)
            await broker.complete(await self.take_one(broker, "q"), b"")
            await broker.dead_letter(await self.take_one(broker, "q"), "bad")
            leased = await self.take_one(broker, "q")
            assert leased.message.id == "leased"
            await broker.publish("q2", make_messages(["other"]))
            await broker.complete(await self.take_one(broker, "q2"), None)

            assert await broker.purge("q") == 2
            by_queue = stats_by_queue(await broker.stats())
            assert by_queue["q"] == QueueStats(
                "q", queued=2, running=1, done=0, dead=0, scheduled=1
            )
            assert by_queue["q2"].done == 1, "purge of one queue left the others alone"
            assert await broker.dead_letters() == []
            await broker.complete(leased, None)  # the lease survived
            assert (await self.take_one(broker, "q")).message.id == "queued"
            assert await broker.purge() == 2  # "leased" in q, "other" in q2
            assert await broker.purge() == 0
            by_queue = stats_by_queue(await broker.stats())
            assert by_queue["q"] == QueueStats(
                "q", queued=1, running=1, done=0, dead=0, scheduled=1
            )
