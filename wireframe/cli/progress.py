"""Progress bars for directive runs: the rich side of :mod:`wireframe.jobs.progress`.

Code that runs directives reports progress through the job runtime's hook
(``async with jobs.track(runtime, "primes"): ...``), which knows nothing of
terminals. This module draws it:

* :class:`JobProgress` is one rich bar — description, completed/total, jobs per
  second, elapsed time and ETA — fed by :meth:`JobProgress.update`. Entered as a
  context manager it draws itself (no refresh thread: it redraws on updates, at
  most ten times a second), for scripts.
* :class:`ProgressBars` listens to every :class:`~wireframe.jobs.Progress` and
  keeps one bar per progress that has not finished; :func:`hosted` installs one
  for as long as a live view runs, and the view draws its bars under the task
  table (a terminal has room for one live display).

A bar measures elapsed time and rate on the clock it is given (``get_time``):
``wireframe run`` passes trio's, so a test on trio's ``MockClock`` sees them move.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType

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

from wireframe.jobs.progress import Progress as JobsProgress
from wireframe.jobs.progress import add_progress_listener

__all__ = ["JobProgress", "ProgressBars", "hosted"]


class _RateColumn(ProgressColumn):
    """Jobs per second, from rich's own speed estimate."""

    def render(self, task: Task) -> Text:
        speed = task.speed
        return Text("-- jobs/s" if speed is None else f"{speed:,.1f} jobs/s", style="cyan")


class JobProgress:
    """One bar: ``description``, completed/total jobs, jobs per second, elapsed and ETA.

    Feed it with :meth:`update` or :meth:`advance`; ``total`` may be unknown
    (``None``) at first and grow later. As a context manager it draws itself on
    ``console``; a :class:`ProgressBars` host renders it instead.
    """

    def __init__(
        self,
        description: str = "jobs",
        total: int | None = None,
        *,
        console: Console | None = None,
        max_refresh_per_second: float = 10.0,
        get_time: Callable[[], float] | None = None,
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
            get_time=get_time,
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
        task = self.progress.tasks[0]
        if total is not None:
            # set directly: rich's update(total=...) resets the speed samples on every change,
            # and a directive's total grows while it feeds
            task.total = float(total)
        self.progress.update(self.task, completed=completed)
        self._unfinish(task)
        self._draw()

    def advance(self, n: int = 1) -> None:
        """``n`` more jobs completed."""
        self.progress.advance(self.task, n)
        self._draw()

    @staticmethod
    def _unfinish(task: Task) -> None:
        # rich marks a task finished, for good, the first time completed reaches total; with a
        # total that grows (or starts at 0) that froze elapsed and ETA at 0:00:00
        if task.total is not None and task.completed < task.total:
            task.finished_time = None
            task.finished_speed = None

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
        self._own_display = True
        self.progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._own_display:
            self._draw(force=True)
            self.progress.stop()
            self._own_display = False


class ProgressBars:
    """A :mod:`wireframe.jobs.progress` listener keeping one bar per running progress.

    Call it with a progress (that is what a listener is); :meth:`renderables`
    gives the bars to draw, in the order their progresses started. A finished
    progress's bar goes away.
    """

    def __init__(self, *, get_time: Callable[[], float] | None = None) -> None:
        self.get_time = get_time
        self.bars: dict[JobsProgress, JobProgress] = {}

    def __call__(self, progress: JobsProgress) -> None:
        if progress.finished:
            self.bars.pop(progress, None)
            return
        bar = self.bars.get(progress)
        if bar is None:
            bar = JobProgress(progress.description, progress.total, get_time=self.get_time)
            self.bars[progress] = bar
        bar.update(progress.completed, progress.total)

    def renderables(self) -> list[RenderableType]:
        """The bars as renderables (an empty list when no progress runs)."""
        if not self.bars:
            return []
        return [Group(*(bar.progress.get_renderable() for bar in self.bars.values()))]


@contextmanager
def hosted(*, get_time: Callable[[], float] | None = None) -> Iterator[ProgressBars]:
    """While inside, every :class:`~wireframe.jobs.Progress` gets a bar in the yielded host.

    A live view draws ``host.renderables()``; ``get_time`` is the bars' clock
    (default: the monotonic clock).
    """
    bars = ProgressBars(get_time=get_time)
    remove = add_progress_listener(bars)
    try:
        yield bars
    finally:
        remove()
