"""The Job: one invocation of an operation on one input, as the runtime and worker see it.

A job is what a directive sends and a worker runs: its id (also the broker
message id), the result channel its reply goes to, the directive run it belongs
to, the item's index in that run, the operation (with its parameters), the
input, the attempt number (1 on the first run, +1 per retry) and free-form
string metadata. :mod:`wireframe.jobs.codec` turns it into bytes and back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from wireframe.jobs.errors import RemoteError
from wireframe.jobs.operations import Operation

__all__ = ["Job", "JobResult"]


@attrs.frozen
class Job:
    """One invocation: ``operation.execute(input)`` for item ``index`` of run ``run_id``."""

    id: str
    channel: str
    run_id: str
    index: int
    operation: Operation[Any, Any]
    input: Any
    attempt: int = 1
    metadata: Mapping[str, str] = attrs.field(factory=dict)


@attrs.frozen
class JobResult:
    """What a job produced: a value, a skip (``Fatal(..., strategy=Ignore)``) or an error."""

    value: Any = None
    skipped: bool = False
    error: RemoteError | None = None

    @property
    def ok(self) -> bool:
        """True when the job produced a value."""
        return self.error is None and not self.skipped
