"""Redis-specific behaviour of the Redis broker, against a real Redis server.

The shared semantics are checked by the conformance suite; these tests cover what
only Redis has: URL parsing, key-prefix isolation, leases measured by the PEL
(take-over, renewal, max_deliveries on claim), cancellation of blocking reads,
pub/sub fan-out, and surviving a Redis restart. Each test uses its own key prefix
and deletes its keys afterwards. Without a Redis server the tests are skipped (and
fail when the environment variable CI is set).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import coredis
import pytest
import trio

from wireframe.jobs.broker import (
    BrokerError,
    BrokerUnavailable,
    BrokerURLError,
    LockLost,
    Message,
    open_broker,
    parse_broker_url,
)
from wireframe.jobs.brokers import redis as redis_broker

pytestmark = pytest.mark.redis


UrlFactory = Callable[..., str]


@pytest.fixture
def redis_url(fresh_redis_url: UrlFactory) -> UrlFactory:
    """Make URLs under this test's own key prefixes (deleted afterwards)."""
    return fresh_redis_url


def msg(n: int, reply_to: str = "ch") -> Message:
    return Message(id=f"m{n}", body=f"body{n}".encode(), reply_to=reply_to)


# -- URLs ------------------------------------------------------------------------------


def test_url_password_db_and_masking() -> None:
    url = "redis://alice:s3cret@redis.example:6380/3?prefix=app:&lease=5&max_deliveries=2"
    broker = redis_broker.RedisBroker(parse_broker_url(url, redis_broker.OPTIONS))
    assert broker.db == 3
    assert broker.prefix == "app:"
    assert broker.url.username == "alice"
    assert broker.url.password == "s3cret"
    assert broker.url.port == 6380
    assert broker.lease_ms == 5000
    assert "s3cr" not in str(broker.url)
    assert "s3cr" not in repr(broker)
    assert ":***@" in str(broker.url)


def test_percent_encoded_password_is_masked() -> None:
    url = parse_broker_url("redis://:s3cr%40t@localhost/0", redis_broker.OPTIONS)
    assert url.password == "s3cr@t"
    assert "s3cr" not in str(url)


def test_url_defaults_and_errors() -> None:
    broker = redis_broker.RedisBroker(parse_broker_url("rediss://localhost", redis_broker.OPTIONS))
    assert (broker.db, broker.prefix, broker.url.lease) == (0, "wireframe:", 30.0)
    with pytest.raises(BrokerURLError, match="unknown option 'colour'"):
        redis_broker.open("redis://localhost/0?colour=red")
    with pytest.raises(BrokerURLError, match="database number"):
        redis_broker.RedisBroker(parse_broker_url("redis://localhost/zero", redis_broker.OPTIONS))
    with pytest.raises(BrokerURLError, match="poll"):
        redis_broker.open("redis://localhost/0?poll=-1")
    with pytest.raises(BrokerURLError, match="tls_verify"):
        redis_broker.open("rediss://localhost/0?tls_verify=maybe")
    with pytest.raises(BrokerURLError, match="tls_ca"):
        redis_broker.open("rediss://localhost/0?tls_ca=/nonexistent/ca.pem")
    tls = redis_broker.options.tls_context(
        parse_broker_url("rediss://localhost/0?tls_verify=false", redis_broker.OPTIONS)
    )
    assert tls is not None and not tls.check_hostname


async def test_open_broker_by_scheme(redis_url: UrlFactory) -> None:
    async with open_broker(redis_url()) as broker:
        assert isinstance(broker, redis_broker.RedisBroker)
        await broker.ping()


# -- the data path -------------------------------------------------------------------------


async def test_round_trip_and_batches(redis_url: UrlFactory) -> None:
    async with redis_broker.open(redis_url()) as broker:
        await broker.publish("q", [msg(n) for n in range(5)])
        got = await broker.consume("q", 3)
        assert [d.message.id for d in got] == ["m0", "m1", "m2"]
        got += await broker.consume("q", 10)
        assert [d.deliveries for d in got] == [1] * 5
        for d in got:
            await broker.complete(d, d.message.body + b"!")
        replies = await broker.receive_replies("ch", 100)
        assert [(r.message_id, r.body) for r in replies] == [
            (f"m{n}", f"body{n}!".encode()) for n in range(5)
        ]
        [stats] = await broker.stats()
        assert (stats.queued, stats.running, stats.done, stats.dead) == (0, 0, 5, 0)
        with pytest.raises(LockLost, match="m0"):
            await broker.complete(got[0], b"again")
        assert await broker.purge() == 5


async def test_prefixes_isolate(redis_url: UrlFactory) -> None:
    async with (
        redis_broker.open(redis_url()) as one,
        redis_broker.open(redis_url("other")) as two,
    ):
        await one.publish("q", [msg(1)])
        await two.publish("q", [msg(2)])
        [d1] = await one.consume("q", 10)
        [d2] = await two.consume("q", 10)
        assert (d1.message.id, d2.message.id) == ("m1", "m2")
        assert [s.queue for s in await one.stats()] == ["q"]
        await one.complete(d1, b"1")
        assert [r.message_id for r in await one.receive_replies("ch", 10)] == ["m1"]
        with trio.move_on_after(0.05) as scope:
            await two.receive_replies("ch", 10)
        assert scope.cancelled_caught


async def test_cancelled_blocking_reads_leave_broker_usable(
    redis_url: UrlFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Far more cancelled reads than the broker has connections for blocking reads:
    # none may cost a connection slot (coredis alone would leak one each time).
    monkeypatch.setattr(redis_broker.connection, "MAX_BLOCKING", 2)
    async with redis_broker.open(redis_url()) as broker:
        for _ in range(10):
            with trio.move_on_after(0.01) as scope:
                await broker.consume("q", 10)
            assert scope.cancelled_caught
            with trio.move_on_after(0.01) as scope:
                await broker.receive_replies("ch", 10)
            assert scope.cancelled_caught
        await broker.publish("q", [msg(1)])
        with trio.fail_after(2):
            [d] = await broker.consume("q", 10)
            await broker.complete(d, b"ok")
            [reply] = await broker.receive_replies("ch", 10)
        assert reply.body == b"ok"
        await broker.ping()


async def test_cancelled_consumes_lose_no_message(redis_url: UrlFactory) -> None:
    # With a 30 s lease, finishing in time means that what a cancelled blocking read
    # took was handed back at once, not left to wait out its lease.
    async with redis_broker.open(redis_url(lease=30)) as broker:
        await broker.declare_queue("q")
        done: set[str] = set()

        async def publish_slowly() -> None:
            for n in range(30):
                await broker.publish("q", [msg(n)])
                await trio.sleep(0.003)

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(publish_slowly)
                timeout = 0.001
                while len(done) < 30:
                    with trio.move_on_after(timeout):
                        for d in await broker.consume("q", 2):
                            await broker.complete(d, b"r")
                            done.add(d.message.id)
                    timeout = timeout * 1.7 if timeout < 0.02 else 0.001
        replies = await broker.receive_replies("ch", 100)
        assert sorted(r.message_id for r in replies) == sorted(f"m{n}" for n in range(30))


async def test_cancelling_a_blocked_read_fails_no_other_call(redis_url: UrlFactory) -> None:
    # coredis drops the connection of a cancelled blocking command; ordinary commands
    # whose replies are pending must never share it (they would fail "Connection lost").
    async with redis_broker.open(redis_url(poll=5)) as broker:
        await broker.declare_queue("idle")
        for _ in range(30):
            async with trio.open_nursery() as nursery:
                for n in range(5):
                    nursery.start_soon(broker.publish, "busy", [msg(n)])
                with trio.move_on_after(0.002):
                    await broker.consume("idle", 1)
                with trio.move_on_after(0.002):
                    await broker.receive_replies("nobody", 1)
        [stats] = [s for s in await broker.stats() if s.queue == "busy"]
        assert stats.queued == 150


async def test_blocked_consume_and_receive_wake_up(redis_url: UrlFactory) -> None:
    async with redis_broker.open(redis_url(poll=5)) as broker:
        await broker.declare_queue("q")
        results: list[str] = []

        async def worker() -> None:
            [d] = await broker.consume("q", 10)
            results.append(d.message.id)
            await broker.complete(d, b"done")

        with trio.fail_after(2):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(worker)
                await trio.sleep(0.05)  # let the worker block in XREADGROUP
                await broker.publish("q", [msg(7)])
                [reply] = await broker.receive_replies("ch", 10)
        assert results == ["m7"] and reply.body == b"done"


async def test_concurrent_completions_are_group_committed(redis_url: UrlFactory) -> None:
    async with redis_broker.open(redis_url()) as broker:
        await broker.publish("q", [msg(n) for n in range(50)])
        got = await broker.consume("q", 50)
        await broker.complete(got[0], b"first")
        outcomes: dict[str, str] = {}

        async def finish(d: object) -> None:
            assert isinstance(d, type(got[0]))
            try:
                await broker.complete(d, b"ok")
                outcomes[d.message.id] = "ok"
            except LockLost:
                outcomes[d.message.id] = "lost"

        async with trio.open_nursery() as nursery:
            for d in got:  # got[0] is stale: completed already
                nursery.start_soon(finish, d)
        assert outcomes.pop("m0") == "lost"
        assert set(outcomes.values()) == {"ok"} and len(outcomes) == 49
        replies = await broker.receive_replies("ch", 100)
        assert sorted(r.message_id for r in replies) == sorted(f"m{n}" for n in range(50))


async def test_cancelled_receives_lose_no_reply(redis_url: UrlFactory) -> None:
    async with redis_broker.open(redis_url()) as broker:
        await broker.publish("q", [msg(n) for n in range(40)])
        deliveries = await broker.consume("q", 40)
        seen: list[str] = []

        async def complete_slowly() -> None:
            for d in deliveries:
                await broker.complete(d, b"r")
                await trio.sleep(0.003)

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(complete_slowly)
                timeout = 0.001
                while len(seen) < 40:
                    with trio.move_on_after(timeout):
                        seen += [r.message_id for r in await broker.receive_replies("ch", 3)]
                    timeout = timeout * 1.7 if timeout < 0.02 else 0.001
        assert sorted(seen) == sorted(f"m{n}" for n in range(40))


# -- leases --------------------------------------------------------------------------------


async def test_expired_lease_is_taken_over_and_stale_completion_dropped(
    redis_url: UrlFactory,
) -> None:
    url = redis_url(lease=0.2)
    async with redis_broker.open(url) as first, redis_broker.open(url) as second:
        assert first.consumer != second.consumer
        await first.publish("q", [msg(1)])
        [stale] = await first.consume("q", 10)
        with trio.fail_after(3):
            [fresh] = await second.consume("q", 10)
        assert fresh.message == stale.message and fresh.deliveries == 2
        with pytest.raises(LockLost, match="another consumer"):
            await first.complete(stale, b"stale")
        with pytest.raises(LockLost):
            await first.extend(stale)
        await second.complete(fresh, b"fresh")
        assert [r.body for r in await second.receive_replies("ch", 10)] == [b"fresh"]


async def test_expired_lease_behind_many_live_ones_is_found(redis_url: UrlFactory) -> None:
    url = redis_url(lease=0.6)
    async with redis_broker.open(url) as holder, redis_broker.open(url) as other:
        await holder.publish("q", [msg(n) for n in range(31)])
        held = await holder.consume("q", 31)
        start = trio.current_time()
        await trio.sleep(0.2)
        for d in held[:30]:  # all but the newest stay alive, until about 0.8 s
            await holder.extend(d)
        await trio.sleep_until(start + 0.62)
        with trio.fail_after(0.15):
            [taken] = await other.consume("q", 1)
        assert (taken.message.id, taken.deliveries) == ("m30", 2)


async def test_extend_keeps_the_lease(redis_url: UrlFactory) -> None:
    url = redis_url(lease=0.4)
    async with redis_broker.open(url) as first, redis_broker.open(url) as second:
        await first.publish("q", [msg(1)])
        [d] = await first.consume("q", 10)
        for _ in range(3):
            await trio.sleep(0.15)
            d = await first.extend(d)
        with trio.move_on_after(0.2) as scope:
            await second.consume("q", 10)
        assert scope.cancelled_caught
        await first.complete(d, b"kept")


async def test_closing_hands_held_leases_back(redis_url: UrlFactory) -> None:
    url = redis_url(lease=30)
    async with redis_broker.open(url) as second:
        async with redis_broker.open(url) as first:
            await first.publish("q", [msg(1)])
            [held] = await first.consume("q", 10)
            [stats] = await second.stats()
            assert (stats.queued, stats.running) == (0, 1)
        [stats] = await second.stats()
        assert (stats.queued, stats.running) == (1, 0)  # handed back: claimable
        with trio.fail_after(3):  # well before the 30 s lease runs out
            [again] = await second.consume("q", 10)
        assert (again.message, again.deliveries) == (held.message, 2)
        consumers = await second._conn.client.xinfo_consumers(
            second._keys.queue("q", "ready"), "wireframe"
        )
        names = {c[b"name"] for c in consumers}
        assert second.consumer.encode() in names
        assert first.consumer.encode() not in names  # the closed broker's consumer is gone


async def test_lease_running_out_without_takeover_is_lost(redis_url: UrlFactory) -> None:
    async with redis_broker.open(redis_url(lease=0.1)) as broker:
        await broker.publish("q", [msg(1)])
        [d] = await broker.consume("q", 10)
        await trio.sleep(0.15)
        with pytest.raises(LockLost, match="ran out"):
            await broker.complete(d, b"late")


async def test_max_deliveries_enforced_on_claim(redis_url: UrlFactory) -> None:
    async with redis_broker.open(redis_url(lease=0.1, max_deliveries=2)) as broker:
        await broker.publish("q", [msg(1)])
        with trio.fail_after(3):
            [d1] = await broker.consume("q", 10)
            [d2] = await broker.consume("q", 10)  # the first lease ran out
            assert (d1.deliveries, d2.deliveries) == (1, 2)
            await trio.sleep(0.15)  # the second lease runs out too
            await broker.publish("q", [msg(2)])
            [d3] = await broker.consume("q", 10)  # m1 is buried on the way
            assert d3.message.id == "m2"
            replies = await broker.receive_replies("ch", 10)
        assert [(r.message_id, r.is_dead) for r in replies] == [("m1", True)]
        assert "max_deliveries=2" in (replies[0].dead_reason or "")
        [dead] = await broker.dead_letters("q")
        assert (dead.message.id, dead.deliveries) == ("m1", 2)


async def test_abandon_delay_and_new_body(redis_url: UrlFactory) -> None:
    async with redis_broker.open(redis_url(max_deliveries=2)) as broker:
        await broker.publish("q", [msg(1)])
        [d] = await broker.consume("q", 10)
        await broker.abandon(d)
        with pytest.raises(LockLost):
            await broker.complete(d, b"after abandon")
        [d] = await broker.consume("q", 10)
        assert d.deliveries == 2
        start = trio.current_time()
        await broker.abandon(d, delay=0.2, body=b"attempt 2")
        with trio.fail_after(3):
            [d] = await broker.consume("q", 10)
        assert trio.current_time() - start >= 0.19
        assert (d.message.body, d.deliveries) == (b"attempt 2", 1)
        await broker.abandon(d)
        [d] = await broker.consume("q", 10)
        assert d.deliveries == 2
        await broker.abandon(d)  # the next delivery would be the third: buried
        await broker.publish("q", [msg(2)])
        [d] = await broker.consume("q", 10)
        assert d.message.id == "m2"
        [dead] = await broker.dead_letters()
        assert dead.message.body == b"attempt 2"


async def test_delayed_publish(redis_url: UrlFactory) -> None:
    async with redis_broker.open(redis_url()) as broker:
        start = trio.current_time()
        await broker.publish("q", [msg(1)], delay=0.2)
        [stats] = await broker.stats()
        assert stats.queued == 1
        with trio.fail_after(3):
            [d] = await broker.consume("q", 10)
        assert trio.current_time() - start >= 0.19
        assert d.message.id == "m1"


async def test_dead_letter_requeue_purge(redis_url: UrlFactory) -> None:
    async with redis_broker.open(redis_url()) as broker:
        await broker.publish("a", [msg(1)])
        await broker.publish("b", [msg(2, reply_to="")])
        [da] = await broker.consume("a", 10)
        [db] = await broker.consume("b", 10)
        await broker.dead_letter(da, "cannot decode")
        await broker.dead_letter(db, "also bad")
        with pytest.raises(LockLost):
            await broker.dead_letter(da, "twice")
        [reply] = await broker.receive_replies("ch", 10)
        assert reply.dead_reason == "cannot decode"
        dead = await broker.dead_letters()
        assert [(d.queue, d.reason, d.deliveries) for d in dead] == [
            ("a", "cannot decode", 1),
            ("b", "also bad", 1),
        ]
        assert await broker.requeue_dead("a") == 1
        [again] = await broker.consume("a", 10)
        assert (again.message.id, again.deliveries) == ("m1", 1)
        stats = {s.queue: s for s in await broker.stats()}
        assert (stats["a"].running, stats["a"].dead, stats["b"].dead) == (1, 0, 1)
        assert await broker.purge() == 1
        assert await broker.dead_letters() == []
        await broker.delete_queue("a")
        assert [s.queue for s in await broker.stats()] == ["b"]


# -- broadcast -------------------------------------------------------------------------------


async def test_broadcast_reaches_every_subscriber(redis_url: UrlFactory) -> None:
    async with (
        redis_broker.open(redis_url()) as one,
        redis_broker.open(redis_url()) as two,
        one.subscribe("abort") as first,
        two.subscribe("abort") as second,
    ):
        await one.broadcast("abort", b"job-1")
        with trio.fail_after(2):
            assert await first.__anext__() == b"job-1"
            assert await second.__anext__() == b"job-1"


# -- Redis going away --------------------------------------------------------------------------


async def test_ping_and_calls_fail_when_nothing_answers(unused_port: int) -> None:
    url = f"redis://127.0.0.1:{unused_port}/0?reconnect=0.2"
    async with redis_broker.open(url) as broker:
        with pytest.raises(BrokerUnavailable, match="does not answer"):
            await broker.ping()
        with trio.fail_after(3), pytest.raises(BrokerUnavailable, match="publish"):
            await broker.publish("q", [msg(1)])


async def test_messages_survive_a_redis_restart(
    redis_server: Callable[..., subprocess.Popen[bytes]],
) -> None:
    port = redis_server.port  # type: ignore[attr-defined]
    server = redis_server()
    url = f"redis://127.0.0.1:{port}/0?reconnect=5&prefix=t:"
    async with redis_broker.open(url) as broker:
        await _wait_until_up(broker)
        await broker.publish("q", [msg(1), msg(2)])
        server.terminate()
        await trio.to_thread.run_sync(server.wait)
        with pytest.raises(BrokerUnavailable):
            await broker.ping()

        async def restart_later() -> None:
            await trio.sleep(0.3)
            redis_server()

        with trio.fail_after(8):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(restart_later)
                got = await broker.consume("q", 10)  # retries until Redis is back
        assert [d.message.id for d in got] == ["m1", "m2"]
        for d in got:
            await broker.complete(d, b"ok")
        assert len(await broker.receive_replies("ch", 10)) == 2


async def _wait_until_up(broker: redis_broker.RedisBroker) -> None:
    with trio.fail_after(5):
        while True:
            try:
                await broker.ping()
                return
            except BrokerUnavailable:
                await trio.sleep(0.05)


async def test_password_and_db_from_the_url(
    redis_server: Callable[..., subprocess.Popen[bytes]],
) -> None:
    port = redis_server.port  # type: ignore[attr-defined]
    redis_server("--requirepass", "hunter2")
    good = f"redis://:hunter2@127.0.0.1:{port}/2?prefix=t:"
    async with redis_broker.open(good) as broker:
        await _wait_until_up(broker)
        await broker.publish("q", [msg(1)])
        assert "hunter2" not in str(broker.url) and "hunter2" not in repr(broker)
    client = coredis.Redis(host="127.0.0.1", port=port, db=2, password="hunter2")
    async with client:
        assert await client.exists(["t:q:q:ready"]) == 1
    async with redis_broker.open(f"redis://:wrong@127.0.0.1:{port}/2") as broker:
        with pytest.raises(BrokerError, match="refused the credentials") as info:
            await broker.publish("q", [msg(1)])
        assert not isinstance(info.value, BrokerUnavailable)
        assert "wrong" not in str(info.value)


async def test_a_script_redis_lost_is_called_again_not_failed(redis_url: UrlFactory) -> None:
    """Redis restarted without its data between a script's load and its call answers
    NOSCRIPT: the script did not run, so the call is made again (which loads it)."""
    async with open_broker(redis_url()) as broker:
        conn = broker._conn  # type: ignore[attr-defined]
        calls = 0

        async def flaky() -> bytes:
            nonlocal calls
            calls += 1
            if calls == 1:  # as if the cache was flushed: a sha Redis does not know
                return await conn.client.evalsha("0" * 40, [], [])  # type: ignore[no-any-return]
            return await conn.client.eval("return 'ran'", [], [])  # type: ignore[no-any-return]

        assert await conn.call("a script", flaky, resend=False) in (b"ran", "ran")
        assert calls == 2
