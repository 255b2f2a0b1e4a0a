"""``wireframe jobs stats|dead|retry|purge`` against a real SQLite broker file (and Redis)."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import trio
from clikit import run_wireframe
from typer.testing import CliRunner

from wireframe.cli import app
from wireframe.jobs.broker import Message, WorkerInfo, open_broker

runner = CliRunner()


async def _populate(url: str) -> None:
    """default: 1 queued, 1 done, 1 dead ("cannot decode"); emails: declared, empty."""
    async with open_broker(url) as broker:
        await broker.declare_queue("default")
        await broker.declare_queue("emails")
        await broker.publish("default", [Message(f"m{i}", b"\xffbody %d" % i) for i in range(3)])
        (first,) = await broker.consume("default", 1)
        await broker.complete(first, b"ok")
        (second,) = await broker.consume("default", 1)
        await broker.dead_letter(second, "cannot decode: unknown operation 'nope'")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/jobs.db"
    trio.run(_populate, url)
    return url


def _stats(url: str) -> dict[str, dict[str, int]]:
    result = runner.invoke(app, ["jobs", "stats", "--broker", url, "--json"])
    assert result.exit_code == 0, result.output
    out = {q.pop("queue"): q for q in json.loads(result.stdout)}
    for q in out.values():  # the subsets of queued, counted once limits exist
        assert q.pop("scheduled") <= q["queued"] and q.pop("held") <= q["queued"]
    return out


def table_of(url: str) -> str:
    result = runner.invoke(app, ["jobs", "stats", "--broker", url])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_stats_table_and_json(sqlite_url: str) -> None:
    assert _stats(sqlite_url) == {
        "default": {"queued": 1, "running": 0, "done": 1, "dead": 1, "workers": 0},
        "emails": {"queued": 0, "running": 0, "done": 0, "dead": 0, "workers": 0},
    }
    assert "scheduled" in table_of(sqlite_url) and "held" in table_of(sqlite_url)
    table = runner.invoke(app, ["jobs", "stats", "--broker", sqlite_url])
    assert table.exit_code == 0
    assert "default" in table.stdout and "emails" in table.stdout
    assert "workers" in table.stdout


def test_stats_counts_the_live_workers_of_each_queue(sqlite_url: str) -> None:
    async def announce() -> None:
        async with open_broker(sqlite_url) as broker:
            for n, queue in enumerate(["default", "default", "emails", "reports"]):
                info = WorkerInfo(f"w{n}", queue, 4, "host", 100 + n, started_at=0.0)
                await broker.heartbeat(info, 60.0)

    trio.run(announce)
    workers = {queue: counts["workers"] for queue, counts in _stats(sqlite_url).items()}
    assert workers == {"default": 2, "emails": 1, "reports": 1}


def test_dead_lists_reasons_then_retry_requeues_and_purge_clears(sqlite_url: str) -> None:
    dead = runner.invoke(app, ["jobs", "dead", "--broker", sqlite_url, "--json"])
    assert dead.exit_code == 0, dead.output
    (letter,) = json.loads(dead.stdout)
    assert letter["queue"] == "default" and letter["deliveries"] == 1
    died = datetime.fromisoformat(letter["died_at"])
    assert died.utcoffset() == timedelta(0) and abs(died.timestamp() - time.time()) < 600
    assert letter["reason"] == "cannot decode: unknown operation 'nope'"
    assert letter["body_preview"].startswith("\\xffbody")
    table = runner.invoke(app, ["jobs", "dead", "--broker", sqlite_url, "--queue", "default"])
    assert "unknown operation 'nope'" in table.stdout

    retry = runner.invoke(app, ["jobs", "retry", "--broker", sqlite_url, "--json"])
    assert retry.exit_code == 0 and json.loads(retry.stdout)["requeued"] == 1
    assert _stats(sqlite_url)["default"] == {
        "queued": 2,
        "running": 0,
        "done": 1,
        "dead": 0,
        "workers": 0,
    }

    purge = runner.invoke(app, ["jobs", "purge", "--broker", sqlite_url])
    assert purge.exit_code == 0 and "purged 1 finished record(s)" in purge.stdout
    assert _stats(sqlite_url)["default"] == {
        "queued": 2,
        "running": 0,
        "done": 0,
        "dead": 0,
        "workers": 0,
    }


def test_a_bad_broker_url_is_a_clear_error() -> None:
    result = runner.invoke(app, ["jobs", "stats", "--broker", "nope://x"])
    assert result.exit_code == 1
    assert "unknown scheme 'nope'" in result.stderr
    brackets = runner.invoke(app, ["jobs", "stats", "--broker", "nope://[x]"])
    assert "'nope://[x]'" in brackets.stderr, "an error message is text, never rich markup"


def test_the_broker_comes_from_the_environment_too(sqlite_url: str) -> None:
    result = runner.invoke(app, ["jobs", "stats", "--json"], env={"WIREFRAME_BROKER": sqlite_url})
    assert result.exit_code == 0 and json.loads(result.stdout)


@pytest.mark.slow
def test_subprocess_stats_json(sqlite_url: str) -> None:
    proc = run_wireframe("jobs", "stats", "--broker", sqlite_url, "--json")
    assert proc.returncode == 0, proc.stderr
    assert {q["queue"]: q["dead"] for q in json.loads(proc.stdout)} == {"default": 1, "emails": 0}


@pytest.mark.redis
def test_stats_and_dead_on_redis(redis_url: str) -> None:
    trio.run(_populate, redis_url)
    assert _stats(redis_url)["default"] == {
        "queued": 1,
        "running": 0,
        "done": 1,
        "dead": 1,
        "workers": 0,
    }
    dead = runner.invoke(app, ["jobs", "dead", "--broker", redis_url, "--json"])
    assert json.loads(dead.stdout)[0]["reason"].startswith("cannot decode")


def _damage(db: Path) -> None:
    """Overwrite every page but the schema's and wf_schema's with garbage: the file
    opens (its schema and version read fine) and every query of a queue fails."""
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        schema_root = "SELECT rootpage FROM sqlite_master WHERE name = 'wf_schema'"
        keep = {1, conn.execute(schema_root).fetchone()[0]}
    finally:
        conn.close()
    pages = db.stat().st_size // size
    with db.open("r+b") as f:
        for page in range(1, pages + 1):
            if page not in keep:
                f.seek((page - 1) * size)
                f.write(b"\xff" * size)


@pytest.mark.parametrize("damage", ["pages", "garbage"])
@pytest.mark.parametrize("command", ["stats", "dead", "retry", "purge"])
def test_a_damaged_database_is_a_one_line_error_naming_the_file(
    sqlite_url: str, tmp_path: Path, command: str, damage: str
) -> None:
    db = tmp_path / "jobs.db"
    if damage == "pages":
        _damage(db)
        complaint = "database disk image is malformed"
    else:
        db.write_bytes(bytes(range(256)) * 64)
        complaint = "file is not a database"
    result = runner.invoke(app, ["jobs", command, "--broker", sqlite_url])
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: broker {sqlite_url}: ")
    assert str(db) in line and complaint in line
    assert "Traceback" not in result.output and "ExceptionGroup" not in result.output


@pytest.mark.parametrize("command", ["stats", "dead", "retry", "purge"])
def test_a_mistyped_sqlite_path_is_an_error_and_creates_nothing(
    tmp_path: Path, command: str
) -> None:
    url = f"sqlite:///{tmp_path}/jbos.db"
    result = runner.invoke(app, ["jobs", command, "--broker", url])
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines() == [
        f"error: broker {url}: no SQLite database at {str(tmp_path / 'jbos.db')!r} ({url}): "
        "inspection commands never create one; check the path"
    ]
    assert list(tmp_path.iterdir()) == []


def test_dead_shows_reasons_and_ids_as_written_not_as_markup(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/jobs.db"

    async def populate() -> None:
        async with open_broker(url) as broker:
            await broker.publish("[q]", [Message("[bold]id", b"x")])
            (d,) = await broker.consume("[q]", 1)
            await broker.dead_letter(d, "ValueError: expected [red] or [/] in 'x'")

    trio.run(populate)
    conn = sqlite3.connect(tmp_path / "jobs.db")
    with conn:  # a damaged dead letter: the CLI lists it, with what was wrong
        conn.execute(
            "INSERT INTO wf_dead (queue, id, body, reply_to, reason, deliveries, died_at)"
            " VALUES ('[q]', 'm2', 'text', '', 'old', 'many', 0)"
        )
    conn.close()
    table = runner.invoke(app, ["jobs", "dead", "--broker", url], env={"COLUMNS": "400"})
    assert table.exit_code == 0, table.output
    assert "[bold]id" in table.stdout
    assert "ValueError: expected [red] or [/] in 'x'" in table.stdout
    assert "old [malformed dead-letter row (wf_dead seq 2): body holds TEXT 'text';" in table.stdout
    stats = runner.invoke(app, ["jobs", "stats", "--broker", url])
    assert "[q]" in stats.stdout


@pytest.mark.parametrize(
    "url",
    [
        "redis://:sEcR?wOrD@127.0.0.1:1/0",  # fault 8: printed whole before
        "redis://u:sEcR#wOrD@127.0.0.1:1/0?lease=1",
        "sqlite://u:sEcRwOrD@host/x.db",  # a message that quotes the URL as written
    ],
)
def test_no_command_prints_a_password_of_the_broker_url(url: str, tmp_path: Path) -> None:
    commands = [
        ["jobs", "stats", "--broker", url],
        ["jobs", "dead", "--broker", url, "--json"],
        ["worker", "--broker", url, "--import", "examples/wordcount.py", "--plain"],
        ["worker", "--broker", url, "--import", "examples/wordcount.py", "--json"],
    ]
    for args in commands:
        result = runner.invoke(app, args, env={"WORDCOUNT_BROKER": f"sqlite:///{tmp_path}/w.db"})
        assert result.exit_code != 0, (args, result.output)
        output = result.stdout + result.stderr
        assert "sEcR" not in output and "wOrD" not in output, (args, output)
        assert ":***@" in output, (args, output)
