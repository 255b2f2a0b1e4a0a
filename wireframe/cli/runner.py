"""Run a service under a status view, with Ctrl-C handled the way a terminal user expects.

The service handles SIGINT/SIGTERM itself (the first asks it to stop, a second
one skips the grace period); the view only listens to its stop requests, to say
what happened and to count down the grace period. One trio nursery holds the
service's run, the view's redraw loop and the queue pollers; when the run ends,
the rest is cancelled. The outcome carries the exit code: 0 clean stop, 1 a task
(or shutdown step) failed or timed out, 2 wiring error.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence

import attrs
import trio
from rich.console import Console
from rich.live import Live

import wireframe as wf
from wireframe.cli import progress
from wireframe.cli.live import plain_line, render_status, snapshot
from wireframe.cli.queues import QueueWatch
from wireframe.cli.render import hide_urls, hide_urls_in_problems, hide_urls_in_report

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_WIRING", "Outcome", "run_with_view", "stop_message"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_WIRING = 2


@attrs.frozen
class Outcome:
    """How a run ended: the exit code and the report or the wiring problems."""

    exit_code: int
    report: wf.ServiceReport | None = None
    problems: tuple[wf.WiringProblem, ...] = ()
    message: str | None = None
    #: Wall-clock seconds minus trio-clock seconds: turns the report's times into wall times.
    wall_offset: float = 0.0


def stop_message(request: wf.StopRequest, grace: float) -> str:
    """The line a terminal user reads when a signal asked the service to stop.

    It says what the service did: a request that found the stop under way (a
    second Ctrl-C, or the first after a task's return began the stop) forced it.
    """
    if not request.forced:
        return f"{request.reason}: stopping gracefully ({grace:g} s grace period); again to force"
    again = " again" if request.number > 1 else ""
    return f"{request.reason}{again}: forcing the stop (cancelling tasks)"


async def _after(event: trio.Event, fn: Callable[[], Awaitable[None]]) -> None:
    """Run ``fn`` once ``event`` is set: the view opens its own broker connections only after
    the service's layers opened theirs (two first opens of one SQLite file may collide)."""
    await event.wait()
    await fn()


@contextlib.contextmanager
def _display(console: Console, live: bool) -> Iterator[Live | None]:
    if not live:
        yield None
        return
    with Live(
        console=console,
        auto_refresh=False,  # redrawn by a trio task: no refresh thread
        transient=True,  # the final report replaces the last frame
        redirect_stdout=True,
        redirect_stderr=True,
        vertical_overflow="visible",
    ) as display:
        yield display


class _View:
    """What the terminal shows of one run: a live table redrawn on changes, or plain lines.

    It follows the service through its listeners: task state changes and stop
    requests. ``wired`` is set once tasks exist, i.e. every layer is wired.
    """

    def __init__(
        self,
        service: wf.Service,
        console: Console,
        display: Live | None,
        *,
        title: str,
        watches: Sequence[QueueWatch],
        bars: progress.ProgressBars,
    ) -> None:
        self.service = service
        self.console = console
        self.display = display
        self.title = title
        self.watches = watches
        self.bars = bars
        self.wired = trio.Event()
        self._changed = trio.Event()
        service.add_listener(self._on_change)
        service.add_stop_listener(self._on_stop_request)

    def say(self, line: str) -> None:
        """Print one plain line; a closed pipe must not break the service's own bookkeeping."""
        try:
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)
        except OSError:
            pass

    def _on_change(self, report: wf.TaskReport) -> None:
        self.wired.set()  # tasks exist: every layer is wired (its broker connection open)
        if self.display is not None:
            self._changed.set()
        else:
            self.say(plain_line(report))

    def _on_stop_request(self, request: wf.StopRequest) -> None:
        if self.display is not None:
            self._changed.set()  # the footer counts down the grace period
        elif request.signal is not None:
            self.say(stop_message(request, self.service.graceful_shutdown_timeout))

    def draw(self) -> None:
        """Draw the live table now (nothing in plain mode)."""
        if self.display is None:
            return
        status = snapshot(
            self.service,
            title=self.title,
            now=trio.current_time(),
            queues=[w.view for w in self.watches],
            extra=self.bars.renderables(),
        )
        self.display.update(render_status(status), refresh=True)

    async def redraw(self, interval: float) -> None:
        """Draw every ``interval`` seconds, and at once after a change, until cancelled."""
        while True:
            self.draw()
            with trio.move_on_after(interval):
                await self._changed.wait()
            self._changed = trio.Event()


async def _run(service: wf.Service) -> Outcome:
    """Run ``service``; its report, or its wiring problems, with the exit code they mean."""
    try:
        return Outcome(EXIT_OK, await service.run())
    except wf.WiringError as exc:
        return Outcome(EXIT_WIRING, problems=exc.problems, message=str(exc))
    except wf.ServiceError as exc:
        return Outcome(EXIT_FAILED, exc.report, message=str(exc))


async def run_with_view(
    service: wf.Service,
    console: Console,
    *,
    title: str,
    live: bool,
    queue_urls: Sequence[str] = (),
    handle_signals: bool = True,
    refresh_interval: float = 0.25,
    poll_interval: float = 1.0,
) -> Outcome:
    """Run ``service`` showing a live table (``live``) or one line per state change.

    ``queue_urls`` are brokers whose per-queue counts the view polls.
    ``handle_signals`` is handed to the service, which handles signals only on
    the main thread. The caller prints the outcome, in which any message
    quoting one of ``queue_urls`` as written shows it masked.
    """
    wall_offset = time.time() - trio.current_time()
    service.handle_signals = handle_signals
    watches = [QueueWatch(url, interval=poll_interval) for url in queue_urls]
    with progress.hosted(get_time=trio.current_time) as bars, _display(console, live) as display:
        view = _View(service, console, display, title=title, watches=watches, bars=bars)
        async with trio.open_nursery() as nursery:
            for watch in watches:
                nursery.start_soon(_after, view.wired, watch.run)
            if display is not None:
                nursery.start_soon(view.redraw, refresh_interval)
            try:
                outcome = await _run(service)
            finally:
                nursery.cancel_scope.cancel()
        view.draw()
    return attrs.evolve(_hide_urls(outcome, queue_urls), wall_offset=wall_offset)


def _hide_urls(outcome: Outcome, urls: Sequence[str]) -> Outcome:
    """The outcome with the brokers' URLs masked wherever a message quotes one as written."""
    return attrs.evolve(
        outcome,
        report=None if outcome.report is None else hide_urls_in_report(outcome.report, urls),
        problems=hide_urls_in_problems(outcome.problems, urls),
        message=None if outcome.message is None else hide_urls(outcome.message, urls),
    )
