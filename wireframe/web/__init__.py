"""The web dashboard (the optional extra ``wireframe[web]``): queues, jobs, dead letters,
schedules, orchestrations and a running service, live, in a browser.

``wireframe dashboard --broker URL`` serves it; :func:`app` is the ASGI app to
mount inside a service of one's own; :func:`serve` runs it on Hypercorn's trio
worker. Starlette routes the requests, Jinja2 renders the pages on the server
(autoescaped), and a few lines of plain script refresh each page's live part:
no JavaScript build, nothing fetched from elsewhere. Nothing in wireframe
imports this package; it reads the brokers through their roles only.
"""

from __future__ import annotations

from wireframe.web.app import app
from wireframe.web.serve import serve

__all__ = ["app", "serve"]
