"""Errors, retries, aborts, timeouts, limits, resources and the cache, on real workers."""

from __future__ import annotations

import itertools
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import attrs
import msgpack
import pytest
import trio

from wireframe import jobs
from wireframe.jobs.codec import decode_result, encode_job_body

# Module-level probes the operations report to (each test resets what it reads).
CALLS: dict[str, list[float]] = defaultdict(list)
CANCELLED: dict[str, int] = defaultdict(int)
RUNNING = {"now": 0, "peak": 0}


@asynccontextmanager
async def harness(
    workers: int = 1, concurrency: int = 4, resources: Sequence[object] = ()
) -> AsyncIterator[tuple[jobs.Runtime, list[jobs.Worker]]]:
    """A runtime and explicit workers on a private memory broker."""
    CALLS.clear()
    CANCELLED.clear()
    RUNNING.update(now=0, peak=0)
    async with jobs.open_broker(f"memory://failures-{uuid.uuid4().hex[:8]}") as broker:
        rt = jobs.Runtime(broker)
        pool = [
            jobs.Worker(broker, concurrency=concurrency, resources=resources)
            for _ in range(workers)
        ]
        async with trio.open_nursery() as nursery:
            for w in pool:
                await nursery.start(w.serve)
            yield rt, pool
            nursery.cancel_scope.cancel()


@attrs.frozen
class Flaky(jobs.Operation[int, int]):
    """Fails transiently until the ``fails``-th call for an input has passed."""

    fails: int
    policy: jobs.RetryPolicy

    async def execute(self, x: int) -> int:
        CALLS[f"flaky-{x}"].append(trio.current_time())
        if len(CALLS[f"flaky-{x}"]) <= self.fails:
            raise jobs.Transient("try again", retry=self.policy)
        return x


async def test_retry_fixed_delay_by_policy(autojump_clock: trio.abc.Clock) -> None:
    async with harness() as (rt, workers):
        op = Flaky(fails=2, policy=jobs.RetryPolicy.fixed(10.0, max_attempts=3))
        assert await jobs.literal(5).then(op).run(rt) == 5
        times = CALLS["flaky-5"]
        assert len(times) == 3
        assert [round(b - a) for a, b in itertools.pairwise(times)] == [10, 10]
        assert workers[0].statistics().retried == 2


async def test_retry_exponential_with_cap(autojump_clock: trio.abc.Clock) -> None:
    async with harness() as (rt, _):
        policy = jobs.RetryPolicy.exponential(1.0, factor=2.0, max_delay=3.0, max_attempts=5)
        assert await jobs.literal(1).then(Flaky(fails=4, policy=policy)).run(rt) == 1
        times = CALLS["flaky-1"]
        assert [round(b - a) for a, b in itertools.pairwise(times)] == [1, 2, 3, 3]


async def test_retries_exhausted_fail_the_directive(autojump_clock: trio.abc.Clock) -> None:
    async with harness() as (rt, _):
        op = Flaky(fails=10, policy=jobs.RetryPolicy.immediate(max_attempts=2))
        with pytest.raises(jobs.JobFailed) as info:
            await jobs.literal(3).then(op).run(rt)
        assert info.value.error.kind is jobs.ErrorKind.RETRIES_EXHAUSTED
        assert len(CALLS["flaky-3"]) == 2


def test_retry_policy_budget() -> None:
    policy = jobs.RetryPolicy.exponential(1.0, max_attempts=10, budget=7.0)  # 1+2+4 <= 7
    assert [policy.delay_before(a) for a in range(2, 6)] == [1.0, 2.0, 4.0, None]
    assert jobs.RetryPolicy.immediate(2).delay_before(3) is None
    with pytest.raises(ValueError, match="max_attempts"):
        jobs.RetryPolicy(max_attempts=0)


class Boom(ValueError):
    """A user exception type that must cross the wire by name."""


@attrs.frozen
class Explode(jobs.Operation[int, int]):
    """Item 0 fails; every other item sleeps until cancelled."""

    strategy: str = "terminate"

    async def execute(self, x: int) -> int:
        CALLS["started"].append(x)
        if x == 0:
            await trio.sleep(1)
            if self.strategy == "plain":
                raise Boom("the disk is on fire")
            raise jobs.Fatal("bad item", strategy=jobs.Strategy(self.strategy))
        try:
            await trio.sleep(1000)
        except trio.Cancelled:
            CANCELLED["explode"] += 1
            raise
        return x


async def test_terminate_aborts_the_others_and_raises_remote_type(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with harness(workers=2, concurrency=3) as (rt, workers):
        with pytest.raises(jobs.JobFailed) as info:
            await jobs.from_iter(range(20)).map(Explode(strategy="plain")).collect().run(rt)
        assert "Boom" in str(info.value)
        assert "the disk is on fire" in str(info.value)
        assert info.value.error.type_name.endswith("test_failures.Boom")
        assert "Traceback" in info.value.remote_traceback
        await trio.sleep(5)
        # Every other job that had started (the 6 slots, plus at most one slot
        # refilled before the abort arrived) was cancelled; the queued ones were
        # never started: the broker settles the jobs of a closed run's channel.
        started = len(CALLS["started"])
        assert 6 <= started <= 7
        assert CANCELLED["explode"] == started - 1
        (stats,) = await rt.broker.stats()
        assert (stats.queued, stats.running, stats.done) == (0, 0, 20)
        assert all(w.running == 0 for w in workers)
        # ... and the worker loops go on.
        assert await jobs.literal(7).then(Flaky(0, jobs.RetryPolicy())).run(rt) == 7


async def test_fatal_terminate_message(autojump_clock: trio.abc.Clock) -> None:
    async with harness() as (rt, _):
        with pytest.raises(jobs.JobFailed, match=r"jobs\.errors\.Fatal: bad item"):
            await jobs.literal(0).then(Explode()).run(rt)


@attrs.frozen
class SkipOdd(jobs.Operation[int, int]):
    async def execute(self, x: int) -> int:
        if x % 2:
            raise jobs.Fatal("odd", strategy=jobs.Ignore)
        return x


async def test_ignore_completes(autojump_clock: trio.abc.Clock) -> None:
    async with harness() as (rt, _):
        assert await jobs.from_iter(range(10)).map(SkipOdd()).collect().run(rt) == [0, 2, 4, 6, 8]
        items = await jobs.from_iter(range(4)).map(SkipOdd()).run(rt)
        assert sorted((i.index, i.skipped) for i in items) == [
            (0, False),
            (1, True),
            (2, False),
            (3, True),
        ]
        assert await jobs.literal(1).then(SkipOdd()).run(rt) is None


async def test_unknown_operation_gets_a_typed_error() -> None:
    async with harness() as (rt, _), rt.open_run() as run:
        op = msgpack.packb(["no.such.Operation", {}], use_bin_type=True)
        run.send_body = encode_job_body(op, run.run_id, 0, 1, 1)
        await run.send([(run.job_id(), run.send_body, 0)])
        run.close()
        batch = await run.receive()
        assert batch is not None
        ((reply, _tag),) = batch
        assert reply.body is not None
        result = decode_result(reply.body)
        assert result.error is not None
        assert result.error.kind is jobs.ErrorKind.UNKNOWN_OPERATION
        assert "no.such.Operation" in result.error.message
        assert await run.receive() is None


async def test_undecodable_payload_is_dead_lettered_and_the_worker_goes_on() -> None:
    async with harness() as (rt, workers):
        await rt.broker.publish(
            "default", [jobs.Message("garbage-1", b"\xc1\xff not msgpack", "ch")]
        )
        bad_input = encode_job_body(msgpack.packb([SquareProbe.op_name, {}]), "r", 0, 1, "seven")
        await rt.broker.publish("default", [jobs.Message("garbage-2", bad_input, "ch")])
        replies = await rt.broker.receive_replies("ch", 10)
        while len(replies) < 2:
            replies += await rt.broker.receive_replies("ch", 10)
        assert all(r.is_dead for r in replies)
        dead = {d.message.id: d.reason for d in await rt.broker.dead_letters("default")}
        assert "not msgpack" in dead["garbage-1"]
        assert "$.input" in dead["garbage-2"]
        assert workers[0].statistics().dead == 2
        assert await jobs.from_iter(range(3)).map(SquareProbe()).collect().run(rt) == [0, 1, 4]


@attrs.frozen
class SquareProbe(jobs.Operation[int, int]):
    async def execute(self, x: int) -> int:
        CALLS["square"].append(x)
        return x * x


async def test_directive_timeout_cancels_remote_work(autojump_clock: trio.abc.Clock) -> None:
    async with harness(workers=1, concurrency=4) as (rt, workers):
        with pytest.raises(trio.TooSlowError):
            await jobs.from_iter(range(1, 9)).map(Explode()).collect().run(rt, timeout=5)
        await trio.sleep(1)
        assert CANCELLED["explode"] == 4
        assert workers[0].running == 0
        assert len(CALLS["started"]) == 4, "a queued job of the timed-out run started"
        (stats,) = await rt.broker.stats()
        assert (stats.queued, stats.running, stats.done) == (0, 0, 8)


async def test_cancelling_a_run_aborts_it(autojump_clock: trio.abc.Clock) -> None:
    async with harness(workers=1, concurrency=2) as (rt, workers):
        with trio.move_on_after(3):
            await jobs.from_iter(range(1, 4)).map(Explode()).collect().run(rt)
        await trio.sleep(1)
        assert CANCELLED["explode"] == 2
        assert workers[0].running == 0


@attrs.frozen
class Busy(jobs.Operation[int, int]):
    async def execute(self, x: int) -> int:
        RUNNING["now"] += 1
        RUNNING["peak"] = max(RUNNING["peak"], RUNNING["now"])
        await trio.sleep(1)
        RUNNING["now"] -= 1
        return x


async def test_worker_concurrency_limit(autojump_clock: trio.abc.Clock) -> None:
    async with harness(workers=2, concurrency=3) as (rt, workers):
        assert await jobs.from_iter(range(30)).map(Busy()).collect().run(rt) == list(range(30))
        assert RUNNING["peak"] == 6
        assert all(w.statistics().peak_running == 3 for w in workers)


async def test_run_in_flight_limit(autojump_clock: trio.abc.Clock) -> None:
    async with harness(workers=2, concurrency=10) as (rt, _):
        got = await jobs.from_iter(range(30)).map(Busy()).collect().run(rt, max_in_flight=4)
        assert got == list(range(30))
        assert RUNNING["peak"] == 4


@attrs.frozen
class Database:
    rows: dict[int, str]


@attrs.frozen
class Lookup(jobs.Operation[int, str]):
    def execute(self, key: int, *, db: Database) -> str:
        return db.rows[key]


async def test_resources_injected_by_type() -> None:
    db = Database({1: "one", 2: "two"})
    async with harness(resources=[db]) as (rt, _):
        assert await jobs.from_iter([2, 1]).map(Lookup()).collect().run(rt) == ["two", "one"]


async def test_missing_resource_is_a_typed_error() -> None:
    async with harness() as (rt, _):
        with pytest.raises(jobs.JobFailed, match="Database") as info:
            await jobs.literal(1).then(Lookup()).run(rt)
        assert info.value.error.kind is jobs.ErrorKind.MISSING_RESOURCE


@attrs.frozen
class Cached(jobs.Operation[int, int]):
    salt: int = 0

    async def execute(self, x: int) -> int:
        CALLS["cached"].append(x)
        return x * 10 + self.salt

    def cache_key(self, input: int) -> str | None:
        return str(input)


async def test_cache_hit_executes_nothing() -> None:
    async with harness() as (rt, _):
        rt.cache = jobs.ResultCache()
        assert await jobs.from_iter(range(5)).map(Cached()).collect().run(rt) == [
            0,
            10,
            20,
            30,
            40,
        ]
        assert len(CALLS["cached"]) == 5
        sent = rt.statistics().jobs_sent
        assert await jobs.from_iter(range(5)).map(Cached()).collect().run(rt) == [
            0,
            10,
            20,
            30,
            40,
        ]
        assert len(CALLS["cached"]) == 5
        assert rt.statistics().jobs_sent == sent
        assert rt.statistics().cache_hits == 5
        # Other parameters are another key.
        assert await jobs.literal(1).then(Cached(salt=1)).run(rt) == 11
        assert len(CALLS["cached"]) == 6


async def test_per_worker_abort_keeps_the_loop(autojump_clock: trio.abc.Clock) -> None:
    async with harness(workers=1, concurrency=2) as (rt, workers):
        async with trio.open_nursery() as nursery:

            async def run() -> None:
                with pytest.raises(jobs.JobFailed) as info:
                    await jobs.from_iter([1, 2]).map(Explode()).collect().run(rt)
                assert info.value.error.kind is jobs.ErrorKind.CANCELLED

            nursery.start_soon(run)
            await trio.sleep(2)
            assert workers[0].running == 2
            await rt.abort_workers()
        assert await jobs.literal(4).then(SquareProbe()).run(rt) == 16


@attrs.frozen
class Nap(jobs.Operation[int, int]):
    async def execute(self, x: int) -> int:
        CALLS["nap"].append(trio.current_time())
        try:
            await trio.sleep(10)
        except trio.Cancelled:
            CANCELLED["nap"] += 1
            raise
        return x


async def test_a_lost_lease_cancels_the_job_and_drops_its_result(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Worker A renews too late (every 5 s, lease 3 s): the job goes to B; A's
    renewal hits LockLost, A cancels its run; the directive gets one result."""
    CALLS.clear()
    CANCELLED.clear()
    async with jobs.open_broker(f"memory://lost-{uuid.uuid4().hex[:8]}?lease=3") as broker:
        rt = jobs.Runtime(broker)
        late = jobs.Worker(broker, concurrency=1, renew_every=5)
        async with trio.open_nursery() as nursery:
            await nursery.start(late.serve)
            async with trio.open_nursery() as run:
                result: list[int | None] = []

                async def directive() -> None:
                    result.append(await jobs.literal(5).then(Nap()).run(rt))

                run.start_soon(directive)
                await trio.sleep(1)
                assert late.running == 1
                on_time = jobs.Worker(broker, concurrency=1)
                await nursery.start(on_time.serve)
            assert result == [5]
            assert len(CALLS["nap"]) == 2
            await trio.sleep(30)
            late_counts = late.statistics()
            assert late_counts.lost == 1 and late_counts.cancelled == 1
            assert CANCELLED["nap"] == 1
            assert on_time.statistics().done == 1 and late.statistics().done == 0
            nursery.cancel_scope.cancel()


async def test_a_dead_message_fails_the_directive_never_hangs(
    autojump_clock: trio.abc.Clock,
) -> None:
    """max_deliveries=1: a worker takes the job and dies; the next delivery would be the
    second, so the broker dead-letters it and the directive raises JobFailed (dead)."""
    async with jobs.open_broker(
        f"memory://dead-{uuid.uuid4().hex[:8]}?lease=2&max_deliveries=1"
    ) as broker:
        rt = jobs.Runtime(broker)
        failures: list[jobs.JobFailed] = []

        async def directive() -> None:
            with pytest.raises(jobs.JobFailed) as info:
                await jobs.literal(3).then(SquareProbe()).run(rt, timeout=60)
            failures.append(info.value)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(directive)
            (taken,) = await broker.consume("default", 1)  # ... and this "worker" dies
            assert taken.deliveries == 1
            worker = jobs.Worker(broker)
            await nursery.start(worker.serve)
            with trio.fail_after(30):
                while not failures:
                    await trio.sleep(0.5)
            nursery.cancel_scope.cancel()
        (failed,) = failures
        assert failed.error.kind is jobs.ErrorKind.DEAD
        assert "dead" in str(failed)
        assert rt.statistics().dead == 1


async def test_an_unreachable_broker_at_cleanup_does_not_hide_the_runs_own_error() -> None:
    """A run that ends with an error while the broker is gone keeps its error, with a note."""
    async with jobs.connect(f"memory://cleanup-{uuid.uuid4().hex[:8]}") as rt:
        with pytest.raises(ZeroDivisionError) as info:
            async with rt.open_run() as run:
                await run.send([(run.job_id(), b"never decoded", None)])
                await rt.broker.aclose()  # the broker goes away; the abort cannot be sent
                1 / 0  # noqa: B018 - the run's own failure
    notes = getattr(info.value, "__notes__", [])
    assert any("could not reach the broker" in note for note in notes), notes
