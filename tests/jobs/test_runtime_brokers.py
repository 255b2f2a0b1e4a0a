"""The same runtime, unchanged, on every broker: memory, SQLite and Redis (real servers).

Redis tests use ``WIREFRAME_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``)
under a key prefix of their own, deleted afterwards; without a server they are
skipped with the reason, or fail when ``CI`` is set.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
import trio

from wireframe import jobs

CALLS: Counter[str] = Counter()
CANCELLED: Counter[str] = Counter()


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def broker_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh broker URL of each kind; the options go after ``?`` / ``&``.

    Not async: the Redis fixtures it asks for run ``trio.run`` themselves (a
    PING, the cleanup), which cannot happen inside the test's own trio run.
    """
    CALLS.clear()
    CANCELLED.clear()
    kind = request.param
    if kind == "memory":
        yield f"memory://rt-{uuid.uuid4().hex[:8]}?lease=5"
    elif kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}?lease=5"
    else:
        yield request.getfixturevalue("fresh_redis_url")(lease=5)


def with_lease(url: str, lease: float) -> str:
    return url.replace("lease=5", f"lease={lease}")


@attrs.frozen
class Triple(jobs.Operation[int, int]):
    async def execute(self, x: int) -> int:
        return 3 * x


@attrs.frozen
class Letter(jobs.Operation[int, str]):
    def execute(self, x: int) -> str:  # a sync op: the thread path
        return chr(ord("a") + x % 26)


@attrs.frozen
class JoinLetters(jobs.Monoid[str]):
    def empty(self) -> str:
        return ""

    def combine(self, a: str, b: str) -> str:
        return a + b


async def test_map_collect_fold_then(broker_url: str) -> None:
    async with jobs.connect(broker_url, workers=2) as rt:
        with trio.fail_after(30):
            assert await jobs.from_iter(range(300)).map(Triple()).collect().run(rt) == [
                3 * i for i in range(300)
            ]
            word = await jobs.from_iter(range(60)).map(Letter()).fold(JoinLetters()).run(rt)
            assert word == "".join(chr(ord("a") + i % 26) for i in range(60))
            assert await jobs.literal(14).then(Triple()).run(rt) == 42


@attrs.frozen
class Hang(jobs.Operation[int, int]):
    async def execute(self, x: int) -> int:
        CALLS["hang"] += 1
        if x == 0:
            await trio.sleep(0.2)
            raise KeyError("no such key")
        try:
            await trio.sleep(60)
        except trio.Cancelled:
            CANCELLED["hang"] += 1
            raise
        return x


async def test_terminate_aborts_running_jobs(broker_url: str) -> None:
    async with jobs.connect(broker_url, workers=2, worker_concurrency=2) as rt:
        with trio.fail_after(30):
            with pytest.raises(jobs.JobFailed, match="KeyError: 'no such key'"):
                await jobs.from_iter(range(10)).map(Hang()).collect().run(rt)
            while CANCELLED["hang"] < CALLS["hang"] - 1:
                await trio.sleep(0.02)
            assert CALLS["hang"] <= 5
            assert await jobs.literal(1).then(Triple()).run(rt) == 3


@attrs.frozen
class FlakyTwice(jobs.Operation[int, int]):
    async def execute(self, x: int) -> int:
        CALLS["flaky"] += 1
        if CALLS["flaky"] < 3:
            raise jobs.Transient("later", retry=jobs.RetryPolicy.fixed(0.05, max_attempts=3))
        return x


async def test_transient_retry(broker_url: str) -> None:
    async with jobs.connect(broker_url, workers=1) as rt:
        with trio.fail_after(30):
            assert await jobs.literal(9).then(FlakyTwice()).run(rt) == 9
        assert CALLS["flaky"] == 3


@attrs.frozen
class Long(jobs.Operation[int, int]):
    async def execute(self, x: int) -> int:
        CALLS["long"] += 1
        await trio.sleep(1.2)
        return x


@pytest.mark.slow  # a job outlives its lease in real time, on every broker
async def test_leases_are_renewed_while_a_job_runs(broker_url: str) -> None:
    """lease=0.4 s, job 1.2 s: without renewal it would be delivered again."""
    async with jobs.connect(with_lease(broker_url, 0.4), workers=2) as rt:
        with trio.fail_after(30):
            assert await jobs.from_iter([1, 2]).map(Long()).collect().run(rt) == [1, 2]
        assert CALLS["long"] == 2


async def test_undecodable_message_goes_to_dead_letters(broker_url: str) -> None:
    async with jobs.connect(broker_url, workers=1) as rt:
        with trio.fail_after(30):
            await rt.broker.publish("default", [jobs.Message("junk", b"\x00junk", "junk-ch")])
            (reply,) = await rt.broker.receive_replies("junk-ch", 10)
            assert reply.is_dead and "job body" in (reply.dead_reason or "")
            (dead,) = await rt.broker.dead_letters("default")
            assert dead.message.id == "junk"
            assert await jobs.literal(2).then(Triple()).run(rt) == 6


@attrs.frozen
class Refuse(jobs.Operation[int, int]):
    async def execute(self, x: int) -> int:
        raise KeyError(f"no item {x}")


@pytest.mark.parametrize("workers", [0, 1])
async def test_the_block_s_exception_leaves_connect_as_raised(
    broker_url: str, workers: int
) -> None:
    """Not wrapped in an ExceptionGroup by the broker's or the emulated workers' nursery:
    ``except KeyError`` around ``async with jobs.connect(...)`` must catch a KeyError."""
    for raised in (KeyError("k"), trio.TooSlowError(), jobs.BrokerError("gone")):
        with pytest.raises(type(raised)) as info:
            async with jobs.connect(broker_url, workers=workers):
                raise raised
        assert info.value is raised


async def test_a_failed_job_and_a_timeout_leave_connect_bare(broker_url: str) -> None:
    with pytest.raises(jobs.JobFailed, match="no item 1"):
        async with jobs.connect(broker_url, workers=1) as rt:
            with trio.fail_after(30):
                await jobs.literal(1).then(Refuse()).run(rt)
    with pytest.raises(trio.TooSlowError):
        async with jobs.connect(broker_url) as rt:  # no worker: the run times out
            await jobs.literal(1).then(Triple()).run(rt, timeout=0.05)


async def test_every_broker_opens_with_create_false_once_it_exists(broker_url: str) -> None:
    """``open_broker(url, create=False)`` (what inspection uses) works on every broker."""
    async with jobs.open_broker(broker_url) as broker:  # (memory:// lives while one is open)
        await broker.declare_queue("q")
        async with jobs.open_broker(broker_url, create=False) as looking:
            assert [s.queue for s in await looking.stats()] == ["q"]
