"""The Redis broker when its data is not what it wrote: lost, foreign or malformed.

Each test writes straight into Redis (through a client of its own, under the
test's key prefix on the shared server) what a crash, an operator or another
program could leave there - deleted keys, a destroyed consumer group, stream
entries without their fields, garbage in the delayed set or a reply list - and
checks that the queue goes on: a lease on a lost message is a ``LockLost`` that
says Redis lost it, a malformed entry goes to the dead-letter stream with a
reason naming what was wrong, and good messages keep flowing.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import coredis
import msgpack
import pytest
import trio

from wireframe.jobs.broker import LockLost, Message, parse_broker_url
from wireframe.jobs.brokers import redis as redis_broker
from wireframe.testing import with_options

pytestmark = pytest.mark.redis

UrlFactory = Callable[..., str]


@pytest.fixture
def redis_url(fresh_redis_url: UrlFactory) -> UrlFactory:
    """Make URLs under this test's own key prefixes (deleted afterwards)."""
    return fresh_redis_url


def msg(n: int, reply_to: str = "ch") -> Message:
    return Message(id=f"m{n}", body=f"body{n}".encode(), reply_to=reply_to)


@asynccontextmanager
async def raw(broker: redis_broker.RedisBroker) -> AsyncIterator[coredis.Redis[bytes]]:
    """A plain client of the broker's Redis, to write what the broker would not."""
    url = broker.url
    async with coredis.Redis(host=url.host, port=url.port or 6379, db=broker.db) as client:
        yield client


async def delete_keys(client: coredis.Redis[bytes], prefix: str) -> None:
    """What an operator's ``DEL`` (or a Redis restarted without its data) does."""
    keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
    assert keys
    await client.delete(keys)


async def wait_until_blocked(broker: redis_broker.RedisBroker, queue: str) -> None:
    """Return once a consume of ``queue`` has passed its script and reads by XREADGROUP."""
    while queue not in broker._queue.quiet_until:
        await trio.sleep(0.001)


# -- Redis lost the data (fault 2, the broker side) ----------------------------------------


async def test_lease_checks_on_a_lost_stream_are_lock_lost(redis_url: UrlFactory) -> None:
    async with redis_broker.open(redis_url()) as broker, raw(broker) as client:
        await broker.publish("q", [msg(n) for n in range(4)])
        d = await broker.consume("q", 4)
        await delete_keys(client, broker.prefix)
        calls = [
            broker.extend(d[0]),
            broker.complete(d[1], b"result"),
            broker.abandon(d[2]),
            broker.dead_letter(d[3], "cannot decode"),
        ]
        for call in calls:
            with pytest.raises(LockLost, match="Redis no longer has this queue's stream"):
                await call
        await broker.publish("q", [msg(9)])  # the queue works again
        with trio.fail_after(5):
            [again] = await broker.consume("q", 10)
            await broker.complete(again, b"ok")
            [reply] = await broker.receive_replies("ch", 10)
        assert (reply.message_id, reply.body) == ("m9", b"ok")


async def test_a_lease_on_a_stream_created_anew_says_redis_lost_the_message(
    redis_url: UrlFactory,
) -> None:
    async with redis_broker.open(redis_url()) as broker, raw(broker) as client:
        await broker.publish("q", [msg(1)])
        [d] = await broker.consume("q", 10)
        delivered_ms = int(d.lease_token.split("-")[0])
        while (await client.time()).timestamp() * 1000 < delivered_ms + 1:
            pass  # the new stream must be born in a later millisecond than the entry
        await delete_keys(client, broker.prefix)
        await broker.publish("q", [msg(2)])  # creates the stream and group again
        with pytest.raises(LockLost, match="Redis no longer has this message") as info:
            await broker.extend(d)
        assert "restarted without its data" in str(info.value)
        with pytest.raises(LockLost, match="Redis no longer has this message"):
            await broker.complete(d, b"late")


async def test_a_destroyed_consumer_group_is_created_again(redis_url: UrlFactory) -> None:
    async with redis_broker.open(redis_url()) as broker, raw(broker) as client:
        await broker.publish("q", [msg(1), msg(2)])
        await client.xgroup_destroy(broker._keys.queue("q", "ready"), "wireframe")
        with trio.fail_after(5):
            got = await broker.consume("q", 10)
        assert [d.message.id for d in got] == ["m1", "m2"]
        for d in got:
            await broker.complete(d, b"ok")


async def test_a_consume_goes_on_when_its_stream_vanished_between_reads(
    redis_url: UrlFactory,
) -> None:
    """Within its quiet window a consume reads by XREADGROUP directly, without the
    script that would re-create the stream: a Redis restarted without its data
    meanwhile answers NOGROUP, which must not fail the consume."""
    async with redis_broker.open(redis_url(poll=5)) as broker, raw(broker) as client:
        await broker.declare_queue("q")
        with trio.move_on_after(0.05):
            await broker.consume("q", 10)  # nothing there: the quiet window opens
        assert "q" in broker._queue.quiet_until
        await delete_keys(client, broker.prefix)
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:

                async def consume() -> None:
                    got = await broker.consume("q", 10)
                    assert [d.message.id for d in got] == ["m1"]

                nursery.start_soon(consume)
                await trio.sleep(0.05)  # let it reach its direct read (either way it must pass)
                await broker.publish("q", [msg(1)])


# -- malformed entries (fault 4) -------------------------------------------------------------

#: Stream entries another program could XADD, and what the dead letter must say.
POISON: list[tuple[dict[str, str], str]] = [
    ({"b": "x", "r": "ch"}, "missing field 'i' (message id)"),
    ({"i": "p2", "r": "ch"}, "missing field 'b' (body)"),
    ({"i": "p3", "b": "x"}, "missing field 'r' (reply_to)"),
    ({"i": "p4", "b": "x", "r": "ch", "n": "abc"}, "field 'n' (delivery count) is \"abc\""),
    ({"i": "p5", "b": "x", "r": "ch", "n": "1.5"}, "not a whole number"),
    ({"junk": "1"}, "missing fields 'i' (message id), 'b' (body), 'r' (reply_to)"),
]


async def _check_buried(broker: redis_broker.RedisBroker, sids: list[str]) -> None:
    dead = await broker.dead_letters("q")
    assert len(dead) == len(POISON)
    for letter, sid, (_, why) in zip(dead, sids, POISON, strict=True):
        assert letter.reason.startswith(f"malformed stream entry {sid}: ")
        assert why in letter.reason
    # dead replies for the readable reply_to channels: nobody waits forever
    with trio.fail_after(5):
        replies = await broker.receive_replies("ch", 100)
    assert sorted((r.message_id, r.is_dead) for r in replies) == [
        ("", True),
        ("p2", True),
        ("p4", True),
        ("p5", True),
    ]


async def test_malformed_stream_entries_go_to_the_dead_letters(redis_url: UrlFactory) -> None:
    async with redis_broker.open(redis_url()) as broker, raw(broker) as client:
        await broker.publish("q", [msg(0)])
        ready = broker._keys.queue("q", "ready")
        sids = [(await client.xadd(ready, fields)).decode() for fields, _ in POISON]
        await broker.publish("q", [msg(1), msg(2)])
        with trio.fail_after(5):
            got = await broker.consume("q", 10)
        assert [d.message.id for d in got] == ["m0", "m1", "m2"]
        await _check_buried(broker, sids)
        [stats] = await broker.stats()
        assert (stats.queued, stats.running, stats.dead) == (0, 3, len(POISON))


async def test_malformed_entries_read_by_a_blocked_consume_go_to_the_dead_letters(
    redis_url: UrlFactory,
) -> None:
    async with redis_broker.open(redis_url(poll=5)) as broker, raw(broker) as client:
        await broker.declare_queue("q")
        ready = broker._keys.queue("q", "ready")
        got: list[str] = []
        sids: list[str] = []

        async def consume_all() -> None:
            while len(got) < 2:
                got.extend(d.message.id for d in await broker.consume("q", 10))

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(consume_all)
                await wait_until_blocked(broker, "q")
                await broker.publish("q", [msg(1)])
                for fields, _ in POISON:
                    sids.append((await client.xadd(ready, fields)).decode())
                await broker.publish("q", [msg(2)])
        assert got == ["m1", "m2"]
        await _check_buried(broker, sids)


async def test_malformed_delayed_members_go_to_the_dead_letters(redis_url: UrlFactory) -> None:
    garbage = [
        (b"\xc1", "it is not msgpack (Bad data format in input.)"),
        (b"\x93\x01\x02", "it is not msgpack (Missing bytes in input.)"),
        (msgpack.packb("just a string"), "it is not [message id, body, reply_to, deliveries]"),
        (msgpack.packb({"i": "p"}), "it is not [message id"),
        (msgpack.packb(["p9", "x", "ch", "two"]), "it is not [message id"),
        (msgpack.packb([1, 2, 3, 4]), "it is not [message id"),
    ]
    async with redis_broker.open(redis_url()) as broker, raw(broker) as client:
        await broker.publish("q", [msg(1)], delay=0.01)
        await client.zadd(broker._keys.queue("q", "delayed"), {member: 0 for member, _ in garbage})
        await broker.publish("q", [msg(2)])
        with trio.fail_after(5):
            got = [d.message.id for d in await broker.consume("q", 10)]
            while len(got) < 2:
                got += [d.message.id for d in await broker.consume("q", 10)]
        assert sorted(got) == ["m1", "m2"]
        dead = {d.message.body: d for d in await broker.dead_letters("q")}
        assert dead.keys() == {member for member, _ in garbage}  # kept whole: nothing lost
        for member, why in garbage:
            assert dead[member].reason.startswith(f"malformed member of the delayed set: {why}")
        assert (dead[garbage[4][0]].message.id, dead[garbage[4][0]].message.reply_to) == (
            "p9",
            "ch",
        )
        [reply] = await broker.receive_replies("ch", 10)  # p9's reply_to was readable
        assert (reply.message_id, reply.is_dead) == ("p9", True)


async def test_malformed_replies_do_not_wedge_receive(
    redis_url: UrlFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A reply with a readable message id becomes a dead reply saying it was malformed
    (its job does not wait forever); one without is logged and skipped."""
    caplog.set_level(logging.WARNING, "wireframe.jobs.brokers.redis")
    async with redis_broker.open(redis_url(poll=5)) as broker, raw(broker) as client:
        channel = broker._keys.channel("ch")
        await broker.publish("q", [msg(1), msg(2)])
        one, two = await broker.consume("q", 2)
        await client.lpush(channel, [b"\xc1\x00", msgpack.packb(["m7", 0])])
        await broker.complete(one, b"first")
        with trio.fail_after(5):
            replies = await broker.receive_replies("ch", 10)  # the script path
        assert [(r.message_id, r.body) for r in replies] == [("m7", None), ("m1", b"first")]
        assert "malformed" in (replies[0].dead_reason or "")
        got: list[str] = []

        async def receive() -> None:
            got.extend(r.message_id for r in await broker.receive_replies("ch", 10))

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(receive)
                while broker._channels.inboxes.seq < 3:  # blocked in BLMOVE (the blocking path)
                    await trio.sleep(0.001)
                await client.lpush(channel, [msgpack.packb([1, 2, 3])])
                await broker.complete(two, b"second")
        assert got == ["m2"]
    skipped = [
        r.getMessage() for r in caplog.records if "skipped a malformed reply" in r.getMessage()
    ]
    assert len(skipped) == 2


async def test_foreign_entries_in_the_dead_stream_are_read(redis_url: UrlFactory) -> None:
    async with redis_broker.open(redis_url()) as broker, raw(broker) as client:
        await client.xadd(broker._keys.queue("q", "dead"), {"x": "1"})
        await broker.declare_queue("q")
        [letter] = await broker.dead_letters()
        assert (letter.message.id, letter.reason, letter.deliveries) == (
            "",
            "(no reason recorded)",
            0,
        )
        assert letter.died_at > 1e9


# -- small things (fault 15) ---------------------------------------------------------------


async def test_a_prefix_without_a_separator_gets_one(redis_url: UrlFactory) -> None:
    parsed = parse_broker_url("redis://localhost/0?prefix=app", redis_broker.OPTIONS)
    assert redis_broker.RedisBroker(parsed).prefix == "app:"
    url = redis_url()
    bare = str(parse_broker_url(url, redis_broker.OPTIONS).options["prefix"]).rstrip(":")
    async with redis_broker.open(with_options(url, prefix=bare)) as broker, raw(broker) as client:
        await broker.publish("q", [msg(1)])
        assert await client.exists([f"{bare}:q:q:ready"]) == 1


async def test_too_many_deliveries_read_the_same_on_both_paths(redis_url: UrlFactory) -> None:
    """The reason is the one every broker gives, whether the consume script or a
    blocked read (checked in Python) finds the message over the limit."""
    async with redis_broker.open(redis_url(max_deliveries=1, poll=5)) as broker:
        await broker.publish("q", [msg(1), msg(2)])
        [first, second] = await broker.consume("q", 2)
        await broker.abandon(first)  # the script path buries it on the next consume
        await broker.publish("q", [msg(3)])
        with trio.fail_after(5):
            [third] = await broker.consume("q", 10)
            assert third.message.id == "m3"
            async with trio.open_nursery() as nursery:
                nursery.start_soon(broker.consume, "q", 10)
                await wait_until_blocked(broker, "q")
                await broker.abandon(second)  # the blocked read takes it: the Python path
                while len(await broker.dead_letters("q")) < 2:
                    await trio.sleep(0.001)
                nursery.cancel_scope.cancel()
        reasons = [d.reason for d in await broker.dead_letters("q")]
        assert reasons == ["delivered 1 times without completing (max_deliveries=1)"] * 2


async def test_purge_deletes_the_inboxes_a_dead_receiver_left(redis_url: UrlFactory) -> None:
    """A receiver killed mid-wait leaves its inbox list; once its channel is dead, purge
    deletes it (an inbox of a live or unmanaged channel stays)."""
    async with redis_broker.open(redis_url()) as broker, raw(broker) as client:
        left = {
            name: f"{broker.prefix}c:{name}:inbox:gone-host:1:abcd:7"
            for name in ("dead-run", "live-run", "mailbox")
        }
        for key in left.values():
            await client.lpush(key, [b"a reply nobody took"])
        await broker.open_channel("dead-run", 60)
        await broker.open_channel("live-run", 60)
        await broker.close_channel("dead-run")
        assert await broker.purge() == 1
        assert await client.exists([left["dead-run"]]) == 0
        assert await client.exists([left["live-run"], left["mailbox"]]) == 2
