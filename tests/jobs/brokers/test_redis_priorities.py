"""Priorities on the Redis broker: one stream per level in use, leases still PEL entries.

The conformance suite checks the order (higher first, FIFO among equals) when a
consume finds the messages there; these tests cover what only the Redis design
has: a quiet queue's blocking read over every level's stream (and what it takes
beyond its limit, handed back with the delivery undone), a priority kept through
a retry, a delay, a dead letter and its requeue, the keys of every level counted,
handed back on close, purged once empty and deleted with the queue, and garbage
in the set of levels.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import coredis
import pytest
import trio

from wireframe.jobs.broker import Message
from wireframe.jobs.brokers import redis as redis_broker

pytestmark = pytest.mark.redis

UrlFactory = Callable[..., str]


@pytest.fixture
def redis_url(fresh_redis_url: UrlFactory) -> UrlFactory:
    """Make URLs under this test's own key prefixes (deleted afterwards)."""
    return fresh_redis_url


def msg(name: str, priority: int = 0, reply_to: str = "") -> Message:
    return Message(id=name, body=name.encode(), reply_to=reply_to, priority=priority)


@asynccontextmanager
async def raw(broker: redis_broker.RedisBroker) -> AsyncIterator[coredis.Redis[bytes]]:
    """A plain client of the broker's Redis."""
    url = broker.url
    async with coredis.Redis(host=url.host, port=url.port or 6379, db=broker.db) as client:
        yield client


async def until_blocked(broker: redis_broker.RedisBroker, queue: str) -> None:
    """Return once a consume of ``queue`` has passed its script and reads by XREADGROUP."""
    while queue not in broker._queue.quiet_until:
        await trio.sleep(0.001)


async def take(broker: redis_broker.RedisBroker, queue: str, limit: int) -> list[str]:
    """Consume once (within 5 s) and complete what came; the message ids."""
    with trio.fail_after(5):
        got = await broker.consume(queue, limit)
    for d in got:
        assert d.deliveries == 1, f"{d.message.id} counted {d.deliveries} deliveries"
        assert d.message.priority == int(d.message.id[1:]), "the delivery names its priority"
        await broker.complete(d, b"")
    return [d.message.id for d in got]


async def test_a_blocked_read_over_every_level_takes_the_highest_and_undoes_the_rest(
    redis_url: UrlFactory,
) -> None:
    async with redis_broker.open(redis_url(poll=5)) as broker:
        # the levels in use, as the consumer's passes see them: 9, 5, 0
        await broker.publish("q", [msg("x9", 9), msg("x5", 5), msg("x0", 0)])
        assert await take(broker, "q", 3) == ["x9", "x5", "x0"]
        got: list[list[str]] = []

        async def consume() -> None:
            got.append(await take(broker, "q", 2))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            await until_blocked(broker, "q")
            # one call, so arriving together while the consumer blocks
            await broker.publish(
                "q", [msg("a0"), msg("b5", 5), msg("c9", 9), msg("d9", 9), msg("e5", 5)]
            )
        got.append(await take(broker, "q", 2))  # more than asked: the lowest handed back
        got.append(await take(broker, "q", 2))  # ... and taken over first, its count undone
        assert got == [["c9", "d9"], ["b5", "e5"], ["a0"]]


async def test_the_priority_survives_retry_delay_dead_letter_and_requeue(
    redis_url: UrlFactory,
) -> None:
    async with redis_broker.open(redis_url()) as broker:
        await broker.publish("q", [msg("p7", 7)])
        [d] = await broker.consume("q", 1)
        await broker.abandon(d, body=b"again")
        [d] = await broker.consume("q", 1)
        await broker.abandon(d, delay=0.05)
        with trio.fail_after(5):
            [d] = await broker.consume("q", 1)  # once due, from the stream of its level
        assert (d.message.priority, d.deliveries) == (7, 2)  # the new body reset the count
        await broker.dead_letter(d, "cannot decode")
        [letter] = await broker.dead_letters("q")
        assert letter.message.priority == 7
        await broker.publish("q", [msg("p0")])
        assert await broker.requeue_dead("q") == 1
        assert await take(broker, "q", 1) == ["p7"]
        assert await take(broker, "q", 1) == ["p0"]


async def test_every_level_is_counted_handed_back_on_close_purged_and_deleted(
    redis_url: UrlFactory,
) -> None:
    url = redis_url()
    async with redis_broker.open(url) as broker, raw(broker) as client:
        await broker.publish("q", [msg("a0"), msg("b3", 3), msg("c-2", -2), msg("d3", 3)])
        async with redis_broker.open(url) as first:
            held = await first.consume("q", 2)
            assert [d.message.id for d in held] == ["b3", "d3"]
            [stats] = await broker.stats()
            assert (stats.queued, stats.running) == (2, 2)
        # closing handed its leases back: claimable at once, in the level's stream
        with trio.fail_after(5):
            again = await broker.consume("q", 10)
        assert [d.message.id for d in again] == ["b3", "d3", "a0", "c-2"]
        for d in again:
            await broker.complete(d, b"")
        levels = broker._keys.queue("q", "levels")
        assert {int(m) for m in await client.zrange(levels, 0, -1)} == {3, -2}
        assert await broker.purge("q") == 4
        assert await client.exists([broker._keys.ready("q", 3), levels]) == 0, (
            "purge left the streams of levels no longer in use"
        )
        await broker.publish("q", [msg("e3", 3)])  # a level comes back
        assert await take(broker, "q", 1) == ["e3"]
        await broker.delete_queue("q")
        assert [k async for k in client.scan_iter(match=f"{broker.prefix}q:*")] == []


async def test_a_priority_message_of_a_dead_run_channel_is_settled(redis_url: UrlFactory) -> None:
    async with redis_broker.open(redis_url()) as broker:
        await broker.open_channel("run", 60)
        await broker.publish("q", [msg("o4", 4, reply_to="run"), msg("k4", 4)])
        await broker.close_channel("run")
        assert await take(broker, "q", 10) == ["k4"]
        [stats] = await broker.stats()
        assert (stats.queued, stats.done) == (0, 2)


async def test_garbage_in_the_set_of_levels_wedges_nothing(redis_url: UrlFactory) -> None:
    async with redis_broker.open(redis_url()) as broker, raw(broker) as client:
        levels = broker._keys.queue("q", "levels")
        await broker.publish("q", [msg("a2", 2)])
        await client.zadd(levels, {"not a level": 5, "1.5": 1})
        assert await take(broker, "q", 10) == ["a2"]
        await client.delete([levels])
        await client.set(levels, "a string")  # not a ZSET: a publish makes it anew
        await broker.publish("q", [msg("b6", 6), msg("c0")])
        assert await take(broker, "q", 10) == ["b6", "c0"]
        [stats] = await broker.stats()
        assert stats.queued == 0


async def test_a_priority_beyond_32_bits_is_refused_before_anything_is_published(
    redis_url: UrlFactory,
) -> None:
    async with redis_broker.open(redis_url()) as broker:
        for bad in (2**31, -(2**31) - 1):
            with pytest.raises(ValueError, match=r"priority=.* must be an int from"):
                await broker.publish("q", [msg("fine"), msg("big", bad)])
            with pytest.raises(ValueError, match="priority"):
                await broker.submit("q", msg("big", bad))
        assert await broker.stats() == []


async def test_a_level_stream_key_holding_garbage_wedges_no_other_level(
    redis_url: UrlFactory,
) -> None:
    async with redis_broker.open(redis_url()) as broker, raw(broker) as client:
        await broker.publish("q", [msg("a4", 4)])
        assert await take(broker, "q", 1) == ["a4"]
        await client.delete([broker._keys.ready("q", 4)])
        await client.set(broker._keys.ready("q", 4), "not a stream")
        await broker.publish("q", [msg("b7", 7), msg("c0")])
        assert await take(broker, "q", 10) == ["b7", "c0"]
