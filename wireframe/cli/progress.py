"""A progress bar for directive runs: completed/total jobs, rate and ETA, fed by a callback.

:class:`JobProgress` is a rich progress bar whose :meth:`JobProgress.update`
(``completed, total``) is the callback a directive run — or anything counting
jobs — feeds. :func:`track` feeds one from a :class:`~wireframe.jobs.Runtime`'s
counters instead, so any directive run shows progress without a hook::

    async with progress.track(runtime, "squares"):
        squares = await jobs.from_iter(xs).map(Square()).collect().run(runtime)

Outside ``wireframe run`` the bar draws itself (no refresh thread: it redraws
on updates, at most ten times a second). Under ``wireframe run``'s live view,
the view hosts the bars and draws them under its task table, since a terminal
has room for one live display.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from types import TracebackType
from typing import TYPE_CHECKING

import trio
from rich.console import Console, Group, RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

if TYPE_CHECKING:
    from wireframe.jobs.runtime import Runtime

__all__ = ["JobProgress", "hosted", "hosted_bars", "track"]

_HOSTS: list[list[JobProgress]] = []  # a live view that draws the bars; the innermost wins


class _RateColumn(ProgressColumn):
    """Jobs per second, from rich's own speed estimate."""

    def render(self, task: Task) -> Text:
        speed = task.speed
        return Text("-- jobs/s" if speed is None else f"{speed:,.1f} jobs/s", style="cyan")


class JobProgress:
    """One bar: ``description``, completed/total jobs, jobs per second, elapsed and ETA.

    Use as a context manager; feed it with :meth:`update` or :meth:`advance`.
    ``total`` may be unknown (``None``) at first and grow later.
    """

    def __init__(
        self,
        description: str = "jobs",
        total: int | None = None,
        *,
        console: Console | None = None,
        max_refresh_per_second: float = 10.0,
    ) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            _RateColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            auto_refresh=False,
            transient=False,
        )
        self.task: TaskID = self.progress.add_task(description, total=total)
        self._own_display = False
        self._min_interval = 1.0 / max_refresh_per_second
        self._drawn = 0.0

    @property
    def completed(self) -> int:
        """Jobs completed so far."""
        return int(self.progress.tasks[0].completed)

    @property
    def total(self) -> int | None:
        """Jobs expected in all, if known."""
        total = self.progress.tasks[0].total
        return None if total is None else int(total)

    def update(self, completed: int, total: int | None = None) -> None:
        """The progress callback: ``completed`` jobs so far, of ``total`` (if known)."""
        if total is not None:
            # set directly: rich's update(total=...) resets the speed samples on every change,
            # and a directive's total grows while it feeds
            self.progress.tasks[0].total = float(total)
        self.progress.update(self.task, completed=completed)
        self._draw()

    def advance(self, n: int = 1) -> None:
        """``n`` more jobs completed."""
        self.progress.advance(self.task, n)
        self._draw()

    def __rich__(self) -> RenderableType:
        return self.progress.get_renderable()

    def _draw(self, *, force: bool = False) -> None:
        if not self._own_display:
            return
        now = time.monotonic()
        if force or now - self._drawn >= self._min_interval:
            self._drawn = now
            self.progress.refresh()

    def __enter__(self) -> JobProgress:
        if _HOSTS:
            _HOSTS[-1].append(self)
        else:
            self._own_display = True
            self.progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for host in _HOSTS:
            if self in host:
                host.remove(self)
        if self._own_display:
            self._draw(force=True)
            self.progress.stop()
            self._own_display = False


@contextmanager
def hosted() -> Iterator[list[JobProgress]]:
    """While inside, new bars are drawn by the caller (a live view) instead of by themselves.

    Yields the list of active bars; :func:`hosted_bars` renders them.
    """
    bars: list[JobProgress] = []
    _HOSTS.append(bars)
    try:
        yield bars
    finally:
        _HOSTS.remove(bars)


def hosted_bars(bars: list[JobProgress]) -> list[RenderableType]:
    """The bars a live view hosts, as renderables (empty when none is active)."""
    return [Group(*(bar.progress.get_renderable() for bar in bars))] if bars else []


@asynccontextmanager
async def track(
    runtime: Runtime,
    description: str = "jobs",
    total: int | None = None,
    *,
    interval: float = 0.1,
    console: Console | None = None,
) -> AsyncIterator[JobProgress]:
    """A bar following ``runtime``'s results from now on, polled every ``interval`` seconds.

    ``total`` defaults to the jobs the runtime has sent since the block began
    (it grows as a directive feeds; a fold's combine jobs count too).
    """
    counters = runtime.counters
    base_sent, base_done = counters.jobs_sent, counters.results

    def read() -> tuple[int, int]:
        done = counters.results - base_done
        sent = counters.jobs_sent - base_sent
        return done, total if total is not None else max(sent, done)

    with JobProgress(description, total, console=console) as bar:

        async def follow() -> None:
            while True:
                bar.update(*read())
                await trio.sleep(interval)

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(follow)
                try:
                    yield bar
                finally:
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:  # the block's own error, not wrapped in a group
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        bar.update(*read())
