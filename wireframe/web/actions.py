"""What the dashboard may change, only when started with ``--allow-actions``.

Every action is a ``POST`` of a form carrying the CSRF token (double submit:
the token is in an ``HttpOnly``, ``SameSite=Strict`` cookie the page set and in
the form; another site can send neither), checked before anything is read from
the broker. A refused action is ``403`` and changes nothing. A done action
redirects back (``303``, so a reload does not send it again) with a line saying
what it did. Dead letters: retry one (by message id), retry all (of a queue, or
of every queue), purge (finished state: dead letters and completed records).
Jobs: abort. Orchestration instances: raise an event, suspend, resume,
terminate, purge.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from wireframe.durable import DurableError
from wireframe.jobs.broker import BrokerError
from wireframe.web.dashboard import Dashboard

__all__ = ["dead_action", "flow_action", "job_abort"]

Form = dict[str, str]

#: Largest form body accepted (the pages' forms are a few hundred bytes).
_MAX_FORM = 64 * 1024


def _back(request: Request, fallback: str, said: str) -> Response:
    """A redirect to the page the form was on (same host only) saying ``said``."""
    root = request.scope.get("root_path", "")
    target = request.headers.get("referer", "")
    parts = urlsplit(target)
    path = parts.path if parts.netloc in ("", request.headers.get("host", "")) else ""
    path = path or f"{root}{fallback}"
    return RedirectResponse(f"{path}?{urlencode({'done': said})}", status_code=303)


async def _checked(
    request: Request, act: Callable[[Dashboard, Form], Awaitable[str]], fallback: str
) -> Response:
    """Run ``act`` if actions are allowed and the CSRF token matches; redirect back."""
    dashboard: Dashboard = request.app.state.dashboard
    if not dashboard.settings.allow_actions:
        return PlainTextResponse(
            "actions are off: start the dashboard with --allow-actions", status_code=403
        )
    body = await request.body()
    if len(body) > _MAX_FORM:
        return PlainTextResponse("form too large", status_code=413)
    # urlencoded forms only (what the pages send), parsed by the stdlib: no multipart parser
    form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    cookie = request.cookies.get(dashboard.cookie, "")
    if not cookie or not hmac.compare_digest(cookie, form.get("csrf", "")):
        return PlainTextResponse("missing or wrong CSRF token: reload the page", status_code=403)
    try:
        said = await act(dashboard, form)
    except (BrokerError, DurableError, ValueError) as exc:
        said = f"failed: {exc}"
    return _back(request, fallback, said)


async def dead_action(request: Request) -> Response:
    """``/dead/retry`` (one message), ``/dead/retry-all``, ``/dead/purge``."""
    what = request.path_params["action"]

    async def act(dash: Dashboard, form: Form) -> str:
        queue = form.get("queue") or None
        if what == "retry":
            n = await dash.broker.requeue_dead(queue, message_id=form.get("message_id", ""))
            return f"requeued {n} dead letter(s) of message {form.get('message_id')}"
        if what == "retry-all":
            return f"requeued {await dash.broker.requeue_dead(queue)} dead letter(s)"
        if what == "purge":
            return f"purged {await dash.broker.purge(queue)} finished message(s)"
        raise ValueError(f"unknown action {what!r}")

    return await _checked(request, act, "/dead")


async def job_abort(request: Request) -> Response:
    """``/jobs/{id}/abort``: a queued job never runs, a running one is cancelled."""
    job_id = request.path_params["job_id"]

    async def act(dash: Dashboard, form: Form) -> str:
        record = await dash.broker.abort_job(job_id)
        return "no such job" if record is None else f"job {job_id} is {record.status.value}"

    return await _checked(request, act, f"/jobs/{job_id}")


async def flow_action(request: Request) -> Response:
    """``/flows/{id}/raise|suspend|resume|terminate|purge``."""
    iid = request.path_params["instance_id"]
    what = request.path_params["action"]

    async def act(dash: Dashboard, form: Form) -> str:
        client = dash.client
        if client is None:
            raise ValueError("this broker keeps no orchestrations")
        if what == "raise":
            name = form.get("name", "").strip()
            text = form.get("data", "").strip()
            try:
                data = json.loads(text) if text else None
            except json.JSONDecodeError as exc:
                raise ValueError(f"the event's data is not JSON: {exc}") from None
            await client.raise_event(iid, name, data)
            return f"raised event {name!r}"
        if what == "suspend":
            await client.suspend(iid, form.get("reason", ""))
        elif what == "resume":
            await client.resume(iid)
        elif what == "terminate":
            await client.terminate(iid)
        elif what == "purge":
            await client.purge(iid)
            return f"purged instance {iid}"
        else:
            raise ValueError(f"unknown action {what!r}")
        return f"{what} sent to {iid}"

    return await _checked(request, act, f"/flows/{iid}")
