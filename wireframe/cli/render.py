"""How finished things look: the final report, wiring problems and broker listings, as rich or JSON.

Everything here is a pure function from data to a rich renderable or a
JSON-ready dict, so a test can render it on any console and width. JSON goes
through one cattrs converter (enums become their values).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import attrs
import cattrs
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

import wireframe as wf
from wireframe.jobs.broker import (
    DeadLetter,
    JobRecord,
    QueueStats,
    RecordStatus,
    ScheduleInfo,
    mask_password,
)
from wireframe.jobs.errors import JobsError
from wireframe.jobs.handles import status_of, value_of

__all__ = [
    "STATE_STYLES",
    "converter",
    "dead_letters_json",
    "dead_letters_table",
    "duration",
    "hide_urls",
    "hide_urls_in_problems",
    "hide_urls_in_report",
    "last_line",
    "problems_json",
    "problems_table",
    "queue_stats_json",
    "queue_stats_table",
    "report_json",
    "report_table",
    "state_text",
    "wall_time",
]

#: The colour of each task state, shared by the live view and the final report.
STATE_STYLES: dict[wf.TaskState, str] = {
    wf.TaskState.PENDING: "dim",
    wf.TaskState.WAITING: "yellow",
    wf.TaskState.RUNNING: "bold green",
    wf.TaskState.FINISHED: "green",
    wf.TaskState.STOPPED: "cyan",
    wf.TaskState.FAILED: "bold red",
    wf.TaskState.TIMED_OUT: "bold magenta",
}

converter = cattrs.Converter()


def state_text(state: wf.TaskState) -> Text:
    """A task state, coloured."""
    return Text(state.value, style=STATE_STYLES[state])


def duration(seconds: float | None) -> str:
    """``0.25s``, ``12.0s``, ``3m05s``, ``2h01m``; ``-`` for unknown."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def hide_urls(text: str, urls: Sequence[str]) -> str:
    """``text`` with each of ``urls`` (as written or as a repr quotes it) shown masked.

    The brokers quote URLs masked; this is the CLI's second line of defence for any
    message that quotes the URL the user gave as it was written.
    """
    for url in urls:
        masked = mask_password(url)
        if masked == url:
            continue
        text = text.replace(url, masked)
        quoted = repr(url)[1:-1]
        if quoted != url:
            text = text.replace(quoted, repr(masked)[1:-1])
    return text


def _hide_in_error(error: wf.ErrorInfo | None, urls: Sequence[str]) -> wf.ErrorInfo | None:
    if error is None or not urls:
        return error
    return attrs.evolve(
        error, message=hide_urls(error.message, urls), traceback=hide_urls(error.traceback, urls)
    )


def hide_urls_in_problems(
    problems: Sequence[wf.WiringProblem], urls: Sequence[str]
) -> tuple[wf.WiringProblem, ...]:
    """Wiring problems with :func:`hide_urls` applied to their messages and errors."""
    return tuple(
        attrs.evolve(p, message=hide_urls(p.message, urls), error=_hide_in_error(p.error, urls))
        for p in problems
    )


def hide_urls_in_report(report: wf.ServiceReport, urls: Sequence[str]) -> wf.ServiceReport:
    """A report with :func:`hide_urls` applied to every task's and shutdown step's error."""
    return attrs.evolve(
        report,
        tasks={
            key: attrs.evolve(
                t,
                error=_hide_in_error(t.error, urls),
                last_error=_hide_in_error(t.last_error, urls),
            )
            for key, t in report.tasks.items()
        },
        shutdown=tuple(
            attrs.evolve(h, error=_hide_in_error(h.error, urls)) for h in report.shutdown
        ),
    )


def last_line(error: wf.ErrorInfo | None) -> str:
    """The last non-empty line of an error's ``type: message``."""
    if error is None:
        return ""
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else error.type


def error_cell(task: wf.TaskReport) -> str:
    """A task's error, or the error of its latest restart (so marked) when it has none."""
    if task.error is not None:
        return last_line(task.error)
    if task.last_error is not None:
        return f"(restarted after) {last_line(task.last_error)}"
    return ""


def _task_duration(task: wf.TaskReport, now: float | None) -> float | None:
    if task.started_at is None:
        return None
    end = task.ended_at if task.ended_at is not None else now
    return None if end is None else max(end - task.started_at, 0.0)


def report_table(report: wf.ServiceReport, *, exit_code: int) -> RenderableType:
    """The final report: one row per task, the shutdown steps, why it stopped, the verdict."""
    tasks = Table(title="tasks", title_justify="left", expand=False)
    for column in ("id", "kind", "layer", "state", "ran", "restarts"):
        tasks.add_column(column, no_wrap=column in ("id", "state", "ran"), overflow="fold")
    tasks.add_column("error", overflow="fold")
    for task in report.tasks.values():
        tasks.add_row(
            task.id,
            task.kind.value,
            task.layer,
            state_text(task.state),
            duration(_task_duration(task, report.ended_at)),
            str(task.restarts) if task.restarts else "",
            error_cell(task),
        )
    parts: list[RenderableType] = [tasks]
    if report.shutdown:
        steps = Table(title="shutdown", title_justify="left")
        for column in ("step", "name", "state", "error"):
            steps.add_column(column)
        for hook in report.shutdown:
            steps.add_row(hook.what, hook.name, state_text(hook.state), last_line(hook.error))
        parts.append(steps)
    if report.stop_reason:
        parts.append(Text(f"stopped because: {report.stop_reason}"))
    if exit_code == 0:
        parts.append(Text("clean stop (exit 0)", style="green"))
    else:
        parts.append(Text(f"service failed (exit {exit_code})", style="bold red"))
        for line in report.failures:
            parts.append(Text(f"  {line.splitlines()[0]}", style="red"))
    return Group(*parts)


def wall_time(reading: float | None, wall_offset: float) -> str | None:
    """A clock reading as an ISO 8601 wall-clock time in UTC, with its offset
    (``2025-06-01T12:00:00.250+00:00``); ``wall_offset`` is wall seconds minus clock seconds."""
    if reading is None:
        return None
    moment = datetime.fromtimestamp(reading + wall_offset, tz=UTC)
    return moment.isoformat(timespec="milliseconds")


def report_json(report: wf.ServiceReport, *, exit_code: int, wall_offset: float) -> dict[str, Any]:
    """The report as a JSON-ready dict, plus ``ok``, ``exit_code`` and ``failures``.

    A report's times are readings of trio's clock, which means nothing outside the
    run: here ``started_at`` and ``ended_at`` (of the service and of each task) are
    wall-clock ISO 8601 times in UTC, mapped with ``wall_offset`` (see
    :func:`wall_time`), and ``seconds`` is each one's duration, measured on the
    report's own clock (so a wall-clock step during the run does not skew it).
    """
    data: dict[str, Any] = converter.unstructure(report)
    data["started_at"] = wall_time(report.started_at, wall_offset)
    data["ended_at"] = wall_time(report.ended_at, wall_offset)
    data["seconds"] = _span(report.started_at, report.ended_at)
    for task, out in zip(report.tasks.values(), data["tasks"].values(), strict=True):
        out["started_at"] = wall_time(task.started_at, wall_offset)
        out["ended_at"] = wall_time(task.ended_at, wall_offset)
        out["seconds"] = _task_duration(task, report.ended_at)
    data["ok"] = exit_code == 0
    data["exit_code"] = exit_code
    data["failures"] = report.failures
    return data


def _span(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else max(end - start, 0.0)


def problems_table(problems: Sequence[wf.WiringProblem]) -> RenderableType:
    """Every wiring problem: its layer, the resource involved, what is wrong."""
    count = len(problems)
    table = Table(
        title=f"{count} wiring problem{'s' if count != 1 else ''}",
        title_justify="left",
        title_style="bold red",
    )
    table.add_column("layer", style="bold", no_wrap=True)
    table.add_column("resource")
    table.add_column("problem", overflow="fold")
    for problem in problems:
        table.add_row(problem.layer, problem.resource or "-", problem.message)
    return table


def problems_json(problems: Sequence[wf.WiringProblem]) -> list[dict[str, Any]]:
    """Wiring problems as JSON-ready dicts (``layer``, ``resource``, ``message``, ``error``)."""
    return [converter.unstructure(p) for p in problems]


def queue_stats_table(
    stats: Sequence[QueueStats], rates: dict[str, float] | None = None, *, title: str = "queues"
) -> Table:
    """Per-queue counts (queued, of them scheduled and held back by a limit, running,
    done, dead), live workers and, if given, the done-per-second rate. A queue with
    work and no live worker shows its 0 in yellow."""
    table = Table(title=title, title_justify="left")
    table.add_column("queue", no_wrap=True)
    for column in ("queued", "scheduled", "held", "running", "done", "dead", "workers"):
        table.add_column(column, justify="right")
    if rates is not None:
        table.add_column("done/s", justify="right")
    for q in stats:
        # Text, not str: a queue name is data, never rich markup ("[x]" stays "[x]")
        row: list[RenderableType] = [Text(q.queue), str(q.queued), str(q.scheduled)]
        row += [Text(str(q.held), style="yellow" if q.held else ""), str(q.running), str(q.done)]
        row.append(Text(str(q.dead), style="red" if q.dead else ""))
        row.append(Text(str(q.workers), style="yellow" if unserved(q) else ""))
        if rates is not None:
            row.append(f"{rates.get(q.queue, 0.0):.1f}")
        table.add_row(*row)
    if not stats:
        table.add_row("(no queues)", *[""] * (len(table.columns) - 1))
    return table


def unserved(q: QueueStats) -> bool:
    """Whether ``q`` has work waiting and no live worker to do it."""
    return q.workers == 0 and q.queued > 0


def queue_stats_json(stats: Sequence[QueueStats]) -> list[dict[str, Any]]:
    """Per-queue counts as JSON-ready dicts."""
    return [converter.unstructure(q) for q in stats]


def _body_preview(body: bytes, width: int = 40) -> str:
    text = body[:width].decode("utf-8", "backslashreplace")
    return text + ("..." if len(body) > width else "")


def dead_letters_table(letters: Sequence[DeadLetter]) -> Table:
    """Dead letters: queue, message id, deliveries made, why it died."""
    table = Table(title=f"{len(letters)} dead letter(s)", title_justify="left")
    table.add_column("queue", no_wrap=True)
    table.add_column("message", overflow="fold")
    table.add_column("deliveries", justify="right")
    table.add_column("reason", overflow="fold")
    for letter in letters:  # Text: ids and reasons are data, never rich markup
        table.add_row(
            Text(letter.queue),
            Text(letter.message.id),
            str(letter.deliveries),
            Text(letter.reason),
        )
    return table


def dead_letters_json(letters: Sequence[DeadLetter]) -> list[dict[str, Any]]:
    """Dead letters as JSON-ready dicts; the body as text (invalid UTF-8 escaped) and its size."""
    return [
        {
            "queue": d.queue,
            "message_id": d.message.id,
            "reply_to": d.message.reply_to,
            "reason": d.reason,
            "deliveries": d.deliveries,
            "died_at": wall_time(d.died_at, 0.0),  # ISO 8601 UTC, as `run --json` times
            "body_bytes": len(d.message.body),
            "body_preview": _body_preview(d.message.body),
        }
        for d in letters
    ]


def job_json(record: JobRecord) -> dict[str, Any]:
    """A job's record as a JSON-ready dict: its user-facing status, ISO times, the error
    it ended with (if any) and the size of its result; never the result itself."""
    status = status_of(record)
    return {
        "job_id": record.id,
        "status": status.value,
        "queue": record.queue,
        "operation": record.operation,
        "key": record.key,
        "priority": record.priority,
        "attempts": record.attempts,
        "worker": record.worker,
        "enqueued_at": wall_time(record.enqueued_at, 0.0),
        "visible_at": wall_time(record.visible_at, 0.0),
        "started_at": wall_time(record.started_at, 0.0),
        "finished_at": wall_time(record.finished_at, 0.0),
        "expires_at": wall_time(record.expires_at, 0.0),
        "error": _job_error(record),
        "result_bytes": None if record.result is None else len(record.result),
    }


def job_table(record: JobRecord) -> Table:
    """A job's record as a two-column table (what ``wireframe jobs show`` prints)."""
    table = Table(title=f"job {record.id}", title_justify="left", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for field, value in job_json(record).items():
        if field == "job_id" or value is None:
            continue
        style = "red" if field == "error" else ""
        table.add_row(field.replace("_", " "), Text(str(value), style=style))
    return table


def _job_error(record: JobRecord) -> str | None:
    """What a job that did not succeed ended with, in a line."""
    if record.status in (RecordStatus.DEAD, RecordStatus.ABORTED):
        return record.error
    if record.status is RecordStatus.DONE:
        try:
            value_of(record)
        except JobsError as exc:
            return str(exc)
    return None


def schedules_json(schedules: Sequence[ScheduleInfo]) -> list[dict[str, Any]]:
    """Announced schedules as JSON-ready dicts, times in ISO 8601 UTC."""
    return [
        {
            "name": s.name,
            "schedule": s.schedule,
            "operation": s.operation,
            "queue": s.queue,
            "next_at": wall_time(s.next_at, 0.0),
            "last_at": wall_time(s.last_at, 0.0),
            "scheduler": s.scheduler,
        }
        for s in schedules
    ]


def schedules_table(schedules: Sequence[ScheduleInfo], now: float) -> Table:
    """Announced schedules with their next fire time, and how far off it is from ``now``."""
    table = Table(title="schedules", title_justify="left")
    for column in ("name", "schedule", "operation", "queue", "next fire", "last fire"):
        table.add_column(column, no_wrap=column in ("name", "next fire"))
    for s in schedules:
        nxt = f"{wall_time(s.next_at, 0.0)} (in {duration(max(s.next_at - now, 0.0))})"
        table.add_row(
            Text(s.name), Text(s.schedule), Text(s.operation), Text(s.queue), nxt,
            wall_time(s.last_at, 0.0) or "",
        )  # fmt: skip
    if not schedules:
        table.add_row("(no scheduler announced any)", "", "", "", "", "")
    return table
