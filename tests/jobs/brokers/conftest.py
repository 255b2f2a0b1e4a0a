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
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest


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


@pytest.fixture
def redis_broker_url(fresh_redis_url: Callable[..., str]) -> str:
    """A ``redis://`` URL under a fresh key prefix; its keys are deleted afterwards."""
    require_broker_module("redis")
    return fresh_redis_url()
