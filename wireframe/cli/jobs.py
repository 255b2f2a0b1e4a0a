"""``wireframe jobs ...``: inspect a broker and the jobs in it.

Every command here opens the broker with ``create=False`` (inspecting never
creates a database) and needs only its administration and job store roles.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import trio
import typer

from wireframe.cli.common import BrokerOpt, JsonOpt, QueueOpt, fail, print_json, stdout
from wireframe.cli.render import (
    dead_letters_json,
    dead_letters_table,
    hide_urls,
    job_json,
    job_table,
    queue_stats_json,
    queue_stats_table,
    schedules_json,
    schedules_table,
)
from wireframe.jobs.broker import Broker, BrokerAdmin, JobRecord, ScheduleInfo, mask_password
from wireframe.jobs.handles import JobStatus, UnknownJob
from wireframe.jobs.runtime import Runtime

__all__ = ["jobs_app"]

T = TypeVar("T")

jobs_app = typer.Typer(
    help="Inspect a job broker: per-queue counts, dead letters, retry, purge, one job by id.",
    no_args_is_help=True,
)


def _with_admin(url: str, fn: Callable[[BrokerAdmin], Awaitable[T]]) -> T:
    """Run ``fn`` on the broker ``url`` names: the counting commands need only its admin role."""
    return _with_broker(url, fn)


def _with_broker(url: str, fn: Callable[[Broker], Awaitable[T]]) -> T:
    """Run ``fn`` on the broker ``url`` names (never created); a broker error is one line, exit 1."""
    from wireframe import jobs

    async def go() -> T:
        async with jobs.open_broker(url, create=False) as broker:  # inspecting creates nothing
            return await fn(broker)

    try:
        return trio.run(go)
    except (jobs.BrokerError, OSError, UnknownJob) as exc:
        raise fail(f"broker {mask_password(url)}: {hide_urls(str(exc), [url])}", 1) from None


@jobs_app.command("stats")
def jobs_stats(broker: BrokerOpt, as_json: JsonOpt = False) -> None:
    """Per-queue counts: queued, running, done, dead."""
    stats = _with_admin(broker, lambda b: b.stats())
    if as_json:
        print_json(queue_stats_json(stats))
    else:
        stdout().print(queue_stats_table(stats))


@jobs_app.command("dead")
def jobs_dead(
    broker: BrokerOpt,
    queue: QueueOpt = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Show at most this many.")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """List dead letters (oldest first) with the reason each died."""
    letters = _with_admin(broker, lambda b: b.dead_letters(queue, limit))
    if as_json:
        print_json(dead_letters_json(letters))
    else:
        stdout().print(dead_letters_table(letters))


@jobs_app.command("retry")
def jobs_retry(broker: BrokerOpt, queue: QueueOpt = None, as_json: JsonOpt = False) -> None:
    """Put dead letters back on their queues (their delivery count reset)."""
    count = _with_admin(broker, lambda b: b.requeue_dead(queue))
    if as_json:
        print_json({"requeued": count, "queue": queue})
    else:
        stdout().print(f"re-queued {count} dead letter(s)")


@jobs_app.command("purge")
def jobs_purge(broker: BrokerOpt, queue: QueueOpt = None, as_json: JsonOpt = False) -> None:
    """Delete finished state (completed records, dead letters); never a queued or running job."""
    count = _with_admin(broker, lambda b: b.purge(queue))
    if as_json:
        print_json({"purged": count, "queue": queue})
    else:
        stdout().print(f"purged {count} finished record(s)")


JobIdArg = Annotated[str, typer.Argument(help="The job's id (JobHandle.id).", show_default=False)]


@jobs_app.command("show")
def jobs_show(job_id: JobIdArg, broker: BrokerOpt, as_json: JsonOpt = False) -> None:
    """One job submitted on its own: status, times, attempts, worker, error, result size."""

    async def show(b: Broker) -> JobRecord:
        record = await b.job(job_id)
        if record is None:
            raise UnknownJob(job_id, b.url)
        return record

    record = _with_broker(broker, show)
    if as_json:
        print_json(job_json(record))
    else:
        stdout().print(job_table(record))


@jobs_app.command("abort")
def jobs_abort(job_id: JobIdArg, broker: BrokerOpt, as_json: JsonOpt = False) -> None:
    """Abort a job: queued, it never runs; running, its worker cancels it."""

    async def abort(b: Broker) -> JobStatus:
        return await Runtime(b).handle(job_id).abort()

    status = _with_broker(broker, abort)
    if as_json:
        print_json({"job_id": job_id, "status": status.value})
    else:
        stdout().print(f"job {job_id}: {status.value}", markup=False)


@jobs_app.command("schedules")
def jobs_schedules(broker: BrokerOpt, as_json: JsonOpt = False) -> None:
    """The schedules running schedulers announce, each with its next fire time."""

    async def listed(b: Broker) -> tuple[list[ScheduleInfo], float]:
        return await b.schedules(), time.time()

    schedules, now = _with_broker(broker, listed)
    if as_json:
        print_json(schedules_json(schedules))
    else:
        stdout().print(schedules_table(schedules, now))
