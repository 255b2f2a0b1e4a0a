"""Listener hooks: how telemetry observes the job runtime without the runtime knowing it.

The job runtime never imports OpenTelemetry or prometheus-client; it calls the
one :class:`JobListener` installed in this process, if any, at five points: a
job submitted on its own, a directive run, a job executed on a worker (as the
outermost middleware), a job's final outcome and an orchestration's turn (the
durable worker calls it; durable builds on jobs). With none installed, each
point costs one attribute check (``instrument.listener is None``).

:mod:`wireframe.telemetry` installs a listener with
:func:`install_listener`; a test or another integration may install its own.
One listener at a time: a second install replaces the first (and says so in
the return value, so it can be put back).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Protocol

from wireframe.jobs.middleware import Middleware

__all__ = ["JobListener", "install_listener", "listener", "running", "submitting", "turning"]


class JobListener(Protocol):
    """What the job runtime tells an observer (telemetry)."""

    def submitting(
        self, operation: str, queue: str, job_id: str
    ) -> AbstractContextManager[Mapping[str, str]]:
        """Around one job's submission; yields string metadata to carry in its envelope."""
        ...

    def running(self, name: str, queue: str) -> AbstractContextManager[Mapping[str, str]]:
        """Around one directive run; yields the metadata every job of the run carries."""
        ...

    @property
    def middleware(self) -> Middleware:
        """The worker middleware wrapped around every job executed in this process."""
        ...

    def turning(self, orchestrator: str, instance_id: str) -> AbstractContextManager[object]:
        """Around one orchestration turn (the durable worker's)."""
        ...

    def job_ended(self, operation: str, queue: str, outcome: str) -> None:
        """A job's delivery ended: ``completed``, ``failed``, ``retried``, ``dead`` or ``cancelled``."""
        ...


#: The installed listener, or None (the common case, and free).
listener: JobListener | None = None


def install_listener(new: JobListener | None) -> JobListener | None:
    """Install ``new`` (None uninstalls); returns the listener it replaced."""
    global listener
    previous, listener = listener, new
    return previous


_NOTHING: AbstractContextManager[Mapping[str, str] | None] = nullcontext(None)


def submitting(
    operation: str, queue: str, job_id: str
) -> AbstractContextManager[Mapping[str, str] | None]:
    """The listener's context around a submission (its metadata), or one yielding None."""
    if listener is None:
        return _NOTHING
    return listener.submitting(operation, queue, job_id)


def turning(orchestrator: str, instance_id: str) -> AbstractContextManager[object]:
    """The listener's context around an orchestration turn, or one doing nothing."""
    if listener is None:
        return _NOTHING
    return listener.turning(orchestrator, instance_id)


def running(name: str, queue: str) -> AbstractContextManager[Mapping[str, str] | None]:
    """The listener's context around a directive run (its jobs' metadata), or one yielding None."""
    if listener is None:
        return _NOTHING
    return listener.running(name, queue)
