"""Orchestrations on the Redis broker: a job worker and an orchestration worker on one Redis.

The scenarios of ``test_sqlite_orchestrations.py`` on Redis (real time, so
timers are short; another broker opened on the same URL plays a second
process's client), then what only the Redis design has: a take that blocks in
Redis and is woken by a send, an activity's reply that makes its instance
ready in the completing script, commits that cannot land twice, and the
number of Redis commands a turn costs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import coredis
import pytest
import trio

from wireframe import durable, jobs
from wireframe.durable import history as h
from wireframe.durable.registry import spec_named
from wireframe.durable.replay import run_turn
from wireframe.durable.store import Commit
from wireframe.durable.worker import commit_of
from wireframe.jobs.brokers.redis import RedisBroker

pytestmark = pytest.mark.redis


@attrs.frozen
class Square(jobs.Operation[int, int], name="durable-redis-square"):
    def execute(self, x: int) -> int:
        return x * x


@attrs.frozen
class Fails(jobs.Operation[int, int], name="durable-redis-fails"):
    async def execute(self, x: int) -> int:
        raise RuntimeError(f"no {x}")


@durable.orchestrator
async def redis_squares(ctx: durable.Context, n: int) -> dict[str, Any]:
    first = await ctx.call(Square(), n)
    await ctx.sleep(0.2)
    rest = await ctx.all([ctx.call(Square(), i) for i in range(n)])
    try:
        await ctx.call(Fails(), n)
    except durable.ActivityFailed as exc:
        caught = exc.error.message
    event = await ctx.wait_for_event("go", timeout=30)
    return {"first": first, "rest": rest, "caught": caught, "event": event}


@durable.orchestrator
async def redis_kid(ctx: durable.Context, n: int) -> int:
    await ctx.sleep(0.05 * n)
    return n * 10


@durable.orchestrator
async def redis_family(ctx: durable.Context) -> list[int]:
    return await ctx.all([ctx.call_orchestrator(redis_kid, n) for n in (1, 2, 3)])


@durable.orchestrator
async def redis_looping(ctx: durable.Context, n: int) -> int:
    if n < 3:
        await ctx.call(Square(), n)
        ctx.continue_as_new(n + 1)
    return n


@durable.orchestrator
async def redis_waits(ctx: durable.Context) -> list[Any]:
    return [await ctx.wait_for_event("go"), await ctx.wait_for_event("go")]


@pytest.fixture
def url(fresh_redis_url: Callable[..., str]) -> str:
    """A Redis broker URL under this test's own key prefix (deleted afterwards)."""
    return fresh_redis_url()


@asynccontextmanager
async def workers(url: str) -> AsyncIterator[durable.Client]:
    async with jobs.open_broker(url) as broker, trio.open_nursery() as nursery:
        await nursery.start(jobs.Worker(broker, concurrency=8).serve)
        await nursery.start(durable.OrchestrationWorker(broker, concurrency=4).serve)
        async with jobs.open_broker(url) as other:
            yield durable.Client(other)
        nursery.cancel_scope.cancel()


async def test_an_orchestration_runs_to_the_end_on_redis(url: str) -> None:
    async with workers(url) as client:
        iid = await client.start(redis_squares, 4, instance_id="sq")
        await client.wait_started(iid, timeout=10)
        await client.raise_event(iid, "go", {"ok": True})
        inst = await client.wait_completed(iid, timeout=30)
        history = await client.history(iid)
    assert inst.status is durable.Status.COMPLETED, inst.error
    assert inst.output == {
        "first": 16,
        "rest": [0, 1, 4, 9],
        "caught": "no 4",
        "event": {"ok": True},
    }
    completed = [e.action for e in history if isinstance(e, h.TaskCompleted)]
    assert len(completed) == len(set(completed)) == 6, "each activity's result recorded once"


async def test_the_store_survives_a_reopen_and_an_instance_finishes_there(url: str) -> None:
    async with jobs.open_broker(url) as broker:
        iid = await durable.Client(broker).start(redis_squares, 2, instance_id="later")
    async with workers(url) as client:  # "another process", after a restart
        await client.raise_event(iid, "go", 1)
        inst = await client.wait_completed(iid, timeout=30)
        assert inst.output["rest"] == [0, 1]
        with pytest.raises(durable.InstanceExists):
            await client.start(redis_squares, 2, instance_id="later")
        await client.purge(iid)
        assert await client.get(iid) is None and await client.history(iid) == []


async def test_children_continue_as_new_suspend_and_terminate_on_redis(url: str) -> None:
    async with workers(url) as client:
        fam = await client.start(redis_family, instance_id="fam")
        loop = await client.start(redis_looping, 0, instance_id="loop")
        w = await client.start(redis_waits, instance_id="w")
        await client.wait_started(w, timeout=10)
        await client.suspend(w, "maintenance")
        await client.raise_event(w, "go", 1)
        await trio.sleep(0.3)
        assert (await client.get(w)).status is durable.Status.SUSPENDED  # type: ignore[union-attr]
        await client.resume(w)
        await client.raise_event(w, "go", 2)
        assert (await client.wait_completed(w, timeout=10)).output == [1, 2]
        assert (await client.wait_completed(fam, timeout=10)).output == [10, 20, 30]
        children = [i for i in await client.list() if i.parent_id == "fam"]
        assert sorted(c.id for c in children) == ["fam:1", "fam:2", "fam:3"]
        done = await client.wait_completed(loop, timeout=10)
        assert (done.output, done.generation) == (3, 3)
        assert sum(isinstance(e, h.ExecutionStarted) for e in await client.history(loop)) == 1
        other = await client.start(redis_waits, instance_id="w2")
        await client.terminate(other, "stopped")
        inst = await client.wait_completed(other, timeout=10)
        assert (inst.status, inst.output) == (durable.Status.TERMINATED, "stopped")
        await client.purge(fam)
        listed = [i.id for i in await client.list()]
        assert listed[0] == "w2" and sorted(listed) == ["loop", "w", "w2"]  # newest first


async def test_a_waiting_take_is_woken_by_a_send_not_by_polling(url: str) -> None:
    async with jobs.open_broker(url) as one, jobs.open_broker(url) as two:
        client = durable.Client(two)
        iid = await client.start(redis_waits, instance_id="w")
        store = durable.worker.store_of(one)
        [item] = await store.take_work(1, lease=30)
        await store.commit(item, commit_of(item, _turn(item), "default", 0.0))
        got: list[Any] = []

        async def take() -> None:
            got.extend(await store.take_work(4, lease=30))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(take)
            await trio.sleep(0.5)
            assert not got
            sent = trio.current_time()
            await client.raise_event(iid, "go", 1)
            with trio.fail_after(2):  # a take blocks up to 5 s server-side between looks
                while not got:
                    await trio.sleep(0.01)
            assert trio.current_time() - sent < 1
    assert [i.inbox for i in got] == [[h.EventRaised("go", 1)]]


def _turn(item: Any) -> Any:
    return run_turn(spec_named(item.instance.name), item.instance.id, item.history, item.inbox, 0)


async def test_a_stale_turn_cannot_commit_and_a_lost_answer_repeats_harmlessly(url: str) -> None:
    async with jobs.open_broker(url) as broker:
        assert isinstance(broker, RedisBroker)
        client = durable.Client(broker)
        iid = await client.start(redis_waits)
        [stale] = await broker.take_work(1, lease=0.05)
        await trio.sleep(0.1)  # the lease ran out
        [fresh] = await broker.take_work(1, lease=30)
        turn = _turn(stale)
        await broker.commit(fresh, commit_of(fresh, turn, "default", 0.0))
        # the same commit again (as after an answer lost on the way): it landed, ok
        await broker.commit(fresh, commit_of(fresh, turn, "default", 0.0))
        for end in (
            broker.commit(stale, commit_of(stale, turn, "default", 0.0)),
            broker.release(fresh, 0.0),
            broker.extend_work(fresh, 30),
        ):
            with pytest.raises(jobs.LockLost):
                await end
        history = await broker.history(iid)
    assert sum(isinstance(e, h.ExecutionStarted) for e in history) == 1
    assert len(history) == len(turn.events)


async def test_a_waiting_take_wakes_at_the_next_timer(url: str) -> None:
    async with jobs.open_broker(url) as broker:
        assert isinstance(broker, RedisBroker)
        await durable.Client(broker).start(redis_waits, instance_id="t")
        [item] = await broker.take_work(1, lease=30)
        at = broker.clock() + 0.4
        timer = h.TimerFired(1, at)
        await broker.commit(item, Commit([], durable.Status.RUNNING, timers=[(at, timer)]))
        with trio.fail_after(2):  # not the 5 s a take blocks at most
            [item] = await broker.take_work(1, lease=30)
        assert broker.clock() >= at - 0.01 and list(item.inbox) == [timer]


async def test_garbage_at_an_instance_key_is_a_broker_error(url: str) -> None:
    async with jobs.open_broker(url) as broker:
        assert isinstance(broker, RedisBroker)
        port = broker.url.port or 6379
        async with coredis.Redis(host=broker.url.host, port=port, db=broker.db) as raw:
            await raw.set(f"{broker.prefix}oi:x", "not a hash")
            await raw.set(f"{broker.prefix}oh:x", "not a list")
        with pytest.raises(jobs.BrokerError, match="not a hash"):
            await durable.Client(broker).start(redis_waits, instance_id="x")
        with pytest.raises(jobs.BrokerError, match="wrong kind of value"):
            await broker.instance("x")
        with pytest.raises(jobs.BrokerError, match="wrong kind of value"):
            await broker.history("x")
        with pytest.raises(durable.UnknownInstance):
            await broker.send_event("x", h.EventRaised("go"))


async def test_garbage_at_the_ready_set_or_wake_list_does_not_stop_completions(url: str) -> None:
    async with workers(url) as client:
        broker = client.broker
        assert isinstance(broker, RedisBroker)
        port = broker.url.port or 6379
        async with coredis.Redis(host=broker.url.host, port=port, db=broker.db) as raw:
            await raw.set(f"{broker.prefix}o:ready", "not a zset")
            await raw.set(f"{broker.prefix}o:wake", "not a list")
        iid = await client.start(redis_looping, 1)
        assert (await client.wait_completed(iid, timeout=20)).output == 3
