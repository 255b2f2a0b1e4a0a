"""The broker conformance suite of ``wireframe.testing``, run against every broker."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

import pytest
import trio
from trio.testing import MockClock

from wireframe.jobs.broker import Broker
from wireframe.jobs.brokers import sqlite as sqlite_broker
from wireframe.testing import BrokerConformance, OffsetClock


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
    """``sqlite://``, on a fresh database file per test, in real time, except where only
    time has to pass: there the brokers' clock is moved instead (``pass_time``)."""

    @pytest.fixture
    def broker_url(self, sqlite_broker_url: str) -> str:
        return sqlite_broker_url

    @pytest.fixture(autouse=True)
    def offset_clock(self) -> OffsetClock:
        """The clock every broker of the test reads (they share one file, so one clock)."""
        self.clock = OffsetClock()
        return self.clock

    def open(self, url: str) -> AbstractAsyncContextManager[Broker]:
        return sqlite_broker.open(url, clock=self.clock)

    async def pass_time(self, seconds: float) -> None:
        self.clock.advance(seconds)
        await trio.lowlevel.checkpoint()


@pytest.mark.redis
@pytest.mark.slow  # in real time, as SQLite
class TestRedisConformance(BrokerConformance):
    """``redis://``, under a fresh key prefix per test, in real time."""

    @pytest.fixture
    def broker_url(self, redis_broker_url: str) -> str:
        return redis_broker_url
