"""``wireframe run``: exit codes 0/1/2, the final report as a table or JSON, the plain log lines.

In-process through typer's CliRunner (stdout is not a terminal there, so the
view is plain lines), and as real subprocesses: ``--json`` on hello, a wiring
error, and SIGINT after the ready line.
"""

from __future__ import annotations

import json
import signal
import socket
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
from clikit import SERVICES, interrupt, read_until, run_wireframe, start_wireframe
from typer.testing import CliRunner

from wireframe.cli import app

runner = CliRunner()
QUICK = str(SERVICES / "cli_quick.py")
FAILING = str(SERVICES / "cli_failing.py")
WIRING = str(SERVICES / "cli_wiring.py")


def test_clean_stop_exits_0_with_a_report_table_and_plain_lines() -> None:
    result = runner.invoke(app, ["run", QUICK])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "task 'main' (Task, layer quick) running" in out  # one line per state change
    assert "task 'main' (Task, layer quick) finished" in out
    assert "main: ran" in out  # the service's own output
    assert "clean stop (exit 0)" in out
    assert "stopped because: task 'main' returned" in out


def test_json_report_parses_and_matches_the_run() -> None:
    result = runner.invoke(app, ["run", QUICK, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # stdout holds only the JSON
    assert data["ok"] is True and data["exit_code"] == 0 and data["failures"] == []
    assert data["stop_reason"] == "task 'main' returned"
    states = {tid: t["state"] for tid, t in data["tasks"].items()}
    # the oneshot races the Task that returns: it may see the stop before it starts
    assert states.pop("setup") in ("finished", "stopped")
    assert states == {"ready-check": "finished", "main": "finished"}
    kinds = {tid: t["kind"] for tid, t in data["tasks"].items()}
    assert kinds == {"ready-check": "Precondition", "setup": "OneshotTask", "main": "Task"}
    assert all(t["layer"] == "quick" for t in data["tasks"].values())
    assert "task 'main'" in result.stderr  # the status lines went to stderr
    assert "main: ran" in result.stderr  # and so did the service's own prints


def test_json_times_are_wall_clock_iso_8601_in_utc_and_durations_are_seconds() -> None:
    """Fault 15: the times were trio clock readings (seconds since an arbitrary origin)."""
    before = datetime.now(UTC)
    result = runner.invoke(app, ["run", QUICK, "--json"])
    after = datetime.now(UTC)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    slack = timedelta(seconds=1)  # the mapping to the wall clock is exact to well under this

    def wall(text: str) -> datetime:
        moment = datetime.fromisoformat(text)
        assert moment.utcoffset() == timedelta(0), text  # UTC, and it says so
        assert before - slack <= moment <= after + slack, (before, text, after)
        return moment

    started, ended = wall(data["started_at"]), wall(data["ended_at"])
    assert started <= ended and data["seconds"] >= 0
    main = data["tasks"]["main"]
    assert started <= wall(main["started_at"]) <= wall(main["ended_at"]) <= ended
    assert 0 <= main["seconds"] <= data["seconds"]


def test_a_failed_task_exits_1_and_names_it() -> None:
    result = runner.invoke(app, ["run", f"{FAILING}:failing"])
    assert result.exit_code == 1, result.output
    assert "service failed (exit 1)" in result.stdout
    assert "second line of the message" in result.stdout  # the error's last line
    as_json = runner.invoke(app, ["run", f"{FAILING}:failing", "--json"])
    assert as_json.exit_code == 1
    data = json.loads(as_json.stdout)
    assert data["ok"] is False and data["exit_code"] == 1
    boom = data["tasks"]["boom"]
    assert boom["state"] == "failed"
    assert boom["error"]["type"] == "ValueError"
    assert "the disk is full" in boom["error"]["message"]
    assert "ValueError" in boom["error"]["traceback"]


def test_graceful_timeout_option_cancels_a_stubborn_task_and_exits_1() -> None:
    result = runner.invoke(
        app, ["run", f"{FAILING}:make_stubborn", "--graceful-timeout", "0.05", "--json"]
    )
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert data["tasks"]["stubborn"]["state"] == "timed_out"
    assert "0.05 s grace period" in data["tasks"]["stubborn"]["error"]["message"]
    assert data["tasks"]["returns"]["state"] == "finished"


def test_wiring_errors_exit_2_listing_every_problem_with_layer_and_resource() -> None:
    result = runner.invoke(app, ["run", f"{WIRING}:broken", "--json"])
    assert result.exit_code == 2, result.output
    problems = json.loads(result.stdout)["wiring_problems"]
    assert {(p["layer"], p["resource"]) for p in problems} == {
        ("api", "Database"),
        ("cache", "Cache"),
    }
    table = runner.invoke(app, ["run", f"{WIRING}:broken"])
    assert table.exit_code == 2
    assert "2 wiring problems" in table.stdout
    assert "api" in table.stdout and "Database" in table.stdout


def test_a_wire_that_raises_exits_2_naming_the_layer() -> None:
    result = runner.invoke(app, ["run", f"{WIRING}:raising", "--json"])
    assert result.exit_code == 2, result.output
    (problem,) = json.loads(result.stdout)["wiring_problems"]
    assert problem["layer"] == "flaky-db"
    assert "ConnectionError: database refused the connection" in problem["message"]


def test_a_target_that_cannot_be_loaded_exits_2() -> None:
    result = runner.invoke(app, ["run", str(SERVICES / "cli_choices.py")])
    assert result.exit_code == 2
    assert "several services" in result.stderr


def test_log_level_is_validated() -> None:
    result = runner.invoke(app, ["run", QUICK, "--log-level", "loud"])
    assert result.exit_code == 2
    ok = runner.invoke(app, ["run", QUICK, "--log-level", "DEBUG"])
    assert ok.exit_code == 0, ok.output


@pytest.mark.slow
def test_subprocess_json_report_of_hello() -> None:
    proc = run_wireframe("run", "examples/hello.py", "--json", HELLO_SECONDS="0.3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(proc.stdout)
    assert data["ok"] is True
    assert {t["id"]: t["state"] for t in data["tasks"].values()} == {
        "warm-up": "finished",
        "greeter": "stopped",
        "watchdog": "finished",
        "announce": "finished",
        "banner": "finished",
    }
    assert "config: closed" in proc.stderr  # the layer's teardown ran


@pytest.mark.slow
def test_subprocess_wiring_error_exits_2_and_names_the_layer() -> None:
    proc = run_wireframe("run", f"{WIRING}:broken")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "api" in proc.stdout and "takes resource Database" in proc.stdout


@pytest.mark.slow
def test_subprocess_second_sigint_skips_the_grace_period() -> None:
    proc = start_wireframe("run", f"{FAILING}:deaf", "--plain")
    rest = interrupt(
        proc,
        "task 'stubborn' (UnconstrainedTask, layer deaf) running",
        "received SIGINT: stopping gracefully (3600 s grace period); again to force",
    )
    assert proc.returncode == 1, rest
    assert "received SIGINT again: forcing the stop (cancelling tasks)" in rest
    assert "task 'stubborn' was cancelled by a second stop request" in rest


@pytest.mark.slow
def test_subprocess_sigint_after_a_task_stopped_the_service_says_it_forces() -> None:
    """A task's return began the stop: the first Ctrl-C already cancels what still runs."""
    proc = start_wireframe("run", f"{FAILING}:make_stubborn", "--plain")
    rest = interrupt(proc, "task 'returns' (Task, layer stubborn) finished")  # 30 s grace
    assert proc.returncode == 1, rest
    assert "received SIGINT: forcing the stop (cancelling tasks)" in rest
    assert "stopping gracefully" not in rest
    assert "task 'stubborn' was cancelled by a second stop request" in rest


@pytest.mark.slow
def test_subprocess_sigint_stops_cleanly_with_exit_0() -> None:
    proc = start_wireframe("run", "examples/hello.py", "--plain")
    rest = interrupt(proc, "ready: greeter running")
    assert proc.returncode == 0, rest
    assert "received SIGINT: stopping gracefully (5 s grace period); again to force" in rest
    assert "task 'greeter' (Task, layer hello) stopped" in rest
    assert "stopped because: received SIGINT" in rest
    assert "clean stop (exit 0)" in rest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_subprocess_health_port_serves_readyz_and_status() -> None:
    port = _free_port()
    proc = start_wireframe("run", "examples/hello.py", "--plain", "--health-port", str(port))
    try:
        before = "".join(read_until(proc, "ready: greeter running"))
        assert f"health endpoints: http://127.0.0.1:{port}/livez" in before
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as reply:
            assert reply.status == 200
            assert json.loads(reply.read())["ready"] is True
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=10) as reply:
            tasks = json.loads(reply.read())["tasks"]
        assert tasks["greeter"]["state"] == "running"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
            assert b"wireframe_task_restarts" in reply.read()  # telemetry came along
    finally:
        proc.send_signal(signal.SIGINT)
        rest = interrupt(proc)
    assert proc.returncode == 0, rest
