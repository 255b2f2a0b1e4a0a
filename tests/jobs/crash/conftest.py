"""Broker URLs for the crash tests: a short lease, many deliveries allowed, isolated per test.

``crash_url`` is parametrized over ``sqlite`` (a fresh file under the test's
``tmp_path``) and ``redis`` (the server of ``WIREFRAME_TEST_REDIS_URL``, default
``redis://127.0.0.1:6379/0``, under a key prefix of its own whose keys are
deleted after the test). Without a Redis server the Redis cases are skipped with
the reason, or fail when ``CI`` is set.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import coredis
import pytest
import trio
from crash_harness import redis_unavailable

from wireframe.testing import with_options

REDIS_URL = os.environ.get("WIREFRAME_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
#: Seconds a lease lasts in the crash tests: a killed worker's jobs come back this fast.
LEASE = 1.0
#: High enough that a job killed many times never dies; the tests assert none did.
MAX_DELIVERIES = 50


async def _redis_ping(url: str) -> None:
    with trio.fail_after(3):
        async with coredis.Redis.from_url(url) as client:
            await client.ping()


async def _redis_delete_prefix(url: str, prefix: str) -> None:
    with trio.fail_after(10):
        async with coredis.Redis.from_url(url) as client:
            keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
            for start in range(0, len(keys), 500):
                await client.delete(keys[start : start + 500])


@pytest.fixture(scope="session")
def redis_server_url() -> str:
    """The test Redis server's URL, once it answered a PING."""
    try:
        trio.run(_redis_ping, REDIS_URL)
    except Exception as exc:
        redis_unavailable(
            f"no Redis answers at {REDIS_URL} ({exc!r}); set WIREFRAME_TEST_REDIS_URL"
        )
    return REDIS_URL


@pytest.fixture
def sqlite_crash_url(tmp_path: Path) -> str:
    """A fresh SQLite database with the crash tests' lease and delivery limit."""
    return f"sqlite:///{tmp_path}/jobs.db?lease={LEASE}&max_deliveries={MAX_DELIVERIES}"


@pytest.fixture
def redis_crash_url(redis_server_url: str) -> Iterator[str]:
    """The test Redis under a fresh key prefix (deleted afterwards), crash-test options set."""
    prefix = f"wf-crash-{uuid.uuid4().hex}:"
    yield with_options(redis_server_url, prefix=prefix, lease=LEASE, max_deliveries=MAX_DELIVERIES)
    trio.run(_redis_delete_prefix, redis_server_url, prefix)


@pytest.fixture(params=["sqlite", "redis"])
def crash_url(request: pytest.FixtureRequest) -> str:
    """The URL of each durable broker in turn."""
    url: str = request.getfixturevalue(f"{request.param}_crash_url")
    return url
