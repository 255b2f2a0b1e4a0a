"""Rate and concurrency limits: declared on operation classes, kept by the broker across workers.

The keywords and their errors, the token bucket's arithmetic, and runs end to
end on a memory broker with several workers under trio's MockClock (the same
contract at the broker level on SQLite and Redis is ``LimitsConformance``).
"""

from __future__ import annotations

import uuid

import attrs
import pytest
import trio

from wireframe import jobs
from wireframe.jobs.limits import Bucket, parse_rate

RUNNING: list[int] = [0, 0]  # running now, most at once
STARTS: list[float] = []


def reset() -> None:
    RUNNING[:] = [0, 0]
    STARTS.clear()


async def run_one(seconds: float) -> None:
    STARTS.append(trio.current_time())
    RUNNING[0] += 1
    RUNNING[1] = max(RUNNING[1], RUNNING[0])
    try:
        await trio.sleep(seconds)
    finally:
        RUNNING[0] -= 1


@attrs.frozen
class TwoAtOnce(jobs.Operation[float, None], name="limits-two-at-once", concurrency_limit=2):
    async def execute(self, x: float) -> None:
        await run_one(x)


@attrs.frozen
class FivePerSecond(jobs.Operation[int, int], name="limits-five-per-second", rate_limit="5/s"):
    async def execute(self, x: int) -> int:
        await run_one(0.0)
        return x


@attrs.frozen
class Unlimited(jobs.Operation[int, int], name="limits-unlimited"):
    async def execute(self, x: int) -> int:
        return x


def url() -> str:
    return f"memory://limits-{uuid.uuid4().hex[:8]}?lease=10"


def test_the_keywords_make_a_limit_named_after_the_operation() -> None:
    assert TwoAtOnce.op_limit == jobs.Limit("limits-two-at-once", concurrency=2)
    assert FivePerSecond.op_limit == jobs.Limit("limits-five-per-second", rate=5, per=1.0)
    assert Unlimited.op_limit is None
    assert parse_rate("3/m", "here") == (3, 60.0) and parse_rate(" 7 / h ", "x") == (7, 3600.0)


@pytest.mark.parametrize(
    ("keywords", "says"),
    [
        ({"rate_limit": "10/x"}, "rate_limit='10/x' is not a rate; write N/s"),
        ({"rate_limit": "0/s"}, "rate_limit='0/s' is not a rate"),
        ({"rate_limit": 10}, "rate_limit=10 is not a rate"),
        ({"concurrency_limit": 0}, "concurrency_limit=0 must be a whole number >= 1"),
        ({"concurrency_limit": True}, "concurrency_limit=True must be"),
    ],
)
def test_a_bad_limit_names_the_operation_and_the_value(
    keywords: dict[str, object], says: str
) -> None:
    with pytest.raises(jobs.OperationError, match="Bad") as caught:

        class Bad(jobs.Operation[int, int], name=f"limits-bad-{uuid.uuid4().hex}", **keywords):  # type: ignore[call-arg]
            def execute(self, x: int) -> int:
                return x

    assert says in str(caught.value)


def test_a_token_bucket_allows_its_burst_then_refills() -> None:
    limit = jobs.Limit("b", rate=2, per=1.0)
    bucket = Bucket(2.0, 0.0)
    assert bucket.take(limit, 0.0) and bucket.take(limit, 0.0)
    assert not bucket.take(limit, 0.0)
    assert bucket.next_token(limit, 0.0) == pytest.approx(0.5)
    assert bucket.take(limit, 0.5) and not bucket.take(limit, 0.5)
    assert bucket.level(limit, 100.0) == 2.0  # never more than the burst
    with pytest.raises(jobs.LimitError, match="concurrency=0"):
        jobs.Limit("c", concurrency=0)


async def test_a_concurrency_limit_holds_across_workers(autojump_clock: trio.abc.Clock) -> None:
    reset()
    async with jobs.connect(url(), workers=3, worker_concurrency=4) as rt:
        await jobs.from_iter([1.0] * 12).map(TwoAtOnce()).collect().run(rt, timeout=60)
    assert RUNNING[1] == 2, f"{RUNNING[1]} ran at once under concurrency_limit=2"
    assert max(STARTS) - min(STARTS) >= 5.0 - 1e-6  # 12 one-second jobs two at a time


async def test_a_rate_limit_allows_a_burst_then_the_rate(autojump_clock: trio.abc.Clock) -> None:
    reset()
    async with jobs.connect(url(), workers=2, worker_concurrency=8) as rt:
        results = await jobs.from_iter(range(15)).map(FivePerSecond()).collect().run(rt)
    assert results == list(range(15))
    starts = sorted(s - STARTS[0] for s in STARTS)
    assert starts[4] < 0.1, "a full bucket lets five go at once"
    assert starts[-1] >= 2.0 - 1e-6, f"fifteen jobs at 5/s went within {starts[-1]:.2f} s"


async def test_held_jobs_do_not_hold_back_other_operations(autojump_clock: trio.abc.Clock) -> None:
    reset()
    async with (
        jobs.connect(url(), workers=1, worker_concurrency=4) as rt,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(jobs.from_iter([30.0] * 4).map(TwoAtOnce()).collect().run, rt)
        await trio.sleep(1.0)
        started = trio.current_time()
        assert await jobs.from_iter(range(2)).map(Unlimited()).collect().run(rt) == [0, 1]
        assert trio.current_time() - started < 1.0
        nursery.cancel_scope.cancel()


async def test_a_submitted_job_obeys_its_limit(autojump_clock: trio.abc.Clock) -> None:
    reset()
    async with jobs.connect(url(), workers=1, worker_concurrency=4) as rt:
        handles = [await rt.submit(TwoAtOnce(), 1.0) for _ in range(4)]
        await trio.sleep(0.5)
        statuses = [(await h.status()).value for h in handles]
        assert statuses.count("running") == 2 and statuses.count("queued") == 2, statuses
        stats = {s.queue: s for s in await rt.broker.stats()}["default"]
        assert stats.held == 2 and stats.running == 2, stats
        for h in handles:
            await h.result(timeout=10)
    assert RUNNING[1] == 2
