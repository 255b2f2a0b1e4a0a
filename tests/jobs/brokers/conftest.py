"""Fresh, isolated broker URLs per test, for each broker the suite runs against.

``memory_broker_url`` is a unique name; ``sqlite_broker_url`` a database file
under the test's ``tmp_path``; ``redis_broker_url`` the server of
``WIREFRAME_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``) under a key
prefix of its own, whose keys are deleted after the test. Without a Redis
server the Redis tests are skipped with the reason, or fail when ``CI`` is set.
The SQLite and Redis fixtures skip only while their broker module does not
exist yet; any other import error fails the test.
"""

from __future__ import annotations

import importlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import coredis
import pytest
import trio

from wireframe.testing import with_options

REDIS_URL = os.environ.get("WIREFRAME_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def require_broker_module(name: str) -> None:
    """Skip the test when ``wireframe.jobs.brokers.<name>`` does not exist (yet).

    Only that exact missing module skips; any other error propagates.
    """
    module = f"wireframe.jobs.brokers.{name}"
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        pytest.skip(f"{module} does not exist yet")


@pytest.fixture
def memory_broker_url() -> str:
    """A ``memory://`` URL with a name no other test uses."""
    return f"memory://conformance-{uuid.uuid4().hex}"


@pytest.fixture
def sqlite_broker_url(tmp_path: Path) -> str:
    """A ``sqlite://`` URL of a fresh database file."""
    require_broker_module("sqlite")
    return f"sqlite:///{tmp_path}/jobs.db"


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
        reason = f"no Redis answers at {REDIS_URL} ({exc!r}); set WIREFRAME_TEST_REDIS_URL"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)")
        pytest.skip(reason)
    return REDIS_URL


@pytest.fixture
def redis_broker_url(redis_server_url: str) -> Iterator[str]:
    """A ``redis://`` URL under a fresh key prefix; its keys are deleted afterwards."""
    require_broker_module("redis")
    prefix = f"wf-test-{uuid.uuid4().hex}:"
    yield with_options(redis_server_url, prefix=prefix)
    trio.run(_redis_delete_prefix, redis_server_url, prefix)
