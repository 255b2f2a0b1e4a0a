"""The presence conformance: workers listed while their heartbeats are fresh."""

from __future__ import annotations

import time

import attrs
import trio

from wireframe.jobs.broker import ScheduleInfo, WorkerInfo
from wireframe.testing import UrlFactory
from wireframe.testing.conformance.base import (
    ConformanceBase,
    stats_by_queue,
)

__all__ = ["PresenceConformance"]


class PresenceConformance(ConformanceBase):
    """The presence role: heartbeats and the live workers."""

    async def test_heartbeats_list_live_workers(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        url = make_url()
        async with self.open(url) as a, self.open(url) as b:
            w1 = WorkerInfo("w1", "q", 4, "host-a", 11, started_at=time.time(), running=2)
            w2 = WorkerInfo("w2", "other", 1, "host-b", 12, started_at=time.time())
            await a.heartbeat(w1, 60.0)
            await a.heartbeat(w2, self.lease)
            listed = await b.workers()
            assert [w.id for w in listed] == ["w2", "w1"], "sorted by queue, then id"
            (one,) = await b.workers("q")
            assert attrs.evolve(one, seen_at=0.0) == w1
            assert abs(one.seen_at - b.clock()) < 5.0
            by_queue = stats_by_queue(await b.stats())
            assert (by_queue["q"].workers, by_queue["other"].workers) == (1, 1)
            await self.pass_time(self.lease * 1.5)
            assert [w.id for w in await b.workers()] == ["w1"], "an expired worker is listed"
            await a.heartbeat(w1, 0.0)
            assert await b.workers() == []

    async def test_schedules_are_listed_while_announced(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        url = make_url()
        async with self.open(url) as a, self.open(url) as b:
            nightly = ScheduleInfo("nightly", "cron 0 3 * * * UTC", "cleanup", "default", 1e9)
            beat = ScheduleInfo("beat", "every 30 s", "beat", "side", 2e9, 1.5e9, "s1")
            await a.announce_schedule(nightly, 60.0)
            await a.announce_schedule(beat, self.lease)
            listed = await b.schedules()
            assert [s.name for s in listed] == ["beat", "nightly"], "sorted by name"
            assert attrs.evolve(listed[0], seen_at=0.0) == beat
            assert abs(listed[0].seen_at - b.clock()) < 5.0
            moved = attrs.evolve(nightly, next_at=1.1e9, scheduler="s2")
            await b.announce_schedule(moved, 60.0)  # another replica: the last one wins
            await self.pass_time(self.lease * 1.5)
            (left,) = await a.schedules()
            assert attrs.evolve(left, seen_at=0.0) == moved, "an expired schedule is listed"
