"""How a job's failure becomes what crosses the wire.

A worker never lets a job's exception escape: it becomes an error result
(:func:`error_body`, a :class:`~wireframe.jobs.errors.RemoteError` encoded as
the job's reply), or, for a job that cannot even be decoded, a dead-letter
reason (:func:`dead_reason`). The two failures a worker itself detects have
their own words here: a job past its time limit (:class:`TimeLimitExceeded`)
and a ``cpu_bound`` job whose pool process died (:func:`process_died`, which
says the usual cause).
"""

from __future__ import annotations

import sys

from wireframe.jobs.codec import JobResult, encode_result
from wireframe.jobs.errors import CodecError, ErrorKind, RemoteError, Strategy, Terminate
from wireframe.jobs.operations import OpSpec

__all__ = ["TimeLimitExceeded", "dead_reason", "error_body", "process_died"]


class TimeLimitExceeded(Exception):
    """A job ran longer than its time limit (it fails with ``ErrorKind.TIME_LIMIT``)."""


def dead_reason(exc: BaseException) -> str:
    """A dead-letter reason for ``exc``: a CodecError's own words, else its type too."""
    return str(exc) if isinstance(exc, CodecError) else f"{type(exc).__name__}: {exc}"


def error_body(exc: BaseException, kind: ErrorKind, strategy: Strategy = Terminate) -> bytes:
    """An error reply describing ``exc``; never raises (an exception may not even print)."""
    try:
        error = RemoteError.from_exception(exc, kind, strategy)
    except Exception:
        name = f"{type(exc).__module__}.{type(exc).__qualname__}"
        error = RemoteError(kind, name, "(the exception's message could not be rendered)")
    return encode_result(JobResult(error=error))


def process_died(spec: OpSpec, exc: BaseException) -> RuntimeError:
    """The error for a cpu_bound job whose pool process died, saying the usual why."""
    main = sys.modules.get("__main__")
    script = getattr(main, "__file__", None)
    where = f" ({script})" if isinstance(script, str) else ""
    return RuntimeError(
        f"the process running cpu_bound operation {spec.name!r} died ({exc}). A cpu_bound "
        f"operation runs in a process pool whose processes re-import the main module{where}: "
        "if that script starts work at import (trio.run(...) at top level), guard that code "
        'with `if __name__ == "__main__":`, or move the operation into a module of its own. '
        "Otherwise the process crashed or was killed (out of memory?)"
    )
