"""Jobs on their own: submit, handles by id, delays, priorities, dedup keys, time limits, abort.

On a private memory broker and trio's MockClock; the same contract on SQLite
and Redis is the job store part of the conformance suite.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import attrs
import pytest
import trio

from wireframe import jobs

ORDER: list[str] = []


@attrs.frozen
class Echo(jobs.Operation[str, str], name="handles-echo"):
    """Records the order it ran in; sleeps ``pause`` seconds first."""

    pause: float = 0.0

    async def execute(self, x: str) -> str:
        ORDER.append(x)
        await trio.sleep(self.pause)
        if x == "boom":
            raise ValueError("asked to fail")
        return x.upper()


@attrs.frozen
class Slow(jobs.Operation[int, int], name="handles-slow", time_limit=5.0):
    """Sleeps ``x`` seconds; its class says 5 s is its time limit."""

    async def execute(self, x: int) -> int:
        await trio.sleep(x)
        return x


@asynccontextmanager
async def setup(workers: int = 1, concurrency: int = 4) -> AsyncIterator[jobs.Runtime]:
    """A runtime on a private memory broker, with ``workers`` workers (0: none yet)."""
    ORDER.clear()
    async with jobs.connect(f"memory://handles-{uuid.uuid4().hex[:8]}?lease=10",
                            workers=workers, worker_concurrency=concurrency) as rt:  # fmt: skip
        yield rt


@asynccontextmanager
async def worker_on(rt: jobs.Runtime, concurrency: int = 1) -> AsyncIterator[jobs.Worker]:
    worker = jobs.Worker(rt.broker, concurrency=concurrency)
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.serve)
        yield worker
        worker.stop()


async def test_submit_then_result_many_times_and_by_many(autojump_clock: trio.abc.Clock) -> None:
    async with setup() as rt:
        handle = await rt.submit(Echo(pause=1.0), "ada")
        assert isinstance(handle.id, str) and handle.id
        results: list[str] = []

        async def wait() -> None:
            results.append(await handle.result(timeout=10))

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(wait)
        assert results == ["ADA"] * 5
        assert await handle.result() == "ADA"  # again, after it finished
        assert await handle.status() is jobs.JobStatus.SUCCEEDED


async def test_status_moves_scheduled_queued_running_succeeded(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with setup(workers=0) as rt:
        handle = await rt.submit(Echo(pause=5.0), "x", delay=10)
        assert await handle.status() is jobs.JobStatus.SCHEDULED
        await trio.sleep(11)
        assert await handle.status() is jobs.JobStatus.QUEUED
        async with worker_on(rt):
            await trio.sleep(1)
            assert await handle.status() is jobs.JobStatus.RUNNING
            record = await handle.record()
            assert record.attempts == 1 and record.worker and record.started_at is not None
            assert await handle.result(timeout=10) == "X"
        record = await handle.record()
        assert record.operation == "handles-echo" and record.finished_at is not None


async def test_a_handle_by_id_from_another_runtime(autojump_clock: trio.abc.Clock) -> None:
    async with setup() as rt:
        job = await rt.submit(Echo(), "far")
        async with jobs.open_broker(str(rt.broker.url.raw)) as other:
            elsewhere = jobs.Runtime(other).handle(job.id)
            assert await elsewhere.result(timeout=10) == "FAR"


async def test_a_failed_job_raises_job_failed_and_reports_failed(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with setup() as rt:
        handle = await rt.submit(Echo(), "boom")
        with pytest.raises(jobs.JobFailed, match="ValueError: asked to fail"):
            await handle.result(timeout=10)
        assert await handle.status() is jobs.JobStatus.FAILED


async def test_delay_and_at_hold_a_job_back(autojump_clock: trio.abc.Clock) -> None:
    async with setup() as rt:
        start = trio.current_time()
        assert await (await rt.submit(Echo(), "later", delay=30)).result() == "LATER"
        assert trio.current_time() - start >= 30
        at = datetime.now(UTC) + timedelta(seconds=0)
        assert await (await rt.submit(Echo(), "now", at=at)).result() == "NOW"


async def test_higher_priority_first_and_fifo_among_equals(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with setup(workers=0) as rt:
        for name, priority in [("a0", 0), ("b0", 0), ("c5", 5), ("d-1", -1), ("e5", 5), ("f9", 9)]:
            await rt.submit(Echo(), name, priority=priority)
        async with worker_on(rt, concurrency=1):
            while len(ORDER) < 6:
                await trio.sleep(1)
        assert ORDER == ["f9", "c5", "e5", "a0", "b0", "d-1"]


async def test_a_dedup_key_returns_the_live_job(autojump_clock: trio.abc.Clock) -> None:
    async with setup(workers=0) as rt:
        first = await rt.submit(Echo(), "one", key="invoice-17")
        again = await rt.submit(Echo(), "two", key="invoice-17")
        assert again.id == first.id
        other = await rt.submit(Echo(), "three", key="invoice-18")
        assert other.id != first.id
        async with worker_on(rt):
            assert await first.result(timeout=10) == "ONE"
            later = await rt.submit(Echo(), "four", key="invoice-17")  # the key is free again
            assert later.id != first.id
            assert await later.result(timeout=10) == "FOUR"
        assert sorted(ORDER) == ["four", "one", "three"]


async def test_time_limits_by_submit_and_by_class(autojump_clock: trio.abc.Clock) -> None:
    async with setup() as rt:
        with pytest.raises(jobs.JobFailed) as info:
            await (await rt.submit(Slow(), 3, time_limit=1.0)).result()
        assert info.value.error.kind is jobs.ErrorKind.TIME_LIMIT
        assert "time limit of 1 s" in str(info.value)
        with pytest.raises(jobs.JobFailed) as info:
            await (await rt.submit(Slow(), 60)).result()  # the class says 5 s
        assert info.value.error.kind is jobs.ErrorKind.TIME_LIMIT
        assert await (await rt.submit(Slow(), 2)).result() == 2


async def test_abort_a_queued_job_and_a_running_one(autojump_clock: trio.abc.Clock) -> None:
    async with setup(workers=0) as rt:
        queued = await rt.submit(Echo(), "never")
        assert await queued.abort() is jobs.JobStatus.ABORTED
        running = await rt.submit(Echo(pause=100), "cut")
        async with worker_on(rt) as worker:
            while "cut" not in ORDER:
                await trio.sleep(0.5)
            assert await running.abort() is jobs.JobStatus.ABORTED
            with pytest.raises(jobs.JobAborted):
                await running.result(timeout=10)
            while worker.running:
                await trio.sleep(0.5)
        assert ORDER == ["cut"], "an aborted queued job ran"
        with pytest.raises(jobs.JobAborted):
            await queued.result()
        assert await queued.status() is jobs.JobStatus.ABORTED
        done = await rt.submit(Echo(), "done")
        async with worker_on(rt):
            await done.result(timeout=10)
        assert await done.abort() is jobs.JobStatus.SUCCEEDED, "a finished job keeps its status"


async def test_unknown_and_expired_ids_say_so(autojump_clock: trio.abc.Clock) -> None:
    name = f"memory://handles-{uuid.uuid4().hex[:8]}?result_ttl=60&workers=1"
    async with jobs.connect(name) as rt:
        missing = rt.handle("no-such-job")
        with pytest.raises(jobs.UnknownJob, match="'no-such-job' is unknown"):
            await missing.status()
        with pytest.raises(jobs.UnknownJob):
            await missing.result(timeout=1)
        handle = await rt.submit(Echo(), "brief")
        assert await handle.result() == "BRIEF"
        await trio.sleep(61)
        with pytest.raises(jobs.UnknownJob, match="result_ttl=60"):
            await handle.status()


async def test_purge_removes_finished_records(autojump_clock: trio.abc.Clock) -> None:
    async with setup() as rt:
        handle = await rt.submit(Echo(), "gone")
        await handle.result()
        await rt.broker.purge()
        with pytest.raises(jobs.UnknownJob):
            await handle.status()


async def test_a_result_timeout_says_where_the_job_is(autojump_clock: trio.abc.Clock) -> None:
    async with setup(workers=0) as rt:
        handle = await rt.submit(Echo(), "waits")
        with pytest.raises(trio.TooSlowError, match="still queued after 5 s"):
            await handle.result(timeout=5)


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [
        ({"key": ""}, "key='' must be 1 to 256 characters"),
        ({"key": "k" * 300}, "must be 1 to 256 characters long, not 300"),
        ({"queue": ""}, "queue='' must be 1 to 256"),
        ({"delay": -1}, "delay=-1 must be finite and not negative"),
        ({"delay": float("inf")}, "delay=inf must be finite"),
        ({"at": datetime(2030, 1, 1)}, "has no time zone"),
        ({"delay": 1, "at": datetime.now(UTC)}, "delay= or at=, not both"),
        ({"time_limit": 0}, "time_limit=0 must be positive"),
        ({"priority": 1.5}, "priority=1.5 must be an int"),
    ],
)
async def test_bad_arguments_are_refused_before_anything_is_published(
    arguments: dict[str, object], complaint: str
) -> None:
    async with setup(workers=0) as rt:
        with pytest.raises((ValueError, TypeError), match=complaint.replace("(", r"\(")):
            await rt.submit(Echo(), "x", **arguments)  # type: ignore[arg-type]
        (stats,) = await rt.broker.stats() or [jobs.QueueStats("default", 0, 0, 0, 0)]
        assert stats.queued == 0


async def test_a_directive_run_takes_priority_time_limit_and_a_delayed_start(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with setup(workers=0) as rt:
        async with trio.open_nursery() as nursery:

            async def low() -> None:
                assert await jobs.from_iter(["l1", "l2"]).map(Echo()).collect().run(rt) == [
                    "L1",
                    "L2",
                ]

            async def high() -> None:
                got = await jobs.from_iter(["h1", "h2"]).map(Echo()).collect().run(rt, priority=5)
                assert got == ["H1", "H2"]

            nursery.start_soon(low)
            await trio.sleep(1)
            nursery.start_soon(high)
            await trio.sleep(1)  # both runs' jobs are queued before a worker looks
            async with worker_on(rt, concurrency=1):
                await trio.sleep(10)
        assert ORDER == ["h1", "h2", "l1", "l2"], "the higher-priority run's jobs ran first"
        async with worker_on(rt):
            with pytest.raises(jobs.JobFailed) as info:
                await jobs.literal(30).then(Slow()).run(rt, time_limit=2)
        assert info.value.error.kind is jobs.ErrorKind.TIME_LIMIT
        ORDER.clear()
        start = trio.current_time()
        async with worker_on(rt):
            assert await jobs.literal("late").then(Echo()).run(rt, delay=20) == "LATE"
        assert trio.current_time() - start >= 20
        with pytest.raises(ValueError, match="delay=-1"):
            await jobs.literal("x").then(Echo()).run(rt, delay=-1)
