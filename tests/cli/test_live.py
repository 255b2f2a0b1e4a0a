"""The live view: renders at narrow and wide widths in every phase, and drives a real run.

Rendering is a pure function of a :class:`Snapshot`, checked on rich consoles
that record to a string at 40 and 200 columns. One test runs a real service
under the live display on a forced-terminal console; the last checks the
plain one-line form.
"""

from __future__ import annotations

import io

import pytest
import trio
from clikit import SERVICES
from rich.console import Console

import wireframe as wf
from wireframe import jobs
from wireframe.cli import progress
from wireframe.cli.live import QueueView, Snapshot, plain_line, render_status
from wireframe.cli.runner import run_with_view
from wireframe.cli.target import load_target
from wireframe.jobs.broker import QueueStats

K = wf.TaskKind
S = wf.TaskState


def _report(stop_reason: str | None = None) -> wf.ServiceReport:
    boom = wf.ErrorInfo("ValueError", "bad input\nthe last line says why", "Traceback ...")
    tasks = [
        wf.TaskReport("warm-up", K.PRECONDITION, "hello", S.FINISHED, 0.0, 0.05),
        wf.TaskReport("greeter-with-a-rather-long-identifier", K.TASK, "hello", S.RUNNING, 0.05),
        wf.TaskReport("announce", K.ONESHOT, "hello", S.WAITING),
        wf.TaskReport("worker", K.UNCONSTRAINED, "jobs", S.FAILED, 0.0, 1.0, boom),
        wf.TaskReport("banner", K.UNCONSTRAINED_ONESHOT, "hello", S.TIMED_OUT, 0.0, 2.0),
    ]
    return wf.ServiceReport({t.id: t for t in tasks}, stop_reason=stop_reason, started_at=0.0)


QUEUES = QueueView(
    "redis://:secret@127.0.0.1:6379/0",
    (QueueStats("default", 12, 4, 1500, 2), QueueStats("emails", 0, 0, 3, 0)),
    {"default": 250.0},
    polled=True,
)

SNAPSHOTS = {
    "wiring": Snapshot("svc", "wiring", wf.ServiceReport({}), 0.1, False, 30.0),
    "running": Snapshot("svc", "running", _report(), 3723.0, True, 30.0, queues=(QUEUES,)),
    "barrier": Snapshot("svc", "running", _report(), 1.0, False, 30.0),
    "stopping": Snapshot(
        "svc", "stopping", _report("received SIGINT"), 12.0, True, 30.0, 27.5, 1, (QUEUES,)
    ),
    "forcing": Snapshot("svc", "stopping", _report("received SIGINT"), 12.0, True, 30.0, 27.5, 2),
    "unreachable": Snapshot(
        "svc",
        "running",
        _report(),
        5.0,
        True,
        30.0,
        queues=(QueueView("sqlite:///x", error="unavailable (x)"),),
    ),
    "done": Snapshot("svc", "done", _report("task 'x' returned"), 20.0, True, 30.0),
}


def render(snapshot: Snapshot, width: int) -> str:
    console = Console(file=io.StringIO(), width=width, record=True, force_terminal=True)
    console.print(render_status(snapshot))
    return console.export_text()


@pytest.mark.parametrize("width", [40, 200])
@pytest.mark.parametrize("name", sorted(SNAPSHOTS))
def test_renders_at_narrow_and_wide_widths(name: str, width: int) -> None:
    text = render(SNAPSHOTS[name], width)
    assert all(len(line) <= width for line in text.splitlines())
    assert "svc" in text


def test_wide_view_shows_tasks_states_errors_queues_and_the_barrier() -> None:
    text = render(SNAPSHOTS["running"], 200)
    assert "greeter-with-a-rather-long-identifier" in text
    for state in ("finished", "running", "waiting", "failed", "timed_out"):
        assert state in text
    assert "the last line says why" in text and "bad input" not in text
    assert "barrier open" in text
    assert "1h02m" in text  # uptime of the running task: 3723 - 0.05 s
    assert "queues on redis://:***@127.0.0.1:6379/0" in text and "secret" not in text
    assert "1500" in text and "250.0" in text
    assert "Ctrl-C to stop gracefully (30 s grace period)" in text


def test_a_queue_with_work_and_no_live_worker_is_called_out() -> None:
    text = render(SNAPSHOTS["running"], 200)
    assert "no live worker consumes queue 'default' (12 queued)" in text
    assert "wireframe worker --broker redis://:***@127.0.0.1:6379/0 --import MODULE" in text
    assert "'emails'" not in text, "a queue with nothing queued needs no worker"
    assert "secret" not in text
    served = QueueView(QUEUES.url, (QueueStats("default", 12, 4, 1500, 2, workers=3),), polled=True)
    text = render(Snapshot("svc", "running", _report(), 1.0, True, 30.0, queues=(served,)), 200)
    assert "no live worker" not in text
    assert " 3 " in text  # the workers column


def test_closed_barrier_and_the_stop_countdown() -> None:
    assert "barrier closed: 0 precondition(s) pending" in render(SNAPSHOTS["barrier"], 200)
    stopping = render(SNAPSHOTS["stopping"], 200)
    assert "stopping: received SIGINT" in stopping
    assert "27.5 s of the 30 s grace period left" in stopping
    assert "Ctrl-C again to force" in stopping
    assert "forcing" in render(SNAPSHOTS["forcing"], 200)
    assert "unavailable (x)" in render(SNAPSHOTS["unreachable"], 200)


def test_hosted_progress_bars_render_inside_the_view() -> None:
    with progress.hosted() as bars, jobs.Progress("squares", total=10) as p:
        p.update(4)
        snap = Snapshot(
            "svc", "running", _report(), 1.0, True, 5.0, extra=tuple(bars.renderables())
        )
        text = render(snap, 120)
    assert "squares" in text and "4/10" in text


async def test_a_real_run_under_the_live_display_on_a_terminal() -> None:
    target = load_target(str(SERVICES / "cli_quick.py"))
    out = io.StringIO()
    console = Console(file=out, width=60, force_terminal=True, record=True)
    outcome = await run_with_view(
        target.make_service(), console, title="quick", live=True, handle_signals=False
    )
    assert outcome.exit_code == 0
    assert outcome.report is not None and outcome.report.tasks["main"].state is S.FINISHED
    drawn = out.getvalue()
    assert "quick" in drawn and "\x1b[" in drawn  # frames with cursor control were drawn


async def test_queue_counts_are_polled_while_a_job_runtime_runs(tmp_path: object) -> None:
    url = f"memory://cli-live-{id(tmp_path)}"
    builder = wf.ServiceBuilder(graceful_shutdown_timeout=1.0).add_layer(jobs.JobRuntimeLayer(url))
    service = builder.build()
    console = Console(file=io.StringIO(), width=100, force_terminal=True, record=True)
    frames: list[str] = []

    async def stop_after_a_poll() -> None:
        await trio.sleep(0.3)
        frames.append("polled")
        service.stop("test over")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop_after_a_poll)
        outcome = await run_with_view(
            service,
            console,
            title="rt",
            live=True,
            queue_urls=[url],
            handle_signals=False,
            poll_interval=0.05,
        )
    assert outcome.exit_code == 0, outcome.message
    assert frames == ["polled"]
    drawn = console.export_text()
    assert f"queues on {url}" in drawn and "done/s" in drawn


def test_plain_line_names_task_kind_layer_state_and_error() -> None:
    report = _report().tasks["worker"]
    line = plain_line(report, wall=0.25)
    assert line.endswith(
        "task 'worker' (UnconstrainedTask, layer jobs) failed: the last line says why"
    )
    assert line[8:12] == ".250"
