"""The pages: overview, jobs, a job, dead letters, schedules, orchestrations, an instance, service.

Each handler reads what its page shows through the broker's roles (see
:mod:`wireframe.web.dashboard`) one page at a time — ``find_jobs`` and
``dead_letters`` take an offset, orchestrations come most recently updated
first — so a store of 100k jobs costs a page what 50 cost. A page asks for one
row more than it shows to know whether there is a next page.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import attrs
import trio
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from wireframe.durable import Status
from wireframe.jobs.broker import RecordStatus
from wireframe.web.dashboard import Dashboard
from wireframe.web.decode import body_view, pretty, result_view
from wireframe.web.render import page
from wireframe.web.timeline import timeline

__all__ = [
    "dead_letters",
    "flow",
    "flows",
    "job",
    "jobs",
    "overview",
    "schedules",
    "service",
]

T = TypeVar("T")

#: How many recent instances a name filter looks through (the store filters by status only).
NAME_SCAN = 2000


@attrs.frozen
class Paging:
    """Where a page is in a list: its number (from 1), whether there is a next one."""

    number: int
    size: int
    more: bool

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size


def _dash(request: Request) -> Dashboard:
    dashboard: Dashboard = request.app.state.dashboard
    return dashboard


def _paging(request: Request) -> Paging:
    try:
        number = max(1, int(request.query_params.get("page", "1")))
    except ValueError:
        number = 1
    return Paging(number, _dash(request).settings.page_size, False)


def _cut(rows: Sequence[T], paging: Paging) -> tuple[list[T], Paging]:
    return list(rows[: paging.size]), attrs.evolve(paging, more=len(rows) > paging.size)


def _text(request: Request, name: str) -> str | None:
    value = request.query_params.get(name, "").strip()
    return value or None


async def overview(request: Request) -> Response:
    """Per queue: counts, live workers and the rate over the last minutes; the workers."""
    dash = _dash(request)
    stats = await dash.broker.stats()
    workers = await dash.broker.workers()
    now = trio.current_time()
    charts = {s.queue: dash.rates.chart(s.queue, now) for s in stats}
    clock = dash.broker.clock()
    seen = {w.id: clock - w.seen_at for w in workers}
    return page(
        request,
        "overview.html",
        "Overview",
        {"stats": stats, "charts": charts, "workers": workers, "seen": seen},
    )


async def jobs(request: Request) -> Response:
    """Jobs submitted on their own, newest first; by id, key, operation, queue, status."""
    dash = _dash(request)
    job_id = _text(request, "id")
    if job_id is not None and await dash.broker.job(job_id) is not None:
        root = request.scope.get("root_path", "")
        return RedirectResponse(f"{root}/jobs/{job_id}", status_code=303)
    raw_status = _text(request, "status")
    try:
        status = RecordStatus(raw_status) if raw_status else None
    except ValueError:
        status = None
    paging = _paging(request)
    filters = {
        "queue": _text(request, "queue"),
        "operation": _text(request, "operation"),
        "key": _text(request, "key"),
    }
    rows = await dash.broker.find_jobs(
        status=status, limit=paging.size + 1, offset=paging.offset, **filters
    )
    records, paging = _cut(rows, paging)
    return page(
        request,
        "jobs.html",
        "Jobs",
        {
            "records": records,
            "paging": paging,
            "statuses": [s.value for s in RecordStatus],
            "filters": {**filters, "status": raw_status, "id": job_id},
            "params": {k: v for k, v in {**filters, "status": raw_status}.items() if v},
            "missing_id": job_id,
            "wall": dash.wall,
        },
    )


async def job(request: Request) -> Response:
    """One job: status, attempts, worker, timings, result or error with its traceback."""
    dash = _dash(request)
    job_id = request.path_params["job_id"]
    record = await dash.broker.job(job_id)
    context: dict[str, Any] = {"job_id": job_id, "record": record, "wall": dash.wall}
    if record is None:
        return page(request, "job.html", f"Job {job_id}", context, status=404)
    context["result"] = result_view(record.result)
    return page(request, "job.html", f"Job {job_id}", context)


async def dead_letters(request: Request) -> Response:
    """Dead letters, oldest first: reason, deliveries, the body decoded where it decodes."""
    dash = _dash(request)
    queue = _text(request, "queue")
    paging = _paging(request)
    rows = await dash.broker.dead_letters(queue, paging.size + 1, paging.offset)
    letters, paging = _cut(rows, paging)
    views = [body_view(letter.message.body) for letter in letters]
    queues = [s.queue for s in await dash.broker.stats() if s.dead]
    return page(
        request,
        "dead.html",
        "Dead letters",
        {
            "letters": list(zip(letters, views, strict=True)),
            "paging": paging,
            "queue": queue,
            "queues": queues,
        },
    )


async def schedules(request: Request) -> Response:
    """Schedules their schedulers announce: when each fires next, when it fired last."""
    dash = _dash(request)
    return page(request, "schedules.html", "Schedules", {"rows": await dash.broker.schedules()})


async def flows(request: Request) -> Response:
    """Orchestration instances, most recently updated first; by status and name."""
    dash = _dash(request)
    if dash.client is None:
        return page(request, "flows.html", "Orchestrations", {"instances": None}, status=404)
    raw_status = _text(request, "status")
    try:
        status = Status(raw_status) if raw_status else None
    except ValueError:
        status = None
    name = _text(request, "name")
    paging = _paging(request)
    if name is None:
        rows = await dash.client.list(status, paging.offset + paging.size + 1)
        rows = rows[paging.offset :]
    else:
        scanned = await dash.client.list(status, NAME_SCAN)
        rows = [i for i in scanned if i.name == name][paging.offset :]
    instances, paging = _cut(rows, paging)
    return page(
        request,
        "flows.html",
        "Orchestrations",
        {
            "instances": instances,
            "paging": paging,
            "statuses": [s.value for s in Status],
            "filters": {"status": raw_status, "name": name},
            "params": {k: v for k, v in {"status": raw_status, "name": name}.items() if v},
            "name_scan": NAME_SCAN,
        },
    )


async def flow(request: Request) -> Response:
    """One instance: status, input, output or error, custom status, the history as a timeline."""
    dash = _dash(request)
    iid = request.path_params["instance_id"]
    inst = None if dash.client is None else await dash.client.get(iid)
    context: dict[str, Any] = {"iid": iid, "inst": inst}
    if inst is None or dash.client is None:
        return page(request, "flow.html", f"Instance {iid}", context, status=404)
    context["entries"] = timeline(await dash.client.history(iid))
    context["values"] = {
        "input": pretty(inst.input),
        "output": pretty(inst.output),
        "custom_status": pretty(inst.custom_status),
    }
    return page(request, "flow.html", f"Instance {iid}", context)


async def service(request: Request) -> Response:
    """The running service's tasks (when mounted inside one): kind, state, restarts, errors."""
    status = _dash(request).settings.status
    if status is None:
        return page(request, "service.html", "Service", {"report": None}, status=404)
    report = status.report()
    now = trio.current_time()
    return page(
        request,
        "service.html",
        "Service",
        {"report": report, "phase": status.phase, "now": now, "barrier": status.barrier_open},
    )
