"""What the ``wireframe`` commands share: their options, consoles, and how they fail.

Every command prints results to stdout (a rich table, or JSON with
``--json``) and errors to stderr as one line (:func:`fail`), so a log or a
``grep`` sees a whole message and a script reads stdout alone.
"""

from __future__ import annotations

import enum
import json
import os
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from wireframe.cli.logformat import LogFormat

__all__ = [
    "BrokerOpt",
    "GraceOpt",
    "GraphFormat",
    "JsonOpt",
    "LogLevel",
    "LogOpt",
    "PlainOpt",
    "QueueOpt",
    "TargetArg",
    "fail",
    "print_json",
    "stderr",
    "stdout",
]


class LogLevel(enum.StrEnum):
    """``--log-level`` choices."""

    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"
    critical = "critical"


class GraphFormat(enum.StrEnum):
    """``graph --format`` choices."""

    tree = "tree"
    dot = "dot"
    json = "json"


TargetArg = Annotated[
    str,
    typer.Argument(
        help="path/to/file.py or package.module, optionally :NAME of a ServiceBuilder, "
        "a Service, or a function returning one.",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
PlainOpt = Annotated[
    bool,
    typer.Option("--plain", help="One log line per task state change instead of a live table."),
]
GraceOpt = Annotated[
    float | None,
    typer.Option(
        "--graceful-timeout",
        min=0.0,
        help="Seconds tasks get to return after a stop before they are cancelled "
        "(default: the service's own).",
        show_default=False,
    ),
]
HealthPortOpt = Annotated[
    int | None,
    typer.Option(
        "--health-port",
        min=0,
        max=65535,
        help="Serve /livez, /readyz, /status and /metrics on 127.0.0.1:PORT (wf.HealthLayer).",
        show_default=False,
    ),
]
LogFormatOpt = Annotated[
    LogFormat,
    typer.Option(
        "--log-format",
        case_sensitive=False,
        help="text (on the console) or json (one object a line on stderr, with job fields).",
    ),
]
LogOpt = Annotated[
    LogLevel,
    typer.Option("--log-level", case_sensitive=False, help="Level of log records shown."),
]
BrokerOpt = Annotated[
    str,
    typer.Option(
        "--broker",
        envvar="WIREFRAME_BROKER",
        help="Broker URL: memory://NAME, sqlite:///path/jobs.db, redis://host:6379/0.",
        show_default=False,
    ),
]
QueueOpt = Annotated[
    str | None, typer.Option("--queue", help="Only this queue (default: all).", show_default=False)
]


def _console(file: Any) -> Console:
    console = Console(file=file, highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = max(console.width, 120)  # logs and pipes: keep report rows on one line
    return console


def stdout() -> Console:
    """The console for results."""
    return _console(sys.stdout)


def stderr() -> Console:
    """The console for errors, warnings and (with ``--json``) the status view."""
    return _console(sys.stderr)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``message`` as one error line on stderr; the ``typer.Exit`` to raise (code 2 by default)."""
    # soft_wrap: one line however long (a path), so a log or grep sees all of it
    stderr().print(
        f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False, soft_wrap=True
    )
    return typer.Exit(code)


def print_json(data: Any) -> None:
    """Write ``data`` as indented JSON on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()
