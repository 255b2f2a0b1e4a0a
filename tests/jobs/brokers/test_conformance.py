"""The broker conformance suite of ``wireframe.testing``, run against every broker."""

from __future__ import annotations

import pytest
from trio.testing import MockClock

from wireframe.testing import BrokerConformance


class TestMemoryConformance(BrokerConformance):
    """``memory://``, in virtual time: it measures leases on trio's clock."""

    @pytest.fixture
    def broker_url(self, memory_broker_url: str) -> str:
        return memory_broker_url

    @pytest.fixture
    def broker_clock(self) -> MockClock:
        return MockClock(autojump_threshold=0)


@pytest.mark.slow  # leases and waits in real time: the memory run above is the fast loop's
class TestSqliteConformance(BrokerConformance):
    """``sqlite://``, on a fresh database file per test, in real time."""

    @pytest.fixture
    def broker_url(self, sqlite_broker_url: str) -> str:
        return sqlite_broker_url


@pytest.mark.redis
@pytest.mark.slow  # in real time, as SQLite
class TestRedisConformance(BrokerConformance):
    """``redis://``, under a fresh key prefix per test, in real time."""

    @pytest.fixture
    def broker_url(self, redis_broker_url: str) -> str:
        return redis_broker_url
