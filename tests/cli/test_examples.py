"""The examples, run through the CLI: observed answers real GETs; distributed runs on workers.

``distributed`` runs in-process on ``memory://?workers=2`` through CliRunner,
and as real processes — a ``wireframe worker`` plus the orchestrator — on an
SQLite file and on Redis (skipped without Redis, failed under CI).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from clikit import ROOT, cli_env, read_until, run_wireframe, start_wireframe
from typer.testing import CliRunner

from wireframe.cli import app

runner = CliRunner()
PRIMES_BELOW_20000 = 2262


def _get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.slow
def test_observed_serves_health_metrics_and_restarts_then_stops_on_sigint() -> None:
    proc = start_wireframe(
        "run", "examples/observed.py", "--plain", "--log-format", "json", "--log-level", "info",
        HEALTH_PORT="0",
    )  # fmt: skip
    try:
        lines = read_until(proc, "ready: health on")
        match = re.search(r"(http://127\.0\.0\.1:\d+)/readyz", lines[-1])
        assert match, lines
        base = match.group(1)
        deadline = time.monotonic() + 20
        while True:  # the feed's first start fails; it is ready once restarted and feeding
            status, body = _get(f"{base}/readyz")
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert status == 200, body
        assert set(body["checks"]) == {  # type: ignore[call-overload]
            "job-runtime:broker", "worker:default:broker", "feed-fresh",
        }  # fmt: skip
        status, data = _get(f"{base}/status")
        feed = data["tasks"]["feed"]  # type: ignore[index]
        assert feed["restarts"] == 1 and feed["last_error"]["type"] == "ConnectionError"
        with urllib.request.urlopen(f"{base}/metrics", timeout=10) as reply:
            metrics = reply.read().decode()
        assert (
            'wireframe_jobs_completed_total{operation="observed.resize",queue="default"}' in metrics
        )
        assert 'wireframe_task_restarts{task="feed"} 1.0' in metrics
        # the middleware's records, as JSON lines with the job's fields
        timed = [line for line in read_until(proc, "took") if "took" in line]
        record = json.loads(timed[-1])
        assert record["operation"] == "observed.resize" and record["job_id"]
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, rest
    assert "task 'feed' (Task, layer feed) stopped" in rest


def test_observed_stops_by_itself_in_process_with_the_feed_restarted_once() -> None:
    result = runner.invoke(
        app,
        ["run", "examples/observed.py:make_builder", "--json"],
        env={"HEALTH_PORT": "0", "OBSERVED_SECONDS": "1.5"},
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["tasks"]["timer"]["state"] == "finished"
    assert data["tasks"]["feed"]["state"] == "stopped"
    assert data["tasks"]["feed"]["restarts"] == 1
    assert data["tasks"]["feed"]["last_error"]["type"] == "ConnectionError"


def test_distributed_in_process_on_memory_workers() -> None:
    result = runner.invoke(
        app,
        ["run", "examples/distributed.py:make_builder", "--json"],
        env={
            "DISTRIBUTED_BROKER": "memory://cli-distributed?workers=2",
            "DISTRIBUTED_LIMIT": "20000",
            "DISTRIBUTED_CHUNK": "2000",
        },
    )
    assert result.exit_code == 0, result.output
    assert f"primes below 20000: {PRIMES_BELOW_20000}" in result.stderr
    assert json.loads(result.stdout)["tasks"]["count-primes"]["state"] == "finished"


def _distributed_on(url: str) -> None:
    worker = start_wireframe(
        "worker", "--broker", url, "--import", "examples/distributed.py", "--plain", "-c", "4"
    )
    try:
        read_until(worker, "(Task, layer worker:default) running")
        orchestrator = run_wireframe(
            "run",
            "examples/distributed.py",
            "--json",
            DISTRIBUTED_BROKER=url,
            DISTRIBUTED_LIMIT="20000",
            DISTRIBUTED_CHUNK="2000",
        )
        assert orchestrator.returncode == 0, orchestrator.stdout + orchestrator.stderr
        assert f"primes below 20000: {PRIMES_BELOW_20000}" in orchestrator.stderr
        worker.send_signal(signal.SIGINT)
        rest, _ = worker.communicate(timeout=30)
    finally:
        worker.kill()
    assert worker.returncode == 0, rest
    assert "received SIGINT" in rest and "clean stop (exit 0)" in rest
    stats = run_wireframe("jobs", "stats", "--broker", url, "--json")
    assert stats.returncode == 0, stats.stderr
    (default,) = [q for q in json.loads(stats.stdout) if q["queue"] == "default"]
    assert default["queued"] == 0 and default["running"] == 0 and default["dead"] == 0


@pytest.mark.slow
def test_distributed_with_a_worker_process_on_sqlite(tmp_path: Path) -> None:
    _distributed_on(f"sqlite:///{tmp_path}/jobs.db")


@pytest.mark.slow
@pytest.mark.redis
def test_distributed_with_a_worker_process_on_redis(redis_url: str) -> None:
    _distributed_on(redis_url)


@pytest.mark.slow
@pytest.mark.parametrize("broker", ["sqlite", "memory://?workers=2"])
def test_wordcount_through_the_cli(broker: str, tmp_path: Path) -> None:
    """The README's first command, on the embedded default and in-process."""
    url = f"sqlite:///{tmp_path}/wordcount.db" if broker == "sqlite" else broker
    proc = run_wireframe("run", "examples/wordcount.py", "--json", WORDCOUNT_BROKER=url)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["tasks"]["wordcount"]["state"] == "finished"
    texts = Path(__file__).resolve().parents[2] / "examples" / "texts"
    expected = sum(
        len(re.findall(r"\bthe\b", p.read_text(encoding="utf-8").lower()))
        for p in texts.glob("*.txt")
    )
    assert re.search(rf"^\s*{expected} the$", proc.stderr, flags=re.M), proc.stderr


def test_every_example_is_run_by_a_test() -> None:
    """A new example must come with a test that runs it."""
    root = Path(__file__).resolve().parents[2]
    tests = "\n".join(p.read_text(encoding="utf-8") for p in (root / "tests").rglob("test_*.py"))
    missing = [
        p.name
        for p in sorted((root / "examples").glob("*.py"))
        if f"examples/{p.name}" not in tests and f'"{p.name}"' not in tests
    ]
    assert missing == []


def _post(url: str) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url, method="POST", data=b"")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.slow
def test_background_hands_jobs_to_a_worker_and_reads_them_by_id(tmp_path: Path) -> None:
    broker = f"sqlite:///{tmp_path}/jobs.db"
    proc = start_wireframe(
        "run", "examples/background.py", "--plain", BACKGROUND_PORT="0", BACKGROUND_BROKER=broker
    )
    try:
        lines = read_until(proc, "ready: background jobs on")
        match = re.search(r"http://127\.0\.0\.1:\d+", lines[-1])
        assert match, lines
        base = match.group(0)
        status, made = _post(f"{base}/thumbnails/cat.png")
        assert status == 202 and made["status"] in ("queued", "running", "succeeded"), made
        _, bad = _post(f"{base}/thumbnails/notes.txt")
        results = {}
        for job in (made["job"], bad["job"]):
            deadline = 200
            while deadline:
                _, body = _get(f"{base}/jobs/{job}")
                if body["status"] in ("succeeded", "failed"):
                    results[job] = body
                    break
                deadline -= 1
                time.sleep(0.05)  # a client polling the endpoint, as a web page would
            assert job in results, body
        assert results[made["job"]]["result"] == "thumbnails/cat.png"
        assert "is not an image" in str(results[bad["job"]]["error"])
        missing, body = _get(f"{base}/jobs/nope")
        assert missing == 404 and "unknown" in str(body["error"])
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, rest


def test_onboarding_runs_an_orchestration_to_the_end(tmp_path: Path) -> None:
    env = cli_env(ONBOARDING_BROKER=f"sqlite:///{tmp_path}/jobs.db")
    done = subprocess.run(
        [sys.executable, "examples/onboarding.py"],
        capture_output=True, text=True, timeout=60, env=env, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "completed {'account': 'acct-ada', 'approved': True, 'sent': [" in done.stdout
