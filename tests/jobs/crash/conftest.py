"""Broker URLs for the crash tests: a short lease, many deliveries allowed, isolated per test.

``crash_url`` is parametrized over ``sqlite`` (a fresh file under the test's
``tmp_path``) and ``redis`` (the server of ``WIREFRAME_TEST_REDIS_URL``, default
``redis://127.0.0.1:6379/0``, under a key prefix of its own whose keys are
deleted after the test). Without a Redis server the Redis cases are skipped with
the reason, or fail when ``CI`` is set.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

#: Seconds a lease lasts in the crash tests: a killed worker's jobs come back this fast.
LEASE = 1.0
#: High enough that a job killed many times never dies; the tests assert none did.
MAX_DELIVERIES = 50


@pytest.fixture
def sqlite_crash_url(tmp_path: Path) -> str:
    """A fresh SQLite database with the crash tests' lease and delivery limit."""
    return f"sqlite:///{tmp_path}/jobs.db?lease={LEASE}&max_deliveries={MAX_DELIVERIES}"


@pytest.fixture
def redis_crash_url(fresh_redis_url: Callable[..., str]) -> str:
    """The test Redis under a fresh key prefix (deleted afterwards), crash-test options set."""
    return fresh_redis_url(lease=LEASE, max_deliveries=MAX_DELIVERIES)


@pytest.fixture(params=["sqlite", "redis"])
def crash_url(request: pytest.FixtureRequest) -> str:
    """The URL of each durable broker in turn."""
    url: str = request.getfixturevalue(f"{request.param}_crash_url")
    return url
