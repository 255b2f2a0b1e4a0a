"""The dashboard as an ASGI app: :func:`app` builds it, its lifespan opens the broker.

``wireframe.web.app(url)`` is a Starlette application. Served alone
(``wireframe dashboard``, or any ASGI server running trio) its lifespan opens
the broker and starts the rate sampler. Mounted inside another Starlette or
FastAPI app, a mounted app's lifespan does not run by itself: enter
``dashboard.router.lifespan_context(dashboard)`` in the outer app's lifespan
(the README shows how). Either way the server must run on trio, as the brokers do.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from wireframe.service.status import ServiceStatus
from wireframe.web import actions, pages
from wireframe.web.dashboard import SAMPLE_EVERY, Settings, open_dashboard
from wireframe.web.render import _HERE, environment

__all__ = ["app"]


def app(
    url: str,
    *,
    allow_actions: bool = False,
    status: ServiceStatus | None = None,
    sample_every: float = SAMPLE_EVERY,
    page_size: int = 50,
    poll_ms: int = 2000,
) -> Starlette:
    """The dashboard of the broker ``url`` names (read-only unless ``allow_actions``).

    ``status`` (a service's :class:`wireframe.ServiceStatus`) adds the service
    page: its tasks, their states and restarts.
    """
    settings = Settings(url, allow_actions, status, sample_every, page_size, poll_ms)

    @asynccontextmanager
    async def lifespan(application: Starlette) -> AsyncIterator[None]:
        async with open_dashboard(settings) as dashboard:
            application.state.dashboard = dashboard
            yield

    routes = [
        Route("/", pages.overview, name="overview"),
        Route("/jobs", pages.jobs, name="jobs"),
        Route("/jobs/{job_id:path}/abort", actions.job_abort, methods=["POST"]),
        Route("/jobs/{job_id:path}", pages.job, name="job"),
        Route("/dead", pages.dead_letters, name="dead"),
        Route("/dead/{action}", actions.dead_action, methods=["POST"]),
        Route("/schedules", pages.schedules, name="schedules"),
        Route("/flows", pages.flows, name="flows"),
        Route("/flows/{instance_id}/{action}", actions.flow_action, methods=["POST"]),
        Route("/flows/{instance_id}", pages.flow, name="flow"),
        Route("/service", pages.service, name="service"),
        Mount("/static", StaticFiles(directory=_HERE / "static"), name="static"),
    ]
    application = Starlette(routes=routes, lifespan=lifespan)
    application.state.templates = environment()
    application.state.settings = settings
    return application
