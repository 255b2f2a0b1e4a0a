"""The orchestration store conformance suite of ``wireframe.testing``, run on each store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from trio.testing import MockClock

from wireframe.testing import OrchestrationStoreConformance, fresh_memory_url


class TestMemoryOrchestrationStore(OrchestrationStoreConformance):
    """``memory://``, in virtual time: its leases and inboxes follow trio's clock."""

    @pytest.fixture
    def broker_url(self) -> str:
        return fresh_memory_url()

    @pytest.fixture
    def broker_clock(self) -> MockClock:
        return MockClock(autojump_threshold=0)


class TestSqliteOrchestrationStore(OrchestrationStoreConformance):
    """SQLite, in real time: leases and visibility are wall-clock seconds."""

    @pytest.fixture
    def broker_url(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path}/jobs.db"


class TestRedisOrchestrationStore(OrchestrationStoreConformance):
    """Redis, in real time (Redis ``TIME``), each test under a key prefix of its own."""

    @pytest.fixture
    def broker_url(self, fresh_redis_url: Callable[..., str]) -> str:
        return fresh_redis_url()
