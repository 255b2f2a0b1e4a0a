"""``wireframe jobs show ID`` and ``wireframe jobs abort ID`` on a real SQLite broker file."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import attrs
import trio
from typer.testing import CliRunner

from wireframe import jobs
from wireframe.cli import app
from wireframe.jobs.broker import ScheduleInfo

runner = CliRunner()


@attrs.frozen
class Shout(jobs.Operation[str, str], name="cli-shout"):
    async def execute(self, x: str) -> str:
        if x == "boom":
            raise ValueError("no shouting")
        return x.upper()


async def _run_one(url: str, value: str) -> str:
    """Submit one job and run it with a worker of this process; its id."""
    async with jobs.connect(url) as rt:
        handle = await rt.submit(Shout(), value, key=f"shout-{value}")
        worker = jobs.Worker(rt.broker)
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            try:
                await handle.result(timeout=30)
            except jobs.JobFailed:
                pass
            worker.stop()
        return handle.id


async def _submit(url: str) -> str:
    async with jobs.connect(url) as rt:
        return (await rt.submit(Shout(), "later", delay=3600)).id


def test_show_a_finished_job(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/jobs.db"
    job_id = trio.run(_run_one, url, "hi")
    shown = runner.invoke(app, ["jobs", "show", job_id, "--broker", url, "--json"])
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.stdout)
    assert data["job_id"] == job_id and data["status"] == "succeeded"
    assert data["operation"] == "cli-shout" and data["key"] == "shout-hi"
    assert data["attempts"] == 1 and data["worker"] and data["result_bytes"] > 0
    assert data["error"] is None
    for field in ("enqueued_at", "started_at", "finished_at", "expires_at"):
        assert datetime.fromisoformat(data[field]).utcoffset() is not None, field
    table = runner.invoke(app, ["jobs", "show", job_id, "--broker", url], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "succeeded" in table.stdout and "cli-shout" in table.stdout


def test_show_a_failed_job_names_its_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/jobs.db"
    job_id = trio.run(_run_one, url, "boom")
    data = json.loads(
        runner.invoke(app, ["jobs", "show", job_id, "--broker", url, "--json"]).stdout
    )
    assert data["status"] == "failed"
    assert "ValueError: no shouting" in data["error"]


def test_abort_then_show_and_an_unknown_id(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/jobs.db"
    job_id = trio.run(_submit, url)
    shown = json.loads(
        runner.invoke(app, ["jobs", "show", job_id, "--broker", url, "--json"]).stdout
    )
    assert shown["status"] == "scheduled"
    aborted = runner.invoke(app, ["jobs", "abort", job_id, "--broker", url])
    assert aborted.exit_code == 0, aborted.output
    assert aborted.stdout.strip() == f"job {job_id}: aborted"
    shown = json.loads(
        runner.invoke(app, ["jobs", "show", job_id, "--broker", url, "--json"]).stdout
    )
    assert shown["status"] == "aborted" and shown["error"]
    for command in ("show", "abort"):
        missing = runner.invoke(app, ["jobs", command, "nope", "--broker", url])
        assert missing.exit_code == 1
        assert "job 'nope' is unknown to broker" in missing.stderr
        assert "Traceback" not in missing.output


def test_schedules_lists_what_schedulers_announce(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/jobs.db"

    async def announce() -> None:
        async with jobs.open_broker(url) as broker:
            info = ScheduleInfo("nightly", "cron 0 3 * * * UTC", "cli-shout", "default",
                                time.time() + 3600, None, "svc-1")  # fmt: skip
            await broker.announce_schedule(info, 60.0)

    trio.run(announce)
    listed = runner.invoke(app, ["jobs", "schedules", "--broker", url, "--json"])
    assert listed.exit_code == 0, listed.output
    (one,) = json.loads(listed.stdout)
    assert one["name"] == "nightly" and one["schedule"] == "cron 0 3 * * * UTC"
    assert datetime.fromisoformat(one["next_at"]) > datetime.now(UTC)
    table = runner.invoke(app, ["jobs", "schedules", "--broker", url], env={"COLUMNS": "200"})
    assert "nightly" in table.stdout and "(in " in table.stdout
