"""Run a service under a status view, with Ctrl-C handled the way a terminal user expects.

One trio nursery holds the service's run, the signal watcher, the view's
redraw loop and the queue pollers; when the run ends, the rest is cancelled.
The first SIGINT/SIGTERM asks the service to stop (the view then counts down
the grace period), a second one forces it. The outcome carries the exit code:
0 clean stop, 1 a task (or shutdown step) failed or timed out, 2 wiring error.
"""

from __future__ import annotations

import contextlib
import signal
import threading
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

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_WIRING", "Outcome", "run_with_view"]

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


async def _watch_signals(
    on_signal: Callable[[str], None],
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            on_signal(signal.Signals(signum).name)


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

    ``queue_urls`` are brokers whose per-queue counts the view polls. Signals
    are handled only on the main thread. The caller prints the outcome, in which
    any message quoting one of ``queue_urls`` as written shows it masked.
    """
    wall_offset = time.time() - trio.current_time()
    stop_requests = 0
    changed = trio.Event()
    wired = trio.Event()
    watches = [QueueWatch(url, interval=poll_interval) for url in queue_urls]

    def say(line: str) -> None:
        try:
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        except OSError:  # a closed pipe must not break the service's own bookkeeping
            pass

    def on_change(report: wf.TaskReport) -> None:
        wired.set()  # tasks exist: every layer is wired (its broker connection open)
        if live:
            changed.set()
        else:
            say(plain_line(report))

    def on_signal(name: str) -> None:
        nonlocal stop_requests
        stop_requests += 1
        if stop_requests == 1:
            service.stop(f"received {name}")
            message = (
                f"received {name}: stopping gracefully "
                f"({service.graceful_shutdown_timeout:g} s grace period); again to force"
            )
        else:
            service.stop(f"received {name} again")
            message = f"received {name} again: forcing the stop (cancelling tasks)"
        if live:
            changed.set()
        else:
            say(message)

    service.add_listener(on_change)
    outcome: Outcome | None = None
    with progress.hosted(get_time=trio.current_time) as bars, _display(console, live) as display:

        def draw() -> None:
            if display is not None:
                display.update(
                    render_status(
                        snapshot(
                            service,
                            title=title,
                            now=trio.current_time(),
                            stop_requests=stop_requests,
                            queues=[w.view for w in watches],
                            extra=bars.renderables(),
                        )
                    ),
                    refresh=True,
                )

        async def redraw() -> None:
            nonlocal changed
            while True:
                draw()
                with trio.move_on_after(refresh_interval):
                    await changed.wait()
                changed = trio.Event()

        async with trio.open_nursery() as nursery:
            if handle_signals and threading.current_thread() is threading.main_thread():
                await nursery.start(_watch_signals, on_signal)
            for watch in watches:
                nursery.start_soon(_after, wired, watch.run)
            if display is not None:
                nursery.start_soon(redraw)
            try:
                report = await service.run()
                outcome = Outcome(EXIT_OK, report)
            except wf.WiringError as exc:
                outcome = Outcome(EXIT_WIRING, problems=exc.problems, message=str(exc))
            except wf.ServiceError as exc:
                outcome = Outcome(EXIT_FAILED, exc.report, message=str(exc))
            finally:
                nursery.cancel_scope.cancel()
        draw()
    assert outcome is not None
    return attrs.evolve(_hide_urls(outcome, queue_urls), wall_offset=wall_offset)


def _hide_urls(outcome: Outcome, urls: Sequence[str]) -> Outcome:
    """The outcome with the brokers' URLs masked wherever a message quotes one as written."""
    return attrs.evolve(
        outcome,
        report=None if outcome.report is None else hide_urls_in_report(outcome.report, urls),
        problems=hide_urls_in_problems(outcome.problems, urls),
        message=None if outcome.message is None else hide_urls(outcome.message, urls),
    )
