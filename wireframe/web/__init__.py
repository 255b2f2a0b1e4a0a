"""The web dashboard (the optional extra ``wireframe[web]``): queues, jobs, dead letters,
schedules, orchestrations and a running service, live, in a browser.

``wireframe dashboard --broker URL`` serves it; :func:`app` is the ASGI app to
mount in an ASGI app of one's own; :class:`DashboardLayer` serves it inside a
wireframe service (adding the service's own page); :func:`serve` runs it on Hypercorn's trio
worker. Starlette routes the requests, Jinja2 renders the pages on the server
(autoescaped), and a few lines of plain script refresh each page's live part:
no JavaScript build, nothing fetched from elsewhere. Nothing in wireframe
imports this package; it reads the brokers through their roles only.
"""

from __future__ import annotations

from wireframe.web.app import app
from wireframe.web.layer import DashboardEndpoint, DashboardLayer
from wireframe.web.serve import serve

__all__ = ["DashboardEndpoint", "DashboardLayer", "app", "serve"]
