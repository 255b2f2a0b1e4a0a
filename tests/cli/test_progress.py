"""Progress bars for directive runs: fed by a callback, or following a runtime's counters."""

from __future__ import annotations

import io

import attrs
from rich.console import Console

from wireframe import jobs
from wireframe.cli import progress


@attrs.frozen
class Double(jobs.Operation[int, int], name="tests.cli.double", executor="inline"):
    """x -> 2x."""

    def execute(self, x: int) -> int:
        return 2 * x


def _console() -> Console:
    return Console(file=io.StringIO(), width=100, force_terminal=True, record=True)


def test_the_callback_draws_completed_of_total_rate_and_eta() -> None:
    console = _console()
    with progress.JobProgress("squares", console=console) as bar:
        bar.update(3, total=10)
        bar.advance(2)
        assert (bar.completed, bar.total) == (5, 10)
    text = console.export_text()
    assert "squares" in text and "5/10" in text and "jobs/s" in text and "eta" in text


async def test_track_follows_a_directive_run_on_the_runtime() -> None:
    console = _console()
    async with jobs.connect("memory://cli-progress?workers=2") as rt:
        async with progress.track(rt, "doubling", console=console, interval=0.01) as bar:
            values = await jobs.from_iter(range(40)).map(Double()).collect().run(rt, timeout=30)
        assert values == [2 * x for x in range(40)]
        assert (bar.completed, bar.total) == (40, 40)
    assert "40/40" in console.export_text()


async def test_track_raises_the_block_s_own_error_not_a_group() -> None:
    async with jobs.connect("memory://cli-progress-error?workers=1") as rt:
        try:
            async with progress.track(rt, "x", console=_console()):
                raise KeyError("mine")
        except KeyError as exc:
            assert exc.args == ("mine",)
        else:  # pragma: no cover
            raise AssertionError("the KeyError was swallowed")


def test_bars_are_hosted_by_a_live_view_instead_of_drawing_themselves() -> None:
    console = _console()
    with progress.hosted() as bars:
        with progress.JobProgress("hosted", total=4, console=console) as bar:
            bar.update(1)
            assert bars == [bar]
            assert progress.hosted_bars(bars)
        assert bars == []
    assert console.export_text() == ""  # it never drew on its own
