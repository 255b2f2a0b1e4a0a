"""The status of a running service, as a live rich view or as one plain log line per change.

:func:`snapshot` reads a :class:`~wireframe.Service` into a frozen
:class:`Snapshot`; :func:`render_status` turns a snapshot into a rich
renderable (a pure function, so tests render it at any width);
:func:`plain_line` is the one-line form of a task's state change for logs and
pipes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import attrs
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

import wireframe as wf
from wireframe.cli.render import (
    STATE_STYLES,
    duration,
    error_cell,
    last_line,
    queue_stats_table,
    state_text,
    unserved,
)
from wireframe.jobs.broker import QueueStats

__all__ = ["QueueView", "Snapshot", "plain_line", "render_status", "snapshot"]


@attrs.frozen
class QueueView:
    """The latest per-queue counts of one broker, the done-per-second rates, or why there are none."""

    url: str
    stats: tuple[QueueStats, ...] = ()
    rates: Mapping[str, float] = attrs.field(factory=dict)
    error: str | None = None
    polled: bool = False


@attrs.frozen
class Snapshot:
    """Everything the live view shows at one instant (times on the trio clock)."""

    title: str
    phase: str
    report: wf.ServiceReport
    now: float
    barrier_open: bool
    grace_total: float
    grace_left: float | None = None
    stop_requests: int = 0
    queues: tuple[QueueView, ...] = ()
    extra: tuple[RenderableType, ...] = ()  # e.g. progress bars of directive runs


def snapshot(
    service: wf.Service,
    *,
    title: str,
    now: float,
    queues: Sequence[QueueView] = (),
    extra: Sequence[RenderableType] = (),
) -> Snapshot:
    """Read ``service``'s state now (call on its trio thread)."""
    deadline = service.grace_deadline
    return Snapshot(
        title=title,
        phase=service.phase,
        report=service.status(),
        now=now,
        barrier_open=service.barrier_open,
        grace_total=service.graceful_shutdown_timeout,
        grace_left=None if deadline is None else max(deadline - now, 0.0),
        stop_requests=service.stop_requests,
        queues=tuple(queues),
        extra=tuple(extra),
    )


_PHASE_STYLES = {
    "new": "dim",
    "wiring": "yellow",
    "running": "bold green",
    "stopping": "bold yellow",
    "shutting_down": "yellow",
    "done": "cyan",
}


def _barrier(snap: Snapshot) -> Text:
    preconditions = [t for t in snap.report.tasks.values() if t.kind is wf.TaskKind.PRECONDITION]
    if snap.barrier_open:
        return Text("barrier open", style="green")
    if not preconditions and snap.phase in ("new", "wiring"):
        return Text("barrier: not yet", style="dim")
    left = sum(1 for t in preconditions if t.state is not wf.TaskState.FINISHED)
    return Text(f"barrier closed: {left} precondition(s) pending", style="yellow")


def _header(snap: Snapshot) -> Text:
    report = snap.report
    up = None if report.started_at is None else snap.now - report.started_at
    text = Text()
    text.append(snap.title, style="bold")
    text.append("  ")
    text.append(snap.phase.replace("_", " "), style=_PHASE_STYLES.get(snap.phase, ""))
    text.append(f"  up {duration(up)}  ")
    text.append_text(_barrier(snap))
    counts: dict[wf.TaskState, int] = {}
    for task in report.tasks.values():
        counts[task.state] = counts.get(task.state, 0) + 1
    if counts:
        text.append("  ")
        text.append_text(
            Text(", ").join(
                Text(f"{n} {state.value}", style=STATE_STYLES[state]) for state, n in counts.items()
            )
        )
    return text


def _footer(snap: Snapshot) -> Text:
    if snap.phase == "stopping" and snap.grace_left is not None:
        text = Text(f"stopping: {snap.report.stop_reason or 'stop requested'} — ", style="yellow")
        text.append(
            f"{snap.grace_left:.1f} s of the {snap.grace_total:g} s grace period left",
            style="bold yellow",
        )
        if snap.stop_requests < 2:
            text.append(", then tasks are cancelled. Ctrl-C again to force.", style="yellow")
        else:
            text.append(" — forcing.", style="bold red")
        return text
    if snap.phase == "shutting_down":
        return Text("shutting down: running hooks and closing layers…", style="yellow")
    if snap.phase == "done":
        return Text(f"done: {snap.report.stop_reason or ''}", style="cyan")
    if snap.phase in ("new", "wiring"):
        return Text("wiring layers…  Ctrl-C to stop", style="dim")
    return Text(
        f"Ctrl-C to stop gracefully ({snap.grace_total:g} s grace period); twice to force",
        style="dim",
    )


def _tasks_table(snap: Snapshot) -> Table:
    table = Table(expand=False, title_justify="left")
    table.add_column("id", no_wrap=True, style="bold", overflow="ellipsis", min_width=4)
    table.add_column("kind", overflow="ellipsis", min_width=4)
    table.add_column("state", no_wrap=True, min_width=5)
    table.add_column("uptime", justify="right", no_wrap=True)
    table.add_column("restarts", justify="right", no_wrap=True)
    table.add_column("last error", overflow="fold", ratio=1, min_width=5)
    for task in snap.report.tasks.values():
        if task.started_at is None:
            up = None
        else:
            up = (task.ended_at if task.ended_at is not None else snap.now) - task.started_at
        table.add_row(
            task.id,
            task.kind.value,
            state_text(task.state),
            duration(up),
            str(task.restarts) if task.restarts else "",
            Text(error_cell(task), style="red"),
        )
    if not snap.report.tasks:
        table.add_row(Text("(no tasks yet)", style="dim"), "", "", "", "", "")
    return table


def _queues(view: QueueView) -> RenderableType:
    from wireframe.jobs.broker import mask_password

    title = f"queues on {mask_password(view.url)}"
    if view.error is not None and not view.stats:
        return Text(f"{title}: {view.error}", style="yellow")
    if not view.polled:
        return Text(f"{title}: polling…", style="dim")
    table = queue_stats_table(view.stats, dict(view.rates), title=title)
    idle = [q for q in view.stats if unserved(q)]
    if not idle:
        return table
    warnings = [
        Text(
            f"no live worker consumes queue {q.queue!r} ({q.queued} queued): start one with "
            f"wireframe worker --broker {mask_password(view.url)} --import MODULE",
            style="yellow",
        )
        for q in idle
    ]
    return Group(table, *warnings)


def render_status(snap: Snapshot) -> RenderableType:
    """The live view: a header (phase, uptime, barrier), the task table, queues, a footer."""
    parts: list[RenderableType] = [_header(snap), _tasks_table(snap)]
    parts.extend(_queues(q) for q in snap.queues)
    parts.extend(snap.extra)
    parts.append(_footer(snap))
    return Group(*parts)


def plain_line(task: wf.TaskReport, *, wall: float | None = None) -> str:
    """``12:00:01.234 task 'greeter' (Task, layer hello) running`` — one line per change."""
    moment = time.time() if wall is None else wall
    stamp = time.strftime("%H:%M:%S", time.localtime(moment)) + f".{int(moment % 1 * 1000):03d}"
    line = f"{stamp} task {task.id!r} ({task.kind.value}, layer {task.layer}) {task.state.value}"
    if task.error is not None:
        line += f": {last_line(task.error)}"
    elif task.restarts and task.state is wf.TaskState.RUNNING and task.last_error is not None:
        line += f" (restart {task.restarts} after {last_line(task.last_error)})"
    return line
