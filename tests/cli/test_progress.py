"""Progress of directive runs: the hook in ``wireframe.jobs``, the bars that ``wireframe.cli`` draws."""

from __future__ import annotations

import io

import attrs
import trio
from rich.console import Console

import wireframe as wf
from wireframe import jobs
from wireframe.cli import progress
from wireframe.cli.live import Snapshot, render_status


@attrs.frozen
class Double(jobs.Operation[int, int], name="tests.cli.double", executor="inline"):
    """x -> 2x."""

    def execute(self, x: int) -> int:
        return 2 * x


def _console(width: int = 100) -> Console:
    return Console(file=io.StringIO(), width=width, force_terminal=True, record=True)


def _text(*renderables: object, width: int = 120) -> str:
    console = _console(width)
    console.print(*renderables)
    return console.export_text()


def test_a_bar_draws_completed_of_total_rate_and_eta() -> None:
    console = _console()
    with progress.JobProgress("squares", console=console) as bar:
        bar.update(3, total=10)
        bar.advance(2)
        assert (bar.completed, bar.total) == (5, 10)
    text = console.export_text()
    assert "squares" in text and "5/10" in text and "jobs/s" in text and "eta" in text


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_elapsed_and_eta_move_when_the_total_started_at_zero_or_was_reached() -> None:
    """Fault 15: rich marked the bar finished when completed first reached the total (0 of 0
    before any job was sent, or every sent job answered while the feed went on), which froze
    elapsed and ETA at 0:00:00."""
    clock = FakeClock()
    bar = progress.JobProgress("primes", get_time=clock)
    bar.update(0, total=0)
    clock.now = 10.0
    bar.update(10, total=10)  # everything sent so far is done: not the end
    clock.now = 25.0
    bar.update(25, total=40)  # 15 more in 15 s: 1 job/s, 15 to go
    text = _text(bar)
    assert "25/40" in text
    assert "1.0 jobs/s 0:00:25 eta 0:00:15" in text, text


def test_the_live_view_draws_a_jobs_progress_with_moving_elapsed_and_eta() -> None:
    clock = FakeClock()
    with progress.hosted(get_time=clock) as bars, jobs.Progress("primes") as p:
        p.update(0)
        clock.now = 10.0
        p.update(10, total=10)  # all sent so far are done while the feed goes on
        clock.now = 25.0
        p.update(25, total=40)
        report = wf.ServiceReport({}, started_at=0.0)
        snap = Snapshot("svc", "running", report, 25.0, True, 5.0, extra=tuple(bars.renderables()))
        text = _text(render_status(snap))
    assert "primes" in text and "25/40" in text
    assert "1.0 jobs/s 0:00:25 eta 0:00:15" in text, text
    assert bars.renderables() == []  # a finished progress's bar goes away


def test_listeners_hear_a_progress_start_change_and_finish() -> None:
    heard: list[tuple[int, int | None, bool]] = []
    remove = jobs.add_progress_listener(lambda p: heard.append((p.completed, p.total, p.finished)))
    try:
        jobs.Progress("unentered").update(1)  # not started: nobody hears of it
        with jobs.Progress("x", total=3) as p:
            p.advance()
            p.update(3)
    finally:
        remove()
    remove()  # idempotent
    assert heard == [(0, 3, False), (1, 3, False), (3, 3, False), (3, 3, True)]


async def test_track_follows_a_directive_run_on_the_runtime() -> None:
    seen: list[tuple[int, int | None]] = []
    remove = jobs.add_progress_listener(lambda p: seen.append((p.completed, p.total)))
    try:
        async with jobs.connect("memory://cli-progress?workers=2") as rt:
            async with jobs.track(rt, "doubling", interval=0.01) as p:
                values = await jobs.from_iter(range(40)).map(Double()).collect().run(rt, timeout=30)
            assert values == [2 * x for x in range(40)]
            assert (p.completed, p.total, p.finished) == (40, 40, True)
    finally:
        remove()
    assert seen[0] == (0, None), "nothing sent yet: the total is unknown, not 0"
    assert seen[-1] == (40, 40)


async def test_track_raises_the_block_s_own_error_not_a_group() -> None:
    async with jobs.connect("memory://cli-progress-error?workers=1") as rt:
        try:
            async with jobs.track(rt, "x"):
                raise KeyError("mine")
        except KeyError as exc:
            assert exc.args == ("mine",)
        else:  # pragma: no cover
            raise AssertionError("the KeyError was swallowed")


@attrs.frozen
class Slow(jobs.Operation[int, int], name="tests.cli.slow-progress", executor="inline"):
    """Ten seconds (of trio's clock) per job."""

    async def execute(self, x: int) -> int:
        await trio.sleep(10)
        return x


async def test_a_tracked_run_shows_in_a_live_view_on_trio_s_clock(
    autojump_clock: trio.abc.Clock,
) -> None:
    """The view's bars run on trio's clock: on the MockClock a slow run shows its time."""
    frames: list[str] = []
    with progress.hosted(get_time=trio.current_time) as bars:
        async with (
            jobs.connect("memory://cli-progress-clock?workers=1") as rt,
            trio.open_nursery() as nursery,
        ):

            async def look() -> None:
                await trio.sleep(35)  # three jobs done, the fourth running
                frames.append(_text(*bars.renderables()))

            nursery.start_soon(look)
            async with jobs.track(rt, "slow", interval=1.0):
                run = jobs.from_iter(range(6)).map(Slow()).collect()
                await run.run(rt, max_in_flight=1, timeout=600)
    (frame,) = frames
    assert "3/4" in frame and "0:00:35" in frame, frame
    assert "eta -:--:--" not in frame and "eta 0:00:00" not in frame, frame


def test_bars_are_hosted_by_a_live_view_instead_of_drawing_themselves() -> None:
    console = _console()
    with progress.hosted() as bars:
        with jobs.Progress("hosted", total=4) as p:
            p.update(1)
            assert len(bars.bars) == 1 and bars.renderables()
        assert bars.renderables() == []
    assert console.export_text() == ""  # nothing drew on its own
