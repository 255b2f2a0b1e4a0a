"""Limits on the Redis broker: held messages wait outside the streams, in their place.

The conformance suite checks what every broker does with limits; these tests cover
what only the Redis design has: entries naming a limit that a quiet queue's
blocking read takes (checked by a script of their own), a slot whose lease ran out
freed without anyone taking the message over, slots given back when a broker
closes, a limit kept through a delay, a dead letter and its requeue, a tracked job
aborted while it waits, and the waiting sets deleted with their queue.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import coredis
import pytest
import trio

from wireframe.jobs.broker import Delivery, Message
from wireframe.jobs.brokers import redis as redis_broker
from wireframe.jobs.limits import Limit

pytestmark = pytest.mark.redis

UrlFactory = Callable[..., str]


@pytest.fixture
def redis_url(fresh_redis_url: UrlFactory) -> UrlFactory:
    """Make URLs under this test's own key prefixes (deleted afterwards)."""
    return fresh_redis_url


def limited(ids: str, limit: str = "L") -> list[Message]:
    """One message per character of ``ids``, each naming ``limit``."""
    return [Message(i, i.encode(), limit=limit) for i in ids]


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


async def take(broker: redis_broker.RedisBroker, queue: str, limit: int = 10) -> list[Delivery]:
    """Consume once, within 5 s."""
    with trio.fail_after(5):
        return await broker.consume(queue, limit)


async def nothing(broker: redis_broker.RedisBroker, queue: str, seconds: float = 0.3) -> None:
    """Nothing can be consumed from ``queue`` for ``seconds``."""
    with trio.move_on_after(seconds):
        got = await broker.consume(queue, 10)
        raise AssertionError(f"consumed {[d.message.id for d in got]} past a limit")


async def held(broker: redis_broker.RedisBroker, queue: str) -> int:
    """The ``held`` count of ``queue``."""
    return {s.queue: s for s in await broker.stats()}[queue].held


async def test_a_blocking_read_hands_out_what_the_limit_allows_and_holds_the_rest(
    redis_url: UrlFactory,
) -> None:
    async with redis_broker.open(redis_url(poll=5)) as broker:
        await broker.define_limit(Limit("L", concurrency=1))
        await broker.publish("q", [Message("warm", b"")])
        await broker.complete((await take(broker, "q"))[0], b"")
        got: list[Delivery] = []
        checks = []
        check = broker._limits.taken

        async def counted(queue: str, taken: list[tuple[Delivery, str]]) -> object:
            checks.append([d.message.id for d, _ in taken])
            return await check(queue, taken)

        broker._limits.taken = counted  # type: ignore[method-assign]

        async def consume() -> None:
            got.extend(await take(broker, "q"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            await until_blocked(broker, "q")
            # entries of the limit arriving together while the consumer blocks (as
            # publishes that each found room would leave them)
            both = (
                "for _, i in ipairs({'a', 'b'}) do "
                "redis.call('XADD', KEYS[1], '*', 'i', i, 'b', i, 'r', '', 'l', 'L') end"
            )
            async with raw(broker) as client:
                await client.eval(both, keys=[broker._keys.ready("q")], args=[])
        assert checks == [["a", "b"]], "the blocking read's entries are checked by LIMIT_TAKEN"
        assert [(d.message.id, d.message.limit, d.deliveries) for d in got] == [("a", "L", 1)]
        assert await held(broker, "q") == 1
        await nothing(broker, "q")
        await broker.complete(got[0], b"")
        (b,) = await take(broker, "q")
        assert (b.message, b.deliveries) == (Message("b", b"b", limit="L"), 1)


async def test_a_lease_that_runs_out_frees_its_slot_for_every_queue(
    redis_url: UrlFactory,
) -> None:
    async with redis_broker.open(redis_url(lease=0.5)) as broker:
        await broker.define_limit(Limit("L", concurrency=1))
        await broker.publish("q1", limited("a"))
        await broker.publish("q2", limited("b"))
        assert [d.message.id for d in await take(broker, "q1")] == ["a"]
        await nothing(broker, "q2", 0.2)
        # nobody consumes q1 to take a over: its slot frees when its lease runs out
        start = trio.current_time()
        (b,) = await take(broker, "q2")
        assert b.message.id == "b" and trio.current_time() - start < 1.0


async def test_closing_a_broker_gives_its_slots_back(redis_url: UrlFactory) -> None:
    url = redis_url(lease=30)
    async with redis_broker.open(url) as other:
        await other.define_limit(Limit("L", concurrency=1))
        await other.publish("q", limited("ab"))
        async with redis_broker.open(url) as broker:
            (a,) = await take(broker, "q", 1)
            assert a.message.id == "a"
            await nothing(other, "q", 0.2)
        # closed: a is handed back and its slot free; a goes again before b
        got = await take(other, "q")
        assert [d.message.id for d in got] == ["a"]


async def test_a_limit_is_kept_through_a_delay_a_dead_letter_and_a_requeue(
    redis_url: UrlFactory,
) -> None:
    async with redis_broker.open(redis_url()) as broker:
        await broker.define_limit(Limit("L", concurrency=1))
        await broker.publish("q", limited("x"))
        (x,) = await take(broker, "q")
        await broker.publish("q", limited("ab"), delay=0.05)
        await nothing(broker, "q", 0.3)
        assert await held(broker, "q") == 2
        await broker.dead_letter(x, "poison")
        (a,) = await take(broker, "q")
        assert a.message == Message("a", b"a", limit="L")
        (dead,) = await broker.dead_letters("q")
        assert dead.message == Message("x", b"x", limit="L")
        assert await broker.requeue_dead("q") == 1
        await nothing(broker, "q", 0.2)
        assert await held(broker, "q") == 2  # b, then x: at the back
        await broker.complete(a, b"")
        (b,) = await take(broker, "q")
        await broker.abandon(b)  # back, behind x
        (again,) = await take(broker, "q")
        assert (again.message.id, again.deliveries) == ("x", 1)


async def test_a_tracked_job_aborted_while_it_waits_never_runs(redis_url: UrlFactory) -> None:
    async with redis_broker.open(redis_url()) as broker:
        await broker.define_limit(Limit("L", concurrency=1))
        for m in limited("jkl"):
            await broker.submit("q", m, operation="op")
        (j,) = await take(broker, "q")
        await nothing(broker, "q", 0.2)
        record = await broker.abort_job("k")
        assert record is not None and record.status.value == "aborted"
        stats = {s.queue: s for s in await broker.stats()}["q"]
        assert (stats.queued, stats.held, stats.done) == (1, 1, 1)
        await broker.complete(j, b"")
        (last,) = await take(broker, "q")
        assert last.message.id == "l"


async def test_deleting_a_queue_deletes_what_waits_in_it(redis_url: UrlFactory) -> None:
    async with redis_broker.open(redis_url()) as broker:
        await broker.define_limit(Limit("L", concurrency=1))
        await broker.publish("q", limited("abc"))
        await take(broker, "q")
        await nothing(broker, "q", 0.2)
        await broker.delete_queue("q")
        async with raw(broker) as client:
            left = [k async for k in client.scan_iter(match=f"{broker.prefix}*")]
        # the limit stays (with its slot until the lease ends); nothing of the queue
        assert all(b":q:" not in k and not k.endswith(b":queues") for k in left), left


async def test_held_messages_go_highest_priority_first(redis_url: UrlFactory) -> None:
    async with redis_broker.open(redis_url()) as broker:
        await broker.define_limit(Limit("L", concurrency=1))
        await broker.publish("q", [Message(i, b"", limit="L") for i in ("a0", "b0")])
        (first,) = await take(broker, "q")
        await broker.publish("q", [Message("c9", b"", priority=9, limit="L")])
        order = [first.message.id]
        for _ in range(2):
            await broker.complete(first, b"")
            (first,) = await take(broker, "q")
            assert first.message.priority == int(first.message.id[1:])
            order.append(first.message.id)
        assert order == ["a0", "c9", "b0"]
