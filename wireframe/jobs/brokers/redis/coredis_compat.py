"""Every use of coredis internals by the Redis broker, and every workaround of a coredis bug.

The broker talks to Redis through coredis (``coredis>=6.9,<7`` in pyproject.toml).
Four bugs of coredis 6.9 (seen with coredis 6.9.0, anyio 4.16, trio 0.35, Redis
7.0.15, Python 3.11) make it reach past coredis' public API or avoid parts of it. The
plain functions here are the only places it does, so that a coredis upgrade is checked
in one module: ``tests/jobs/brokers/test_coredis_compat.py`` fails, naming what
changed, when an installed coredis lacks or changed what they rely on. Each bug below
is written to be filed upstream as it stands.

**1. A connection that dies while leased loses its pool slot for good.**
``ConnectionPool.release`` puts a connection back only if it is ``usable``, and the
pool's connection task gives a dead connection's slot back (``None`` into
``_available_connections``) only if the connection was idle in the pool. A connection
that dies while leased - a cancelled blocking command (coredis invalidates its
connection), Redis going away under a ``BLPOP`` - is neither, so its slot is gone;
after ``max_connections`` of those, ``get_connection`` waits forever::

    import coredis, trio

    async def main():
        async with coredis.Redis(max_connections=2) as r:
            for _ in range(2):
                with trio.move_on_after(0.1):
                    await r.blpop(["nothing"], timeout=5)  # cancelled: connection dropped
            with trio.fail_after(3):
                await r.ping()  # TooSlowError: no slot left, none comes back

    trio.run(main)

A fix: ``release`` gives the slot back (``append_nowait(None)``) when the connection
is not usable. What wireframe does: :func:`give_back` releases, then gives the slot
of a connection that is no longer usable back itself.

**2. Cancelling a blocking command fails the other commands pending on its connection.**
coredis multiplexes: an ordinary command's connection goes back to the pool as soon as
the command is written, its reply still to come. A blocking command may take that
connection next; cancelled, coredis invalidates it (``disconnect_on_cancellation``),
and every reply still pending on it fails with ``ConnectionError('Connection lost!')``
- commands that had nothing to do with the cancelled one. What the blocking command
took in that instant (a ``BLMOVE``'s element, an ``XREADGROUP``'s entries) is lost
with the connection too::

    import coredis, trio
    from coredis.retry import NoRetryPolicy

    BUSY = ("local t = redis.call('TIME') local e = t[1]*1e6+t[2]+300000 while true do "
            "local n = redis.call('TIME') if n[1]*1e6+n[2] > e then break end end return 1")

    async def main():
        async with coredis.Redis(retry_policy=NoRetryPolicy()) as r:
            async def busy():  # any command whose reply is still to come
                try:
                    print(await r.eval(BUSY, [], []))
                except Exception as exc:
                    print("failed:", repr(exc))  # failed: ConnectionError('Connection lost!')
            async with trio.open_nursery() as nursery:
                nursery.start_soon(busy)
                await trio.sleep(0.05)
                with trio.move_on_after(0.1):  # takes busy's connection, then is cancelled
                    await r.blpop(["nothing"], timeout=5)

    trio.run(main)

A fix: wake a cancelled blocking command with ``CLIENT UNBLOCK`` (sent on another
connection) and read its reply, instead of dropping the connection. What wireframe
does: blocking reads run on a client of their own (nothing else is multiplexed on
its connections), each on a connection :func:`lease`-d for it and sent with
:func:`send` (``create_request``, which does not drop the connection when its
waiter is cancelled); a cancelled one is woken by :func:`wake` (``CLIENT UNBLOCK``
with the connection's ``client_id``) and its reply handed back, so the connection
stays usable and nothing it took is lost. :func:`discard` drops a connection whose
command could not be woken.

**3. The PubSub async iterator ends after a reconnect.** ``BasePubSub.__anext__``
loops ``while self._subscribed.is_set()``; after a reconnect ``_cleanup`` replaces
``_subscribed`` with a fresh, unset Event until the resubscription is acknowledged.
If the iterator wakes in that window (the acknowledgement itself wakes it, even when
ignored), it raises ``StopAsyncIteration``: ``async for`` ends quietly while the
subscription lives on. In 6 of 10 runs of this (against a Redis of its own on port
6391: ``CLIENT KILL TYPE pubsub`` drops every subscriber)::

    import coredis, trio

    async def main():
        async with coredis.Redis(port=6391) as r, r.pubsub(
            channels=["ch"], ignore_subscribe_messages=True
        ) as ps:
            async def later():
                await r.client_kill(type_=coredis.PureToken.PUBSUB)  # it reconnects
                for i in range(50):
                    await trio.sleep(0.1)
                    await r.publish("ch", f"after {i}")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(later)
                async for message in ps:
                    print("got", message["data"])
                    break
                else:
                    print("the iteration ended, with messages still being published")
                nursery.cancel_scope.cancel()

    trio.run(main)

A fix: ``__anext__`` waits for the next message whatever ``_subscribed`` says, and ends
only when the subscription is closed. What wireframe does: :func:`next_message` reads
with ``get_message()``, which does.

**4. Leaving a PubSub block hangs while it is reconnecting.** The block ends with
``self._current_scope.cancel()``, the scope of the current connection's task group.
While ``run()`` is between connections (in its retry policy's backoff, or connecting),
that is the old, finished one: the cancel reaches nothing, and with the default policy
(``retries=None`` for ``ConnectionError``) ``async with`` never exits while Redis is
down::

    import subprocess, coredis, trio

    async def main():
        server = subprocess.Popen(["redis-server", "--port", "6392", "--save", ""])
        await trio.sleep(0.5)
        try:
            async with coredis.Redis(port=6392) as r:
                async with r.pubsub(channels=["ch"]):
                    server.kill()  # Redis goes away: the subscriber re-connects
                    await trio.sleep(0.5)
                print("left the block")  # never printed
        finally:
            server.kill()

    trio.run(main)

A fix: cancel the scope of ``run`` itself (or of the whole retry loop) on exit. What
wireframe does: :func:`subscription` wraps the block in a cancel scope of its own and
cancels it on the way out.

Two behaviours the broker works around, not bugs: entering ``pubsub(channels=...)``
with Redis unreachable never returns (the default policy retries the first connect
forever too), so the broker PINGs, with its own bounded retries, before subscribing;
and the default resubscription backoff grows to 16 s, so a subscriber may come back
up to 16 s after Redis does - :data:`RESUBSCRIBE` caps it at 1 s.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import coredis
import coredis.exceptions
import trio
from coredis.retry import CompositeRetryPolicy, ConstantRetryPolicy, ExponentialBackoffRetryPolicy

__all__ = [
    "RESUBSCRIBE",
    "discard",
    "give_back",
    "lease",
    "next_message",
    "send",
    "subscription",
    "wake",
]

#: How a subscription re-connects after Redis went away: soon after it is back.
RESUBSCRIBE = CompositeRetryPolicy(
    ExponentialBackoffRetryPolicy(
        (coredis.exceptions.ConnectionError,), retries=None, base_delay=0.05, max_delay=1.0
    ),
    ConstantRetryPolicy((TimeoutError,), retries=2, delay=0.1),
)


async def lease(client: coredis.Redis[bytes]) -> coredis.BaseConnection:
    """A connection of ``client``'s pool, leased for one blocking command (bug 2)."""
    conn: coredis.BaseConnection = await client.connection_pool.get_connection()
    return conn


def give_back(client: coredis.Redis[bytes], conn: coredis.BaseConnection) -> None:
    """Return a :func:`lease`-d connection to ``client``'s pool, and its slot if it died (bug 1)."""
    pool: Any = client.connection_pool
    pool.release(conn)
    if not conn.usable:
        # QueueFull only if coredis gave the slot back itself: then there is nothing to do
        with contextlib.suppress(Exception):
            pool._available_connections.append_nowait(None)


def send(conn: coredis.BaseConnection, command: bytes, *args: str | bytes | int) -> Any:
    """Send one blocking command on ``conn``; await what this returns for the raw reply.

    A waiter cancelled meanwhile leaves the command running and the connection intact:
    :func:`wake` ends it (bug 2).
    """
    return conn.create_request(command, *args, decode=False)


async def wake(client: coredis.Redis[bytes], conn: coredis.BaseConnection, request: Any) -> Any:
    """End ``request``, a blocking command :func:`send` on ``conn``, at once; its reply.

    ``CLIENT UNBLOCK`` (from ``client``, another pool) wakes it as if it timed out,
    or it answered already; the reply is what it took, if anything (bug 2). Unbounded:
    the caller bounds it, and :func:`discard`-s ``conn`` if it takes too long.
    """
    while not request.complete:
        if conn.client_id is not None:
            await client.client_unblock(conn.client_id)
        with trio.move_on_after(0.001):
            await request
    return await request


def discard(conn: coredis.BaseConnection, reason: str) -> None:
    """Drop ``conn``: its blocking command could not be woken (give_back frees its slot)."""
    conn.invalidate(reason)


@asynccontextmanager
async def subscription(client: coredis.Redis[bytes], channel: str) -> AsyncIterator[Any]:
    """Subscribe to ``channel``, re-subscribing after reconnects, with an exit that cannot hang.

    The pub/sub object is for :func:`next_message`. Entering waits (forever) until
    Redis answers: check that it does first. Leaving cancels coredis' own tasks,
    whatever they are doing (bug 4).
    """
    pubsub = client.pubsub(
        channels=[channel], ignore_subscribe_messages=True, retry_policy=RESUBSCRIBE
    )
    with trio.CancelScope() as scope:
        async with pubsub:
            try:
                yield pubsub
            finally:
                scope.cancel()


async def next_message(pubsub: Any) -> bytes | None:
    """The body of the next message published to a :func:`subscription`; None once it closed.

    Not the pub/sub's own iterator, which may end after a reconnect (bug 3).
    """
    while True:
        try:
            message = await pubsub.get_message()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            return None  # the subscription was closed
        if message is not None and message.get("type") == "message":
            data = message["data"]
            return data if isinstance(data, bytes) else str(data).encode()
