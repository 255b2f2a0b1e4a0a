"""Runs and workers that are gone: orphaned jobs skipped, lost state reported, workers listed.

All on a private memory broker and trio's MockClock: a run's channel expiring,
a worker's heartbeat running out and a timeout are minutes of virtual time.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import pytest
import trio
import trio.lowlevel

from wireframe import jobs

RAN: Counter[int] = Counter()


@attrs.frozen
class Record(jobs.Operation[int, int], name="presence-record"):
    """Counts its runs per input; slow enough that a run can be cut short."""

    async def execute(self, x: int) -> int:
        RAN[x] += 1
        await trio.sleep(1.0)
        return x


@asynccontextmanager
async def broker() -> AsyncIterator[jobs.Broker]:
    RAN.clear()
    async with jobs.open_broker(f"memory://presence-{uuid.uuid4().hex[:8]}?lease=10") as b:
        yield b


@asynccontextmanager
async def worker_on(b: jobs.Broker, concurrency: int = 4) -> AsyncIterator[jobs.Worker]:
    w = jobs.Worker(b, concurrency=concurrency, worker_id="w1")
    async with trio.open_nursery() as nursery:
        await nursery.start(w.serve)
        yield w
        w.stop()


async def test_an_aborted_runs_queued_jobs_never_run(autojump_clock: trio.abc.Clock) -> None:
    async with broker() as b:
        rt = jobs.Runtime(b)
        with pytest.raises(trio.TooSlowError):
            await jobs.from_iter(range(20)).map(Record()).collect().run(rt, timeout=5)
        # Nobody listened to the abort broadcast: the closed channel is what stops them.
        async with worker_on(b) as w:
            await trio.sleep(60)
            assert Counter() == RAN, "jobs of an aborted run ran"
            assert w.statistics().done == 0
        (stats,) = await b.stats()
        assert (stats.queued, stats.running, stats.done) == (0, 0, 20)


async def test_a_dead_orchestrators_jobs_stop_when_its_channel_expires(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with broker() as b:
        # What a run leaves behind when its process is killed: an open channel nobody
        # keeps alive, and its jobs on the queue.
        await b.open_channel("reply.dead-run", 30.0)
        await b.publish(
            "default",
            [
                jobs.Message(f"dead.{i}", body=b"never decoded", reply_to="reply.dead-run")
                for i in range(3)
            ],
        )
        await trio.sleep(31)
        async with worker_on(b) as w:
            await trio.sleep(5)
            assert w.statistics().dead == 0, "an orphan was handed to a worker"
        (stats,) = await b.stats()
        assert (stats.queued, stats.done, stats.dead) == (0, 3, 0)


async def test_a_run_fails_when_the_broker_loses_its_channel(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with broker() as b:
        rt = jobs.Runtime(b)

        async def lose_state() -> None:
            await trio.sleep(1)
            for name in list(b._state.channels) + list(b._state.deadlines):  # type: ignore[attr-defined]
                await b.delete_channel(name)  # what a Redis without persistence forgets

        async with trio.open_nursery() as nursery:
            nursery.start_soon(lose_state)
            start = trio.current_time()
            with pytest.raises(jobs.ChannelLost) as info:
                await jobs.from_iter(range(5)).map(Record()).collect().run(rt)
        waited = trio.current_time() - start
        assert waited <= 2 * b.url.lease, f"the lost run was noticed only after {waited} s"
        message = str(info.value)
        assert "no record of it" in message and "5 jobs in flight" in message, message


async def test_no_worker_is_named_in_the_log_and_the_timeout(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    async with broker() as b:
        rt = jobs.Runtime(b)
        with (
            caplog.at_level(logging.WARNING, logger="wireframe.jobs"),
            pytest.raises(trio.TooSlowError) as info,
        ):
            await jobs.literal(1).then(Record()).run(rt, timeout=20)
        message = str(info.value)
        assert "with 1 of 1 jobs unanswered" in message, message
        assert "no live worker has consumed queue 'default'" in message, message
        assert "wireframe worker --broker URL --import MODULE" in message
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "no live worker consumes queue 'default'" in warnings[0]


async def test_a_timeout_with_a_worker_does_not_blame_the_worker(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with broker() as b, worker_on(b, concurrency=1):
        rt = jobs.Runtime(b)
        with pytest.raises(trio.TooSlowError) as info:
            await jobs.from_iter(range(30)).map(Record()).collect().run(rt, timeout=10)
        assert "no live worker" not in str(info.value)
        assert "jobs unanswered" in str(info.value)


async def test_workers_announce_themselves_and_leave(autojump_clock: trio.abc.Clock) -> None:
    async with broker() as b:
        assert await b.workers() == []
        async with worker_on(b, concurrency=7):
            await trio.lowlevel.checkpoint()
            (info,) = await b.workers()
            assert (info.id, info.queue, info.concurrency) == ("w1", "default", 7)
            assert info.pid > 0 and info.host
            await trio.sleep(3600)  # heartbeats keep it listed
            assert [w.id for w in await b.workers("default")] == ["w1"]
            assert await b.workers("other") == []
            (stats,) = await b.stats()
            assert stats.workers == 1
        assert await b.workers() == [], "a stopped worker is still listed"


async def test_a_silent_worker_drops_out_after_its_ttl(autojump_clock: trio.abc.Clock) -> None:
    async with broker() as b:
        info = jobs.WorkerInfo("gone", "default", 1, "host", 1, started_at=0.0)
        await b.heartbeat(info, 10.0)
        await trio.sleep(9)
        assert [w.id for w in await b.workers()] == ["gone"]
        await trio.sleep(2)
        assert await b.workers() == []
