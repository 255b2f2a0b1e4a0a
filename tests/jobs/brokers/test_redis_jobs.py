"""The job store on the Redis broker: records by id, waiting woken by the finish, abort.

The conformance suite checks the contract; these tests cover what only the Redis
design has: waiters blocked in a ``BLMOVE`` rotation (many of them, each woken
once, none polling; cancelled ones), a tracked job taken by a quiet queue's
blocking read, an abort of a job whose lease was handed back, records and wake
tokens expiring together, garbage where a record, a dedup key or a wake list
should be, and a handle end to end with a real worker.
"""

from __future__ import annotations

import math
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import attrs
import coredis
import pytest
import trio

from wireframe import jobs
from wireframe.jobs.broker import BrokerError, Message, RecordStatus
from wireframe.jobs.brokers import redis as redis_broker

pytestmark = pytest.mark.redis

UrlFactory = Callable[..., str]
Server = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def redis_url(fresh_redis_url: UrlFactory) -> UrlFactory:
    """Make URLs under this test's own key prefixes (deleted afterwards)."""
    return fresh_redis_url


def job(job_id: str, priority: int = 0) -> Message:
    return Message(job_id, f"body of {job_id}".encode(), priority=priority)


@asynccontextmanager
async def raw(broker: redis_broker.RedisBroker) -> AsyncIterator[coredis.Redis[bytes]]:
    """A plain client of the broker's Redis, to write what the broker would not."""
    url = broker.url
    async with coredis.Redis(host=url.host, port=url.port or 6379, db=broker.db) as client:
        yield client


async def private_redis(redis_server: Server) -> int:
    """Start a Redis of this test's own (its counters are the test's alone); its port."""
    redis_server("--appendonly", "no")
    port: int = redis_server.port  # type: ignore[attr-defined]
    with trio.fail_after(10):
        while True:
            try:
                async with coredis.Redis(port=port) as client:
                    await client.ping()
                return port
            except (coredis.exceptions.RedisError, OSError):
                await trio.sleep(0.02)


async def info(port: int, section: str) -> dict[str, object]:
    async with coredis.Redis(port=port, decode_responses=True) as client:
        return dict(await client.info(section))


async def test_many_waiters_each_wake_once_on_the_finish(redis_server: Server) -> None:
    port = await private_redis(redis_server)
    url = f"redis://127.0.0.1:{port}/0"
    async with redis_broker.open(url) as a, redis_broker.open(url) as b:
        await a.submit("q", job("w"))
        delivery = (await a.consume("q", 1))[0]
        seen: list[bytes | None] = []

        async def wait(broker: redis_broker.RedisBroker) -> None:
            record = await broker.wait_job("w", math.inf)
            seen.append(None if record is None else record.result)

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for k in range(60):
                    nursery.start_soon(wait, a if k % 2 else b)
                # b's waiters each block on the job's token; a submitted the job, so
                # its waiters share one read of a's inbox
                while (await info(port, "clients"))["blocked_clients"] != 31:
                    await trio.sleep(0.005)
                before = await info(port, "commandstats")
                await a.complete(delivery, b"for all")
        assert seen == [b"for all"] * 60
        after = await info(port, "commandstats")

        def calls(name: str) -> int:
            return after[f"cmdstat_{name}"]["calls"] - before[f"cmdstat_{name}"]["calls"]  # type: ignore[index,no-any-return]

        assert calls("blmove") == 0, "a waiter blocked again instead of being woken"
        assert calls("hgetall") == 30, "a's woken waiters read the record (b's read it once)"
        late = await b.wait_job("w", math.inf)  # a later waiter finds the token at once
        assert late is not None and late.result == b"for all"


async def test_cancelled_waits_lose_no_connection(redis_url: UrlFactory) -> None:
    async with redis_broker.open(redis_url()) as broker:
        await broker.submit("q", job("c"))
        for k in range(300):  # more than the blocking pool holds: none may leak
            with trio.move_on_after(0.002 * (k % 3)):
                await broker.wait_job("c", math.inf)
        await broker.complete((await broker.consume("q", 1))[0], b"done")
        with trio.fail_after(5):
            record = await broker.wait_job("c", math.inf)
        assert record is not None and record.result == b"done"


async def test_a_tracked_job_taken_by_a_blocking_read_is_running(redis_url: UrlFactory) -> None:
    async with redis_broker.open(redis_url(poll=5)) as broker:
        await broker.declare_queue("q")
        async with trio.open_nursery() as nursery:
            got = []

            async def consume() -> None:
                got.extend(await broker.consume("q", 10))

            nursery.start_soon(consume)
            while "q" not in broker._queue.quiet_until:
                await trio.sleep(0.001)
            await broker.submit("q", job("quiet"))
        record = await broker.job("quiet")
        assert record is not None and record.status is RecordStatus.RUNNING
        assert record.attempts == 1 and record.worker == broker.consumer
        await broker.complete(got[0], b"r")
        assert (await broker.job("quiet")).status is RecordStatus.DONE  # type: ignore[union-attr]


async def test_aborting_a_job_whose_lease_was_handed_back_settles_it(
    redis_url: UrlFactory,
) -> None:
    url = redis_url()
    async with redis_broker.open(url) as broker:
        await broker.submit("q", job("h"))
        async with redis_broker.open(url) as holder:
            await holder.consume("q", 1)
        # closed: the lease is handed back, claimable at once - then aborted by id
        aborted = await broker.abort_job("h")
        assert aborted is not None and aborted.status is RecordStatus.ABORTED
        await broker.submit("q", job("next"))
        with trio.fail_after(5):
            [d] = await broker.consume("q", 10)
        assert d.message.id == "next", "an aborted job was handed out"
        await broker.complete(d, b"")
        [stats] = await broker.stats()
        assert (stats.queued, stats.running, stats.done) == (0, 0, 2)


async def test_a_finished_record_and_its_wake_token_expire_together(
    redis_url: UrlFactory,
) -> None:
    url = redis_url(result_ttl=60)
    async with redis_broker.open(url) as broker, raw(broker) as client:
        await broker.submit("q", job("t"), key="k")
        assert await client.exists([broker._keys.dedup("k")]) == 1
        async with redis_broker.open(url) as other:  # a waiter elsewhere: a token for it
            await other.wait_job("t", 0.01)
        await broker.complete((await broker.consume("q", 1))[0], b"")
        ttls = [
            await client.pttl(broker._keys.job("t")),
            await client.pttl(broker._keys.job_done("t")),
        ]
        assert all(50_000 < ttl <= 60_000 for ttl in ttls), ttls
        assert await client.exists([broker._keys.dedup("k")]) == 0, "the key outlived its job"


async def test_garbage_where_records_keys_and_wake_lists_belong_wedges_nothing(
    redis_url: UrlFactory,
) -> None:
    async with redis_broker.open(redis_url()) as broker, raw(broker) as client:
        await client.set(broker._keys.job("str"), "not a record")
        for call in (
            broker.job("str"),
            broker.wait_job("str", 1),
            broker.abort_job("str"),
            broker.submit("q", job("str")),
        ):
            with pytest.raises(BrokerError, match=r"job:str\) is a Redis string, not a hash"):
                await call
        await client.hset(broker._keys.job("odd"), {"s": "banana", "q": "q"})
        with pytest.raises(BrokerError, match=r"job:odd\) is malformed: its status is b'banana'"):
            await broker.job("odd")
        # a tracked job whose record was overwritten runs untracked: the queue goes on
        await broker.submit("q", job("lost"))
        await client.delete([broker._keys.job("lost")])
        await client.set(broker._keys.job("lost"), "gone")
        await client.set(broker._keys.dedup("busy"), "x")  # a key naming no job: free
        await client.sadd(broker._keys.dedup("typed"), ["x"])  # not even a string
        await broker.submit("q", job("k1"), key="busy")
        _, new = await broker.submit("q", job("k2"), key="typed")
        assert new
        await client.sadd(broker._keys.job_done("k1"), ["not a list"])
        with trio.fail_after(5):
            got = await broker.consume("q", 10)
            assert [d.message.id for d in got] == ["lost", "k1", "k2"]
            async with trio.open_nursery() as nursery:
                waited = []

                async def wait() -> None:
                    waited.append(await broker.wait_job("k1", math.inf))

                nursery.start_soon(wait)
                for d in got:
                    await broker.complete(d, b"ok")
        assert waited[0] is not None and waited[0].result == b"ok"


async def test_a_scheduled_job_without_its_record_goes_to_the_dead_letters(
    redis_url: UrlFactory,
) -> None:
    async with redis_broker.open(redis_url()) as broker, raw(broker) as client:
        await broker.submit("q", job("gone"), delay=0.01)
        await client.delete([broker._keys.job("gone")])
        await broker.submit("q", job("fine"), delay=0.02)
        with trio.fail_after(5):
            [d] = await broker.consume("q", 10)
        assert d.message.id == "fine"
        [letter] = await broker.dead_letters("q")
        assert letter.message.id == "gone"
        assert "does not hold its scheduled message" in letter.reason


@attrs.frozen
class Nap(jobs.Operation[float, str], name="redis-jobs-nap"):
    """Sleeps ``x`` seconds, then says so."""

    async def execute(self, x: float) -> str:
        await trio.sleep(x)
        return f"slept {x}"


async def test_handles_end_to_end_with_a_worker(redis_url: UrlFactory) -> None:
    async with jobs.connect(redis_url(), workers=1, worker_concurrency=2) as rt:
        with trio.fail_after(10):
            quick = await rt.submit(Nap(), 0.0, priority=3)
            assert await quick.result(timeout=10) == "slept 0.0"
            assert await rt.handle(quick.id).status() is jobs.JobStatus.SUCCEEDED
            slow = await rt.submit(Nap(), 60.0, key="nap")
            assert (await rt.submit(Nap(), 1.0, key="nap")).id == slow.id
            while await slow.status() is not jobs.JobStatus.RUNNING:
                await trio.sleep(0.01)
            assert await slow.abort() is jobs.JobStatus.ABORTED
            with pytest.raises(jobs.JobAborted):
                await slow.result(timeout=10)
            later = await rt.submit(Nap(), 0.0, delay=0.05)
            assert await later.status() is jobs.JobStatus.SCHEDULED
            assert await later.result(timeout=10) == "slept 0.0"


async def test_a_batch_of_completions_with_a_bad_one_and_a_repeat(
    redis_url: UrlFactory,
) -> None:
    """Completions group-committed together are lease-checked each: one whose lease is
    not current (here: a delivery count that is not its own) fails alone, and the same
    delivery completed twice in one batch is completed once."""
    async with redis_broker.open(redis_url()) as broker:
        for name in ("a", "b", "c", "d"):
            await broker.submit("q", job(name))
        taken = {d.message.id: d for d in await broker.consume("q", 4)}
        assert sorted(taken) == ["a", "b", "c", "d"]
        sid, count, rest = taken["b"].lease_token.split("|", 2)
        bad = attrs.evolve(taken["b"], lease_token=f"{sid}|{int(count) + 1}|{rest}")
        outcomes: dict[str, list[str]] = {}

        async def complete(key: str, delivery: jobs.Delivery) -> None:
            try:
                await broker.complete(delivery, f"result of {key}".encode())
                outcomes.setdefault(key, []).append("ok")
            except jobs.LockLost:
                outcomes.setdefault(key, []).append("lost")

        async with trio.open_nursery() as nursery:
            for key, delivery in [
                ("a", taken["a"]), ("b", bad), ("c", taken["c"]), ("c", taken["c"]),
                ("d", taken["d"]),
            ]:  # fmt: skip
                nursery.start_soon(complete, key, delivery)
        assert outcomes["a"] == ["ok"] and outcomes["d"] == ["ok"]
        assert outcomes["b"] == ["lost"], "a stale lease completed"
        assert sorted(outcomes["c"]) == ["lost", "ok"], "one delivery completed twice"
        for name in ("a", "c", "d"):
            record = await broker.wait_job(name, 5)
            assert record is not None and record.status is RecordStatus.DONE
            assert record.result == f"result of {name}".encode() and record.attempts == 1
            assert record.worker and record.started_at is not None
        assert (await broker.job("b")).status is RecordStatus.RUNNING  # type: ignore[union-attr]
        await broker.complete(taken["b"], b"late but current")
        assert (await broker.wait_job("b", 5)).result == b"late but current"  # type: ignore[union-attr]
        [stats] = await broker.stats()
        assert (stats.queued, stats.running, stats.done) == (0, 0, 4)
