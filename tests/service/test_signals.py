"""SIGINT and SIGTERM delivered to a real process running an example stop it cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


async def run_until_ready_then_signal(*signums: signal.Signals) -> tuple[int, str]:
    """Start examples/hello.py, wait for its ready line, send the signals, collect output."""
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-u", str(EXAMPLES / "hello.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    output = b""
    try:
        with trio.fail_after(30):
            while b"ready:" not in output:
                chunk = await proc.stdout.receive_some()
                assert chunk, f"hello.py exited before it was ready:\n{output.decode()}"
                output += chunk
            for signum in signums:
                proc.send_signal(signum)
            async for chunk in proc.stdout:
                output += chunk
            code = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return code, output.decode()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_signal_stops_example_cleanly(signum: signal.Signals) -> None:
    code, output = await run_until_ready_then_signal(signum)
    assert code == 0, output
    assert f"clean stop (received {signum.name})" in output
    assert "greeter=stopped" in output and "watchdog=stopped" in output
    assert output.index("greeter: stopping") < output.index("config: closed")
