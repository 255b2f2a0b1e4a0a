"""Log output for the ``wireframe`` commands: rich text on the console, or one JSON object a line.

``--log-format json`` is for log shippers: each record is one line with
``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``, the structured
fields a record carries (a job's ``job_id``, ``operation``, ``queue``,
``attempt``, ``worker``, ``outcome``; an orchestration's ``instance_id``) and
``exception`` (the formatted traceback) when there is one.
"""

from __future__ import annotations

import enum
import json
import logging
from datetime import UTC, datetime

from rich.console import Console

from wireframe.jobs.joblog import JOB_FIELDS

__all__ = ["JsonFormatter", "LogFormat", "setup_logging"]


class LogFormat(enum.Enum):
    """How log records are written."""

    text = "text"
    json = "json"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, structured fields as keys."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        data: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in JOB_FIELDS:
            value = record.__dict__.get(field)
            if value is not None:
                data[field] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def setup_logging(level: str, fmt: LogFormat, console: Console) -> None:
    """Route the root logger to ``console`` (rich text) or to stderr as JSON lines."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_wireframe", False):
            root.removeHandler(handler)
    new: logging.Handler
    if fmt is LogFormat.json:
        new = logging.StreamHandler()  # stderr: stdout stays the command's result
        new.setFormatter(JsonFormatter())
    else:
        from rich.logging import RichHandler

        new = RichHandler(console=console, show_path=False, rich_tracebacks=False)
    setattr(new, "_wireframe", True)  # noqa: B010 - a mark on a handler we own
    root.addHandler(new)
    root.setLevel(getattr(logging, level.upper()))
