"""The administration conformance: counts, dead letters, requeue and purge, as tools see them.

What :class:`~wireframe.jobs.broker.BrokerAdmin` promises: ``stats`` counts
each state right, ``requeue_dead`` gives dead letters a fresh start (all, or
one message's), dead letters and job records come in pages (``offset``,
``limit``; ``find_jobs`` filtered), and ``purge`` deletes finished state only,
never a queued or leased message.
"""

from __future__ import annotations

from collections.abc import Sequence

import trio

from wireframe.jobs.broker import DeadLetter, JobRecord, Message, QueueStats, RecordStatus
from wireframe.testing import UrlFactory
from wireframe.testing.conformance.base import (
    ConformanceBase,
    ids_of,
    make_messages,
    stats_by_queue,
)

__all__ = ["AdminConformance"]


def _ids(items: Sequence[JobRecord] | Sequence[DeadLetter]) -> list[str]:
    return [x.id if isinstance(x, JobRecord) else x.message.id for x in items]


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

    async def test_dead_letters_come_in_pages_and_one_can_be_requeued(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as broker:
            await broker.publish("q", make_messages(["a", "b", "c"]))
            for _ in range(3):
                await broker.dead_letter(await self.take_one(broker, "q"), "bad")
            await broker.publish("q2", make_messages(["d"]))
            await broker.dead_letter(await self.take_one(broker, "q2"), "bad")
            assert _ids(await broker.dead_letters(limit=2, offset=1)) == ["b", "c"]
            assert _ids(await broker.dead_letters("q", limit=5, offset=2)) == ["c"]
            assert await broker.dead_letters(offset=4) == []
            assert await broker.requeue_dead(message_id="b") == 1
            assert _ids(await broker.dead_letters()) == ["a", "c", "d"]
            got = await self.take_one(broker, "q")
            assert (got.message.id, got.deliveries) == ("b", 1)
            assert await broker.requeue_dead("q2", message_id="a") == 0
            assert await broker.requeue_dead(message_id="nope") == 0
            assert _ids(await broker.dead_letters()) == ["a", "c", "d"]

    async def test_find_jobs_pages_newest_first_and_filters(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as broker:
            for n in range(5):  # j0, j2, j4 on q (operation "even"); j1, j3 on r ("odd")
                queue, op = ("q", "even") if n % 2 == 0 else ("r", "odd")
                await broker.submit(queue, Message(f"j{n}", b"x"), operation=op, key=f"k{n}")
            await broker.submit("q", Message("later", b"x"), delay=3600, operation="even")
            await broker.complete(await self.take_one(broker, "q"), b"ok")  # j0
            await broker.dead_letter(await self.take_one(broker, "q"), "bad")  # j2

            assert _ids(await broker.find_jobs()) == ["later", "j4", "j3", "j2", "j1", "j0"]
            assert _ids(await broker.find_jobs(limit=2)) == ["later", "j4"]
            assert _ids(await broker.find_jobs(limit=2, offset=2)) == ["j3", "j2"]
            assert _ids(await broker.find_jobs(limit=2, offset=4)) == ["j1", "j0"]
            assert await broker.find_jobs(offset=6) == []
            assert _ids(await broker.find_jobs(queue="r")) == ["j3", "j1"]
            assert _ids(await broker.find_jobs(operation="even", limit=2, offset=1)) == [
                "j4",
                "j2",
            ]
            assert _ids(await broker.find_jobs(key="k3")) == ["j3"]
            by_status = {s: _ids(await broker.find_jobs(status=s)) for s in RecordStatus}
            assert by_status == {
                RecordStatus.SCHEDULED: ["later"],
                RecordStatus.QUEUED: ["j4", "j3", "j1"],
                RecordStatus.RUNNING: [],
                RecordStatus.DONE: ["j0"],
                RecordStatus.ABORTED: [],
                RecordStatus.DEAD: ["j2"],
            }
            await self.take_one(broker, "q")  # j4
            [running] = await broker.find_jobs(status=RecordStatus.RUNNING, queue="q")
            assert running.id == "j4" and running.attempts == 1
            [done] = await broker.find_jobs(status=RecordStatus.DONE)
            assert done.result == b"ok" and done.operation == "even"
