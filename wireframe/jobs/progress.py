"""Progress of directive runs, as a hook any display can listen to.

A :class:`Progress` is a named count of completed jobs out of a total (which
may be unknown, or grow while a directive feeds). Code that runs directives
reports progress; whatever shows it — ``wireframe run``'s live view draws a bar
(completed/total, rate, elapsed, ETA) under its task table — listens with
:func:`add_progress_listener`. The job runtime knows nothing of terminals: with
no listener, reporting progress costs a function call and shows nothing.

:func:`track` is the usual way in: it follows a runtime's statistics, so a
directive run needs no change to report its progress::

    async with jobs.track(runtime, "primes"):
        total = await jobs.from_iter(chunks).map(CountPrimes()).fold(Add()).run(runtime)

Anything else that counts jobs can feed a :class:`Progress` by hand with
:meth:`Progress.update` or :meth:`Progress.advance` inside ``with Progress(...)``.
Listeners are process-wide, like logging handlers: a script that wants its own
display adds one (``add_progress_listener(lambda p: print(p.completed, p.total))``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from wireframe.jobs.runtime import Runtime

__all__ = ["Progress", "ProgressListener", "add_progress_listener", "track"]

#: Called with the :class:`Progress` that changed (started, advanced, or finished),
#: synchronously, on the thread that changed it: keep it quick.
ProgressListener = Callable[["Progress"], None]

_LISTENERS: list[ProgressListener] = []


def add_progress_listener(listener: ProgressListener) -> Callable[[], None]:
    """Call ``listener(progress)`` whenever any :class:`Progress` changes; returns an unsubscriber.

    A listener sees a progress first when it starts (``finished`` false), then on
    every change, and last when it ends (``finished`` true). The object is the
    same each time, so it can key a display (one bar per progress).
    """
    _LISTENERS.append(listener)

    def remove() -> None:
        if listener in _LISTENERS:
            _LISTENERS.remove(listener)

    return remove


class Progress:
    """``completed`` of ``total`` jobs (``None``: not known yet) under a ``description``.

    Use as ``with Progress("squares", total=100) as p:`` and feed it with
    :meth:`update` or :meth:`advance`; listeners hear of it from ``__enter__`` to
    ``__exit__``. Not thread-safe: feed it from one thread (the trio thread).
    """

    def __init__(self, description: str = "jobs", total: int | None = None) -> None:
        self.description = description
        self.completed = 0
        self.total = total
        self.started = False
        self.finished = False

    def update(self, completed: int, total: int | None = None) -> None:
        """``completed`` jobs so far, of ``total`` if given (else the total stays as it was)."""
        self.completed = completed
        if total is not None:
            self.total = total
        self._changed()

    def advance(self, n: int = 1) -> None:
        """``n`` more jobs completed."""
        self.completed += n
        self._changed()

    def _changed(self) -> None:
        if self.started:
            for listener in list(_LISTENERS):
                listener(self)

    def __enter__(self) -> Progress:
        self.started = True
        self._changed()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.finished = True
        self._changed()
        self.started = False

    def __repr__(self) -> str:
        total = "?" if self.total is None else self.total
        state = " finished" if self.finished else ""
        return f"<Progress {self.description!r} {self.completed}/{total}{state}>"


@asynccontextmanager
async def track(
    runtime: Runtime,
    description: str = "jobs",
    total: int | None = None,
    *,
    interval: float = 0.1,
) -> AsyncIterator[Progress]:
    """A :class:`Progress` following ``runtime``'s results from now on, read every ``interval`` s.

    ``completed`` counts the results (successes, failures and skips) of every run
    on ``runtime`` since the block began; ``total`` defaults to the jobs sent since
    then, so it grows as a directive feeds (a fold's combine jobs count too).
    Errors of the block leave it as themselves, not wrapped in a group.
    """
    base = runtime.statistics()

    def read() -> tuple[int, int | None]:
        now = runtime.statistics()
        done = now.results - base.results
        sent = now.jobs_sent - base.jobs_sent
        if total is not None:
            return done, total
        # nothing sent yet: the total is unknown, not zero (a zero total reads as "all done")
        return done, (max(sent, done) or None)

    with Progress(description, total) as progress:

        async def follow() -> None:
            while True:
                progress.update(*read())
                await trio.sleep(interval)

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(follow)
                try:
                    yield progress
                finally:
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:  # the block's own error, not wrapped in a group
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        progress.update(*read())
