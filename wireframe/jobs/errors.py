"""Errors of the job runtime: what an operation raises, and what a directive sees.

An operation signals intent by raising :class:`Transient` (retry me by a
:class:`~wireframe.jobs.retry.RetryPolicy`) or :class:`Fatal` (give up, and
either :data:`Terminate` the whole directive run or :data:`Ignore` this item).
Any other exception is fatal with ``Terminate``. Whatever happened crosses the
wire as a :class:`RemoteError` (kind, type name, message, traceback text), and
the directive raises :class:`JobFailed` carrying it.
"""

from __future__ import annotations

import enum
import traceback
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from wireframe.jobs.retry import RetryPolicy

__all__ = [
    "CodecError",
    "ErrorKind",
    "Fatal",
    "Ignore",
    "JobFailed",
    "JobsError",
    "OperationError",
    "RemoteError",
    "Strategy",
    "Terminate",
    "Transient",
]


class JobsError(Exception):
    """Base class of the job runtime's own errors."""


class OperationError(JobsError, TypeError):
    """An operation class is defined wrongly (duplicate name, bad signature)."""


class CodecError(JobsError, ValueError):
    """A payload could not be encoded or decoded; the message names the field."""


class Strategy(enum.Enum):
    """What a fatal error does to its directive run.

    Users write its members as :data:`Terminate` and :data:`Ignore`, the
    spelling of the design (``Fatal(..., strategy=jobs.Ignore)``, after
    paladin): capitalised like the exception classes beside them, but they are
    values of this enum, never raised. Renaming them would only add a second
    name for each value, so they keep that spelling.
    """

    TERMINATE = "terminate"
    IGNORE = "ignore"


#: End the directive run with the error; abort its remaining jobs everywhere.
Terminate = Strategy.TERMINATE
#: Skip this item; the directive run goes on.
Ignore = Strategy.IGNORE


class ErrorKind(enum.Enum):
    """Why a job did not produce a value."""

    FATAL = "fatal"  # the operation raised Fatal or any other exception
    RETRIES_EXHAUSTED = "retries_exhausted"  # Transient, and the policy gave up
    UNKNOWN_OPERATION = "unknown_operation"  # the worker has no such operation
    MISSING_RESOURCE = "missing_resource"  # the worker lacks a resource the op takes
    DEAD = "dead"  # the broker dead-lettered the message (undecodable, too many deliveries)
    CANCELLED = "cancelled"  # the worker aborted it (per-worker abort)
    TIME_LIMIT = "time_limit"  # it ran longer than its time limit


class Transient(Exception):
    """A failure worth retrying: the worker retries the job by ``retry``.

    When the policy gives up, the job fails with kind ``retries_exhausted``
    and strategy ``Terminate``.
    """

    def __init__(self, message: str, *, retry: RetryPolicy | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry = retry


class Fatal(Exception):
    """A failure not worth retrying; ``strategy`` says what the run does about it."""

    def __init__(self, message: str, *, strategy: Strategy = Terminate) -> None:
        super().__init__(message)
        self.message = message
        self.strategy = strategy


@attrs.frozen
class RemoteError:
    """An error as it crosses the wire from a worker back to a directive."""

    kind: ErrorKind
    type_name: str
    message: str
    traceback: str = ""
    strategy: Strategy = Terminate

    @classmethod
    def from_exception(
        cls, exc: BaseException, kind: ErrorKind = ErrorKind.FATAL, strategy: Strategy = Terminate
    ) -> RemoteError:
        """Describe ``exc`` (its qualified type name, message and traceback text)."""
        t = type(exc)
        name = t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"
        message = exc.message if isinstance(exc, Transient | Fatal) else str(exc)
        text = "".join(traceback.format_exception(exc))
        return cls(kind=kind, type_name=name, message=message, traceback=text, strategy=strategy)


class JobFailed(JobsError):
    """A job of a directive run failed; ``error`` is what the worker reported.

    ``str()`` names the remote exception type and message.
    """

    def __init__(self, error: RemoteError, *, job_id: str = "", index: int | None = None) -> None:
        self.error = error
        self.job_id = job_id
        self.index = index
        where = f" (item {index})" if index is not None else ""
        super().__init__(
            f"job {job_id}{where} failed [{error.kind.value}]: {error.type_name}: {error.message}"
        )

    @property
    def type_name(self) -> str:
        """The remote exception's qualified type name."""
        return self.error.type_name

    @property
    def remote_traceback(self) -> str:
        """The remote traceback text (empty when there was none)."""
        return self.error.traceback
