"""What ``wireframe/jobs/brokers/redis/coredis_compat.py`` relies on in coredis, checked.

The Redis broker reaches past coredis' public API in that one module, to work around
four coredis bugs (its docstring tells them). A coredis release may rename what it
reaches for, or fix a bug a workaround depends on: each test here then fails with a
message naming what changed and which function relies on it, instead of the broker
failing somewhere later. The checks run against the installed coredis, and those of
behaviour against the test Redis (a redis-server of the test's own where Redis must
go away). Every coredis exception type the broker names is checked to exist too.
"""

from __future__ import annotations

import inspect
import re
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import coredis
import coredis.retry
import pytest
import trio
import trio.testing

from wireframe.jobs.broker import parse_broker_url
from wireframe.jobs.brokers.redis import coredis_compat

COMPAT = "wireframe/jobs/brokers/redis/coredis_compat.py"
PACKAGE = Path(__file__).resolve().parents[3] / "wireframe" / "jobs" / "brokers" / "redis"


def changed(what: str, user: str) -> str:
    """The failure message: what coredis changed, and which workaround relies on it."""
    return (
        f"coredis {coredis.__version__}: {what}. {COMPAT}:{user} relies on it; "
        "adapt it (and its docstring) to this coredis, or pin coredis to a version it fits"
    )


def parameters(fn: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(fn).parameters)


@asynccontextmanager
async def client_of(url: str, **kwargs: Any) -> AsyncIterator[coredis.Redis[bytes]]:
    parsed = parse_broker_url(url)
    client: coredis.Redis[bytes] = coredis.Redis(
        host=parsed.host or "127.0.0.1",
        port=parsed.port or 6379,
        db=int(parsed.path.strip("/") or 0),
        decode_responses=False,
        **kwargs,
    )
    async with client:
        yield client


# -- what exists, with which parameters ---------------------------------------------------


def test_the_pool_internals_exist() -> None:
    client: coredis.Redis[bytes] = coredis.Redis(max_connections=3)
    pool: Any = client.connection_pool
    assert callable(getattr(pool, "get_connection", None)), changed(
        "the pool has no get_connection()", "lease"
    )
    assert callable(getattr(pool, "release", None)), changed(
        "the pool has no release()", "give_back"
    )
    slots = getattr(pool, "_available_connections", None)
    assert slots is not None and callable(getattr(slots, "append_nowait", None)), changed(
        "the pool's free slots are no longer ConnectionPool._available_connections with "
        "append_nowait()",
        "give_back",
    )
    assert len(slots) == 3, changed(
        "a new pool's _available_connections no longer holds one placeholder per slot",
        "give_back",
    )


def test_the_connection_internals_exist() -> None:
    create = parameters(coredis.BaseConnection.create_request)
    assert "decode" in create, changed("create_request() takes no decode=", "send")
    flag = create.get("disconnect_on_cancellation")
    assert flag is not None and flag.default is False, changed(
        "create_request() no longer keeps the connection when its waiter is cancelled "
        "(disconnect_on_cancellation=False by default)",
        "send",
    )
    assert isinstance(inspect.getattr_static(coredis.BaseConnection, "usable"), property), changed(
        "BaseConnection.usable is no longer a property", "give_back"
    )
    assert "reason" in parameters(coredis.BaseConnection.invalidate), changed(
        "BaseConnection.invalidate() takes no reason", "discard"
    )
    assert callable(getattr(coredis.Redis, "client_unblock", None)), changed(
        "Redis.client_unblock() is gone", "wake"
    )


def test_the_pubsub_api_the_broker_uses_exists() -> None:
    pubsub = parameters(coredis.Redis.pubsub)
    for name in ("channels", "ignore_subscribe_messages", "retry_policy"):
        assert name in pubsub, changed(f"Redis.pubsub() takes no {name}=", "subscription")
    made = type(coredis.Redis().pubsub())  # made, not entered: nothing connects
    assert callable(getattr(made, "get_message", None)), changed(
        "PubSub.get_message() is gone", "next_message"
    )
    backoff = parameters(coredis.retry.ExponentialBackoffRetryPolicy)
    for name in ("retries", "base_delay", "max_delay"):
        assert name in backoff, changed(
            f"ExponentialBackoffRetryPolicy takes no {name}=", "RESUBSCRIBE"
        )
    constant = parameters(coredis.retry.ConstantRetryPolicy)
    assert {"retries", "delay"} <= constant.keys(), changed(
        "ConstantRetryPolicy takes no retries= or delay=", "RESUBSCRIBE"
    )


def test_every_coredis_exception_the_broker_names_exists() -> None:
    """The broker tells failures apart by coredis' exception types (public, but a
    rename would surface only when that failure happens)."""
    for path in sorted(PACKAGE.rglob("*.py")):
        for name in sorted(set(re.findall(r"coredis\.exceptions\.(\w+)", path.read_text()))):
            assert isinstance(getattr(coredis.exceptions, name, None), type), (
                f"coredis {coredis.__version__} has no coredis.exceptions.{name}, which "
                f"{path.relative_to(PACKAGE.parents[3])} uses to tell a failure apart"
            )


# -- behaviour, against Redis --------------------------------------------------------------


@pytest.mark.redis
async def test_a_cancelled_blocking_command_is_woken_on_an_intact_connection(
    redis_server_url: str,
) -> None:
    key = f"wf-test-{uuid.uuid4().hex}:nothing"
    async with client_of(redis_server_url) as ordinary, client_of(redis_server_url) as blocking:
        conn = await coredis_compat.lease(blocking)
        try:
            own_id = await coredis_compat.send(conn, b"CLIENT", b"ID")
            assert conn.client_id == own_id, changed(
                f"a connection's client_id ({conn.client_id!r}) is not the id Redis gives "
                f"it ({own_id!r}), so CLIENT UNBLOCK cannot wake its command",
                "wake",
            )
            request = coredis_compat.send(conn, b"BLPOP", key, 30)
            with trio.CancelScope() as scope:
                scope.cancel()
                await request  # the waiter is cancelled; the command goes on
            assert conn.usable, changed(
                "a cancelled waiter of create_request() now drops its connection", "send"
            )
            with trio.fail_after(5):
                assert await coredis_compat.wake(ordinary, conn, request) is None
            assert conn.usable, changed("CLIENT UNBLOCK left the connection unusable", "wake")
            assert await coredis_compat.send(conn, b"PING") == b"PONG"
        finally:
            coredis_compat.give_back(blocking, conn)


@pytest.mark.redis
async def test_a_dead_leased_connection_still_loses_its_slot_unless_given_back(
    redis_server_url: str,
) -> None:
    """Bug 1 is still there (else give_back would add a slot too many), and give_back mends it."""
    async with client_of(redis_server_url, max_connections=1) as client:
        pool: Any = client.connection_pool
        conn = await coredis_compat.lease(client)
        coredis_compat.discard(conn, "a test drops it")
        pool.release(conn)
        await trio.testing.wait_all_tasks_blocked()  # the connection's own task ended too
        assert len(pool._available_connections) == 0, changed(
            "the pool now gives back the slot of a connection that died while leased "
            "(bug 1 is fixed): give_back would add one slot too many - drop its workaround",
            "give_back",
        )
    async with client_of(redis_server_url, max_connections=1) as client:
        conn = await coredis_compat.lease(client)
        coredis_compat.discard(conn, "a test drops it")
        coredis_compat.give_back(client, conn)
        await trio.testing.wait_all_tasks_blocked()
        with trio.fail_after(5):
            again = await coredis_compat.lease(client)
        assert again is not conn and again.usable
        coredis_compat.give_back(client, again)


@pytest.mark.redis
async def test_a_subscription_hears_a_broadcast_and_ends_when_closed(
    redis_server_url: str,
) -> None:
    channel = f"wf-test-{uuid.uuid4().hex}:topic"
    async with client_of(redis_server_url) as client:
        async with coredis_compat.subscription(client, channel) as pubsub:
            await client.publish(channel, b"hello")
            with trio.fail_after(5):
                assert await coredis_compat.next_message(pubsub) == b"hello"
        with trio.fail_after(5):
            assert await coredis_compat.next_message(pubsub) is None, changed(
                "get_message() of a closed subscription no longer raises anyio's "
                "EndOfStream or ClosedResourceError",
                "next_message",
            )


@pytest.mark.redis
@pytest.mark.slow
async def test_leaving_a_subscription_while_it_reconnects_does_not_hang(
    redis_server: Callable[..., subprocess.Popen[bytes]],
) -> None:
    """Bug 4: coredis' own exit would wait for its retry loop while Redis is away."""
    proc = redis_server("--appendonly", "no")
    port = redis_server.port  # type: ignore[attr-defined]
    with trio.fail_after(10):
        while True:
            try:
                async with client_of(f"redis://127.0.0.1:{port}/0") as probe:
                    await probe.ping()
                break
            except (coredis.exceptions.RedisError, OSError):
                await trio.sleep(0.02)
    async with client_of(f"redis://127.0.0.1:{port}/0") as client:
        with trio.fail_after(10):
            async with coredis_compat.subscription(client, "topic") as pubsub:
                proc.kill()
                await trio.to_thread.run_sync(proc.wait)
                while pubsub.connection.usable:  # until coredis noticed: it re-connects
                    await trio.sleep(0.01)
                await trio.testing.wait_all_tasks_blocked()
