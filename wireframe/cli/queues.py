"""Per-queue job counts for the live view: find the brokers a service uses, poll their stats.

A service uses a broker when its plan holds a ``JobRuntimeLayer`` or a
``WorkerLayer``; their ``url`` names it. :class:`QueueWatch` opens its own
connection to each (a ``memory://`` broker of the same name shares the
service's state in-process) and asks ``stats()`` about once a second, turning
the growth of ``done`` into a rate. A broker that cannot be reached is shown
as such, never an error of the run.
"""

from __future__ import annotations

from typing import Any

import trio

import wireframe as wf
from wireframe.cli.live import QueueView
from wireframe.cli.render import hide_urls
from wireframe.jobs.broker import BrokerAdmin, QueueStats, open_broker

__all__ = ["QueueWatch", "broker_urls"]


def broker_urls(plan: wf.WiringPlan) -> list[str]:
    """The broker URLs of the plan's job runtime and worker layers, each once, in plan order."""
    from wireframe.jobs.layers import JobRuntimeLayer, WorkerLayer
    from wireframe.jobs.runtime import DEFAULT_URL

    urls: list[str] = []
    for node in plan.layers:
        layer: Any = node.layer
        if isinstance(layer, JobRuntimeLayer | WorkerLayer):
            url = layer.url or DEFAULT_URL
            if url not in urls:
                urls.append(url)
    return urls


class QueueWatch:
    """Polls one broker's ``stats()`` every ``interval`` seconds; :attr:`view` is the latest."""

    def __init__(self, url: str, *, interval: float = 1.0) -> None:
        self.url = url
        self.interval = interval
        self.view = QueueView(url)
        self._last: tuple[float, dict[str, int]] | None = None

    async def run(self) -> None:
        """Poll until cancelled; reconnect after a failure."""
        while True:
            try:
                async with open_broker(self.url) as broker:
                    await self._poll(broker)
            except Exception as exc:
                detail = hide_urls(str(exc), [self.url]) or type(exc).__name__
                self.view = QueueView(
                    self.url,
                    self.view.stats,
                    self.view.rates,
                    error=f"unavailable ({type(exc).__name__}: {detail})",
                    polled=self.view.polled,
                )
            await trio.sleep(self.interval)

    async def _poll(self, admin: BrokerAdmin) -> None:
        """Record ``stats()`` every ``interval`` seconds: the admin role is all it needs."""
        while True:
            self._record(await admin.stats())
            await trio.sleep(self.interval)

    def _record(self, stats: list[QueueStats]) -> None:
        now = trio.current_time()
        done = {q.queue: q.done for q in stats}
        rates: dict[str, float] = {}
        if self._last is not None:
            then, before = self._last
            elapsed = max(now - then, 1e-9)
            for queue, count in done.items():
                rates[queue] = max(count - before.get(queue, count), 0) / elapsed
        self._last = (now, done)
        self.view = QueueView(self.url, tuple(stats), rates, error=None, polled=True)
