"""``DashboardLayer``: the dashboard inside a running service, with its service page.

Mounted this way the dashboard also shows the service it runs in — its tasks,
their states, restarts and last errors — read from the service's own
:class:`~wireframe.ServiceStatus` resource. Like ``HealthLayer`` it serves from
its layer's lifetime, so the pages answer while the service drains, and binds
to 127.0.0.1 unless told otherwise (the dashboard has no login of its own).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import attrs
import trio

import wireframe as wf
from wireframe.web.app import app
from wireframe.web.serve import serve

__all__ = ["DashboardEndpoint", "DashboardInput", "DashboardLayer", "DashboardOutput"]


@attrs.frozen
class DashboardEndpoint:
    """Where the dashboard listens (``port=0`` asked for a free one: this says which)."""

    url: str  # http://host:port


@attrs.frozen
class DashboardInput:
    """What :class:`DashboardLayer` takes: the service's own status."""

    status: wf.ServiceStatus


@attrs.frozen
class DashboardOutput:
    """What :class:`DashboardLayer` gives: where it listens."""

    endpoint: DashboardEndpoint


@attrs.frozen
class DashboardLayer(wf.WiringLayer[DashboardInput, DashboardOutput]):
    """Serves the dashboard of the broker ``url`` on ``host:port`` while the service runs."""

    url: str
    host: str = "127.0.0.1"
    port: int = 8080
    allow_actions: bool = False
    name: str = "dashboard"

    async def wire(self, input: DashboardInput) -> AsyncIterator[DashboardOutput]:
        """Serve from the lifetime; stop serving at shutdown."""
        application = app(self.url, allow_actions=self.allow_actions, status=input.status)
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(self._serve, application)
            try:
                yield DashboardOutput(DashboardEndpoint(bound[0]))
            finally:
                nursery.cancel_scope.cancel()

    async def _serve(
        self,
        application: object,
        task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        await serve(application, host=self.host, port=self.port, task_status=task_status)
