"""Orchestrations on the Redis broker: a job worker and an orchestration worker on one Redis.

What only the Redis design has (the scenarios every wall-clock broker shares are
in ``test_wall_clock_orchestrations.py``): a take that blocks in
Redis and is woken by a send, an activity's reply that makes its instance
ready in the completing script, commits that cannot land twice, and the
number of Redis commands a turn costs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import coredis
import pytest
import trio
from durable_scenarios import looping, waits, workers

from wireframe import durable, jobs
from wireframe.durable import history as h
from wireframe.durable.registry import spec_named
from wireframe.durable.replay import run_turn
from wireframe.durable.store import Commit
from wireframe.durable.worker import commit_of
from wireframe.jobs.brokers.redis import RedisBroker

pytestmark = pytest.mark.redis


@pytest.fixture
def url(fresh_redis_url: Callable[..., str]) -> str:
    """A Redis broker URL under this test's own key prefix (deleted afterwards)."""
    return fresh_redis_url()


async def test_a_waiting_take_is_woken_by_a_send_not_by_polling(url: str) -> None:
    async with jobs.open_broker(url) as one, jobs.open_broker(url) as two:
        client = durable.Client(two)
        iid = await client.start(waits, instance_id="w")
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
        iid = await client.start(waits)
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
        await durable.Client(broker).start(waits, instance_id="t")
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
            await durable.Client(broker).start(waits, instance_id="x")
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
        iid = await client.start(looping, 1)
        assert (await client.wait_completed(iid, timeout=20)).output == 3


async def test_a_take_replaces_a_foreign_ready_set_instead_of_failing(url: str) -> None:
    """A take that finds someone else's key at the ready set's name goes on without it."""
    async with jobs.open_broker(url) as broker:
        assert isinstance(broker, RedisBroker)
        async with coredis.Redis(
            host=broker.url.host, port=broker.url.port or 6379, db=broker.db
        ) as raw:
            await raw.set(f"{broker.prefix}o:ready", "not a zset")
        with trio.move_on_after(0.3):
            await broker.take_work(1, lease=30)  # raised WRONGTYPE before
        iid = await durable.Client(broker).start(waits)
        with trio.fail_after(5):
            [item] = await broker.take_work(1, lease=30)
        assert item.instance.id == iid
