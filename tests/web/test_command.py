"""``wireframe dashboard`` as a user runs it: a process serving the pages until stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import trio

from wireframe.jobs.broker import Message, open_broker


@pytest.mark.slow
@pytest.mark.parametrize("stop_with", [signal.SIGINT, signal.SIGTERM])
async def test_the_command_serves_and_warns_off_loopback(
    tmp_path: Path, stop_with: signal.Signals
) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    async with open_broker(url) as broker:
        await broker.submit("q", Message("one", b"x"), operation="op")
    command = [sys.executable, "-m", "wireframe", "dashboard", "--broker", url]
    command += ["--host", "0.0.0.0", "--port", "0"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2]), "COLUMNS": "200"}
    proc = subprocess.Popen(  # noqa: ASYNC220 - a line read on a thread, below
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        line = await trio.to_thread.run_sync(proc.stdout.readline)  # type: ignore[union-attr]
        assert "dashboard of" in line and "read-only" in line, line
        address = line.split(" on ", 1)[1].split(" ", 1)[0]
        port = address.rsplit(":", 1)[1]

        def fetch() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/jobs", timeout=30) as r:
                return str(r.read().decode())

        assert "one" in await trio.to_thread.run_sync(fetch)
    finally:
        proc.send_signal(stop_with)
        _, err = await trio.to_thread.run_sync(proc.communicate)
    assert proc.returncode == 0, err
    assert "warning" in err and "not loopback" in err, err
