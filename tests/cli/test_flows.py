"""``wireframe flows``: instances started, driven and managed from the shell, on SQLite.

A real ``wireframe worker`` process runs the orchestrator and its activity (it
imports the same module); the ``flows`` commands run in this process.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

from clikit import interrupt, read_until, start_wireframe
from typer.testing import CliRunner

from wireframe.cli import app

runner = CliRunner()

MODULE = """
import attrs
from wireframe import durable, jobs


@attrs.frozen
class Shout(jobs.Operation[str, str], name="flows-cli-shout"):
    def execute(self, s: str) -> str:
        return s.upper()


@durable.orchestrator(name="flows-cli-greeter")
async def greeter(ctx: durable.Context, who: str) -> str:
    loud = await ctx.call(Shout(), who)
    extra = await ctx.wait_for_event("go")
    return f"{loud}{extra}"
"""


def flows(*args: str) -> Any:
    result = runner.invoke(app, ["flows", *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def shown(url: str, iid: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(flows("show", iid, "--broker", url, "--json"))
    return data


def until(url: str, iid: str, check: Any) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        data = shown(url, iid)
        if check(data):
            return data
        assert time.monotonic() < deadline, data
        time.sleep(0.05)


def test_start_raise_show_list_suspend_terminate_purge(tmp_path: Path) -> None:
    module = tmp_path / "flows_mod.py"
    module.write_text(MODULE, encoding="utf-8")
    url = f"sqlite:///{tmp_path}/jobs.db"
    worker = start_wireframe("worker", "--broker", url, "-i", str(module), "--plain")
    try:
        read_until(worker, "(Task, layer orchestrations) running")
        started = flows(
            "start", "flows-cli-greeter", "--broker", url, "-i", str(module), "--input", '"ada"',
            "--id", "g1",
        )  # fmt: skip
        assert started.strip() == "g1"
        until(url, "g1", lambda d: any(e["type"] == "TaskCompleted" for e in d["history"]))
        flows("raise", "g1", "go", "--broker", url, "--data", '"!"')
        done = until(url, "g1", lambda d: d["status"] == "completed")
        assert done["output"] == "ADA!"
        assert [e["type"] for e in done["history"]][:3] == [
            "OrchestratorStarted", "ExecutionStarted", "TaskScheduled",
        ]  # fmt: skip
        listed = json.loads(flows("list", "--broker", url, "--json", "--status", "completed"))
        assert [i["id"] for i in listed] == ["g1"]
        assert "g1" in flows("show", "g1", "--broker", url)  # the table form

        flows(
            "start",
            "flows-cli-greeter",
            "--broker",
            url,
            "-i",
            str(module),
            "--input",
            '"b"',
            "--id",
            "g2",
        )
        until(url, "g2", lambda d: d["status"] == "running")
        flows("suspend", "g2", "--broker", url, "--reason", "ops")
        until(url, "g2", lambda d: d["status"] == "suspended")
        flows("terminate", "g2", "--broker", url, "--output", '"stopped"')
        ended = until(url, "g2", lambda d: d["status"] == "terminated")
        assert ended["output"] == "stopped"
        flows("purge", "g2", "--broker", url)
    finally:
        worker.send_signal(signal.SIGINT)
        rest = interrupt(worker)
    assert worker.returncode == 0, rest
    gone = runner.invoke(app, ["flows", "show", "g2", "--broker", url])
    assert gone.exit_code == 1 and "no orchestration instance has id 'g2'" in gone.output
    bad = runner.invoke(app, ["flows", "list", "--broker", url, "--status", "bogus"])
    assert bad.exit_code == 2 and "one of: pending, running" in bad.output
    not_json = runner.invoke(app, ["flows", "raise", "g1", "go", "--broker", url, "--data", "{x"])
    assert not_json.exit_code == 2 and "is not JSON" in not_json.output
