"""An orchestration's history as a timeline: each event with its turn's time and its details.

History events carry no time of their own: a turn begins with an
``OrchestratorStarted`` holding the turn's time (what ``ctx.now()`` reads), so
every event of the turn is shown at that time. Payloads kept as job bytes (an
activity's body, its result) are decoded as the jobs pages decode them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from wireframe.durable.history import OrchestratorStarted, TaskCompleted, TaskScheduled
from wireframe.web.decode import body_view, pretty, result_view

__all__ = ["Entry", "timeline"]


@attrs.frozen
class Entry:
    """One history event as a row of the timeline."""

    number: int  # its place in the history, from 1
    kind: str  # the event's class name (``TaskScheduled``...)
    at: float | None  # the turn's time (epoch seconds), None before the first turn
    summary: str  # one line
    details: str  # the event's fields, as indented JSON


def _fields(event: Any) -> dict[str, Any]:
    return attrs.asdict(event, recurse=False)


def _describe(event: Any) -> tuple[str, dict[str, Any]]:
    fields = _fields(event)
    if isinstance(event, TaskScheduled):
        body = body_view(event.body)
        fields["body"] = body.problem or {"operation": body.operation, "input": body.input}
        return f"activity {event.name} (action {event.action})", fields
    if isinstance(event, TaskCompleted):
        result = result_view(event.result)
        fields["result"] = None if result is None else (result.value or result.outcome)
        return f"action {event.action} completed", fields
    short = ", ".join(
        f"{k}={v!r}" for k, v in fields.items() if not isinstance(v, bytes | dict | list)
    )
    return short, fields


def timeline(history: Sequence[Any]) -> list[Entry]:
    """The entries of ``history``, in order."""
    out: list[Entry] = []
    at: float | None = None
    for n, event in enumerate(history, start=1):
        if isinstance(event, OrchestratorStarted):
            at = event.at
        summary, fields = _describe(event)
        out.append(Entry(n, type(event).__name__, at, summary[:200], pretty(fields)))
    return out
