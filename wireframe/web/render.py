"""Rendering a page: Jinja2 templates (escaping everything), the live part, its ETag.

Every page is a template extending ``base.html``; what changes while one
watches is a block of its own (``live``) that the page's script asks for again
every few seconds with the header ``X-Wireframe-Live`` and the ETag of what it
has: the server renders only that block and answers ``304 Not Modified`` when
nothing changed, so an idle page costs the browser nothing and the network a
few bytes. Autoescaping is on for every template: job bodies, error messages
and tracebacks are untrusted text, and a ``<script>`` in one is shown, never run.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from wireframe.jobs.broker import mask_password
from wireframe.web.dashboard import Dashboard

__all__ = ["LIVE_HEADER", "csrf_token", "environment", "page"]

#: The header a page's script sends when it asks for the live block alone.
LIVE_HEADER = "x-wireframe-live"

_HERE = Path(__file__).parent


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "—"
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if abs(value) < 1:
        return f"{value * 1000:.0f} ms"
    if abs(value) < 120:
        return f"{value:.1f} s"
    if abs(value) < 7200:
        return f"{value / 60:.0f} min"
    return f"{value / 3600:.1f} h"


def environment() -> jinja2.Environment:
    """The templates of ``wireframe/web/templates``, autoescaped, with the page filters."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["seconds"] = _seconds
    return env


def csrf_token(request: Request, dashboard: Dashboard) -> tuple[str, bool]:
    """The browser's CSRF token (from its cookie) and whether it is new (to be set)."""
    token = request.cookies.get(dashboard.cookie, "")
    if len(token) == 43:  # token_urlsafe(32)
        return token, False
    return secrets.token_urlsafe(32), True


def page(
    request: Request, template: str, title: str, context: dict[str, Any], *, status: int = 200
) -> Response:
    """Render ``template`` (or only its live block, for the page's poll) with an ETag."""
    dashboard: Dashboard = request.app.state.dashboard
    env: jinja2.Environment = request.app.state.templates
    token, new = csrf_token(request, dashboard)
    ctx = {
        "request": request,
        "title": title,
        "nav": template.removesuffix(".html"),
        "broker_url": mask_password(dashboard.settings.url),
        "settings": dashboard.settings,
        "actions": dashboard.settings.allow_actions,
        "csrf": token,
        "root": request.scope.get("root_path", ""),
        "has_flows": dashboard.client is not None,
        "has_service": dashboard.settings.status is not None,
        "flash": request.query_params.get("done", ""),
        **context,
    }
    # the macros, bound to this request's context (a block rendered alone sees no import)
    ctx["m"] = env.get_template("macros.html").make_module(ctx)
    tmpl = env.get_template(template)
    live = "".join(tmpl.blocks["live"](tmpl.new_context(ctx)))
    etag = '"' + hashlib.sha1(live.encode(), usedforsecurity=False).hexdigest()[:20] + '"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if request.headers.get(LIVE_HEADER):
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return HTMLResponse(live, status_code=status, headers=headers)
    response = HTMLResponse(tmpl.render({**ctx, "etag": etag}), status_code=status, headers=headers)
    if new:
        response.set_cookie(dashboard.cookie, token, httponly=True, samesite="strict")
    return response
