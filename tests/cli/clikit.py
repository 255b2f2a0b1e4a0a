"""Helpers the CLI tests share: the repo's paths and running ``wireframe`` as a real subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SERVICES = Path(__file__).resolve().parent / "services"


def wireframe_cmd(*args: str) -> list[str]:
    """The real command line: ``python -m wireframe ARGS`` with this interpreter."""
    return [sys.executable, "-m", "wireframe", *args]


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a CLI subprocess: no colour, a fixed width, plus ``extra``."""
    env = dict(os.environ)
    env.pop("FORCE_COLOR", None)
    env.update({"NO_COLOR": "1", "COLUMNS": "120", "PYTHONUNBUFFERED": "1"}, **extra)
    return env


def run_wireframe(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``wireframe ARGS`` to the end; returns the completed process (text output)."""
    return subprocess.run(
        wireframe_cmd(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(**env),
        cwd=ROOT,
    )


def start_wireframe(*args: str, **env: str) -> subprocess.Popen[str]:
    """Start ``wireframe ARGS``; stdout is a text pipe read line by line, stderr merged into it."""
    return subprocess.Popen(
        wireframe_cmd(*args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=cli_env(**env),
        cwd=ROOT,
    )


def read_until(proc: subprocess.Popen[str], needle: str, *, limit: int = 400) -> list[str]:
    """Lines of ``proc``'s output up to the first containing ``needle`` (fails at EOF)."""
    assert proc.stdout is not None
    lines: list[str] = []
    for _ in range(limit):
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"{needle!r} never appeared; output:\n{''.join(lines)}")


def interrupt(proc: subprocess.Popen[str], *after: str, timeout: float = 60) -> str:
    """Send ``proc`` a SIGINT once each of ``after`` appears in its output, in turn.

    Returns the rest of its output once it exited; it is killed if it has not
    within ``timeout`` seconds (a guard: the test then fails on its exit code).
    """
    try:
        for needle in after:
            read_until(proc, needle)
            proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=timeout)
    finally:
        proc.kill()
    return rest
