"""The dashboard's state: one open broker, its orchestration client, the rate samples.

An app opens its broker once, in its ASGI lifespan, and every request reads
through it: pages use only the broker's administration role (counts, dead
letters, job records by page), its presence (workers, schedules), its job store
(one job by id) and, for orchestrations, :class:`wireframe.durable.Client`.
The lifespan also runs the one sampler task that feeds the rate charts, so the
broker's load from the dashboard does not grow with the number of browsers.

Everything here runs on trio (the brokers are trio code): serve the app with
Hypercorn's trio worker (``wireframe dashboard`` does).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import trio

from wireframe.durable import Client
from wireframe.jobs.broker import Broker, BrokerError, open_broker
from wireframe.service.status import ServiceStatus
from wireframe.web.rates import Rates

__all__ = ["SAMPLE_EVERY", "Dashboard", "Settings", "open_dashboard"]

#: Seconds between two samples of the queues' counts (one ``stats`` call each).
SAMPLE_EVERY = 5.0


@attrs.frozen
class Settings:
    """How an app was made: its broker, whether actions are allowed, what it shows."""

    url: str
    allow_actions: bool = False
    status: ServiceStatus | None = None  # the running service's, when mounted inside one
    sample_every: float = SAMPLE_EVERY
    page_size: int = 50
    poll_ms: int = 2000  # how often a page asks for fresh content


@attrs.define
class Dashboard:
    """What every page reads (see the module doc)."""

    settings: Settings
    broker: Broker
    client: Client | None
    rates: Rates = attrs.field(factory=Rates)
    #: Names this app's CSRF cookie, so two dashboards on one host do not share it.
    cookie: str = attrs.field(factory=lambda: "wireframe_csrf_" + secrets.token_hex(4))

    def wall(self, broker_time: float) -> float:
        """A reading of the broker's clock as epoch seconds (memory runs on trio's clock)."""
        return time.time() - (self.broker.clock() - broker_time)

    async def sample(self) -> None:
        """Take one sample of the queues' counts for the rate charts."""
        self.rates.add(trio.current_time(), await self.broker.stats())

    async def sample_forever(self) -> None:
        """Sample every ``sample_every`` seconds; a broker error skips a sample, no more."""
        while True:
            try:
                await self.sample()
            except BrokerError:
                pass  # the broker is away: the next sample tries again, the pages say why
            await trio.sleep(self.settings.sample_every)


@asynccontextmanager
async def open_dashboard(settings: Settings) -> AsyncIterator[Dashboard]:
    """Open the broker ``settings.url`` names and run the sampler while the block runs."""
    async with open_broker(settings.url, create=False) as broker:
        try:
            client: Client | None = Client(broker)
        except TypeError:  # a broker that keeps no orchestrations
            client = None
        dashboard = Dashboard(settings, broker, client)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(dashboard.sample_forever)
            yield dashboard
            nursery.cancel_scope.cancel()
