"""``wireframe worker``: imports the operations, serves under the view, stops cleanly on SIGINT."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import trio
from clikit import SERVICES, cli_env, interrupt, read_until, run_wireframe, start_wireframe
from typer.testing import CliRunner

from wireframe.cli import app

runner = CliRunner()


def _worker_running() -> bool:
    """Whether the CLI (inside CliRunner, which swapped sys.stderr) logged the worker running,
    with trio's signal receiver in place."""
    handler = signal.getsignal(signal.SIGINT)
    if not getattr(handler, "__qualname__", "").startswith("open_signal_receiver"):
        return False
    buffer = getattr(sys.stderr, "buffer", None)
    written = buffer.getvalue() if isinstance(buffer, io.BytesIO) else b""
    return b"(Task, layer worker:default) running" in written


def _sigint_once_the_worker_runs(done: threading.Event) -> None:
    """From a helper thread: wait until the worker task runs, then send SIGINT to this process."""
    deadline = time.monotonic() + 20
    while not _worker_running():
        if done.is_set() or time.monotonic() > deadline:
            return
        time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGINT)


def test_worker_in_process_stops_cleanly_on_sigint(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/jobs.db"
    done = threading.Event()
    sender = threading.Thread(target=_sigint_once_the_worker_runs, args=(done,))
    sender.start()
    try:
        result = runner.invoke(
            app,
            ["worker", "--broker", url, "--import", "examples/wordcount.py", "--json"],
            env={"WORDCOUNT_BROKER": url},
        )
    finally:
        done.set()
        sender.join()
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["stop_reason"] == "received SIGINT"
    assert data["tasks"]["worker:default"]["state"] == "stopped"
    assert "wordcount.count-words" in result.stderr  # the imported operations are listed


def test_worker_import_errors_exit_2() -> None:
    result = runner.invoke(app, ["worker", "--broker", "memory://", "--import", "no_such_mod_q"])
    assert result.exit_code == 2
    assert "--import no_such_mod_q: no module named 'no_such_mod_q'" in result.stderr
    missing = runner.invoke(app, ["worker", "--broker", "memory://"])
    assert missing.exit_code == 2  # --import is required


@pytest.mark.slow
def test_subprocess_worker_serves_two_queues_and_stops_on_sigint(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/jobs.db"
    proc = start_wireframe(
        "worker", "--broker", url, "-i", "examples/wordcount.py", "-q", "a", "-q", "b", "--plain"
    )
    rest = interrupt(proc, "(Task, layer worker:a) running")
    assert proc.returncode == 0, rest
    assert "task 'worker:b' (Task, layer worker:b) stopped" in rest
    assert "clean stop (exit 0)" in rest


@pytest.mark.slow
def test_python_dash_m_is_the_same_command() -> None:
    proc = run_wireframe("--help")
    assert proc.returncode == 0
    for command in ("run", "check", "graph", "worker", "jobs"):
        assert command in proc.stdout


SCRIPT_WITHOUT_NAMES = """
import sys

import attrs
import trio

from wireframe import jobs


@attrs.frozen
class AddOne(jobs.Operation[int, int]):  # no name=: its name is its qualname, "AddOne"
    def execute(self, x: int) -> int:
        return x + 1


async def main(url: str) -> None:
    async with jobs.connect(url) as rt:
        print(await jobs.from_iter(range(5)).map(AddOne()).collect().run(rt, timeout=60))


if __name__ == "__main__":
    trio.run(main, sys.argv[1])
"""


@pytest.mark.slow
def test_a_worker_importing_a_script_runs_what_the_script_sends(tmp_path: Path) -> None:
    """Fault 12 of issue 8: ``python svc.py`` sends ``AddOne`` defined in ``__main__``; the
    worker imported ``svc.py`` as a module. Both must call the operation ``AddOne``."""
    script = tmp_path / "svc.py"
    script.write_text(SCRIPT_WITHOUT_NAMES)
    url = f"sqlite:///{tmp_path}/jobs.db"
    worker = start_wireframe("worker", "--broker", url, "--import", str(script), "--plain")
    try:
        read_until(worker, "(Task, layer worker:default) running")
        sender = subprocess.run(
            [sys.executable, str(script), url],
            capture_output=True,
            text=True,
            timeout=90,
            env=cli_env(),
        )
        worker.send_signal(signal.SIGINT)
        rest, _ = worker.communicate(timeout=30)
    finally:
        worker.kill()
    assert sender.returncode == 0, sender.stderr
    assert sender.stdout.strip() == "[1, 2, 3, 4, 5]"
    assert worker.returncode == 0, rest


@pytest.mark.slow
def test_a_worker_process_gives_operations_the_resources_its_imports_declare(
    tmp_path: Path,
) -> None:
    """Fault 15: ``wireframe worker`` had no way to provide the resources operations take."""
    from wireframe import jobs
    from wireframe.cli.target import import_module

    module = import_module(str(SERVICES / "cli_worker_resources.py"))
    url = f"sqlite:///{tmp_path}/jobs.db"
    proc = start_wireframe(
        "worker", "--broker", url, "--import", str(SERVICES / "cli_worker_resources.py"),
        "--plain", GREETING="hi",
    )  # fmt: skip
    try:
        started = "".join(read_until(proc, "(Task, layer worker:default) running"))

        async def orchestrate() -> list[str]:
            async with jobs.connect(url) as rt:
                run = jobs.from_iter(["ada", "bob"]).map(module.Greet()).collect()
                return await run.run(rt, timeout=30)

        assert trio.run(orchestrate) == ["hi, ada", "hi, bob"]
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert "resources: Greeting" in started, started
    assert "warning: operation 'tests.cli.audit' takes log: AuditLog" in started, started
    assert proc.returncode == 0, rest
    assert "greeting layer closed" in rest  # the declared layer's lifetime closed at shutdown


def test_worker_layers_that_are_not_layers_are_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad_worker_layers.py"
    bad.write_text("import attrs\nclass L: ...\nWIREFRAME_WORKER_LAYERS = [L]\n", encoding="utf-8")
    result = runner.invoke(app, ["worker", "--broker", "memory://", "--import", str(bad)])
    assert result.exit_code == 2
    said = " ".join(result.stderr.split())
    assert "bad_worker_layers.WIREFRAME_WORKER_LAYERS[0] is a type, not a wiring layer" in said
    assert "(a class: write L(), not L)" in said
    bad = tmp_path / "bad_worker_layers_2.py"
    bad.write_text("WIREFRAME_WORKER_LAYERS = 'db'\n", encoding="utf-8")
    result = runner.invoke(app, ["worker", "--broker", "memory://", "--import", str(bad)])
    assert result.exit_code == 2
    assert "must be a list of wiring layers (instances), not a str" in " ".join(
        result.stderr.split()
    )


def test_a_worker_process_runs_young_collections_less_often() -> None:
    import gc

    from wireframe.cli.workers import GC_THRESHOLD, tune_collector

    before = gc.get_threshold()
    try:
        tune_collector()
        first, *rest = gc.get_threshold()
        assert first >= GC_THRESHOLD and tuple(rest) == before[1:]
    finally:
        gc.set_threshold(*before)
