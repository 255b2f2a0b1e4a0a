"""The operations the chaos suite runs: imported by the test and by ``wireframe worker --import``.

:class:`Work` logs when each execution starts and when it ends (one line each,
``index pid tag``, in two files), so a test can tell which jobs a worker had in
flight when it was stopped, and count how often each job *ran* while it checks
that each *result* arrived once. :class:`RollCall` proves that a set of worker
processes all consume: each of its jobs waits until every expected worker has
taken one, so a run of ``workers x concurrency`` of them succeeds only when
every worker serves at once.

Names are explicit (``chaos.Work``, ``chaos.RollCall``): the test process and
the workers import this file by different paths and must agree on them.
"""

from __future__ import annotations

import os
import time

import attrs
import trio

from wireframe import jobs

__all__ = ["RollCall", "TenPerSecond", "TwoAtOnce", "Work", "append_line", "render"]


def render(x: int) -> str:
    """What :class:`Work` computes for ``x`` (the local computation)."""
    return f"<{x}>"


def append_line(path: str, line: str) -> None:
    """Append ``line`` to ``path`` in one ``O_APPEND`` write (lines of processes never mix)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


@attrs.frozen
class Work(jobs.Operation[int, str], name="chaos.Work"):
    """Log the start, sleep about ``pause`` seconds, log the end, render the input.

    ``log`` gets ``"<x> <pid> <tag>"`` when the execution starts (so a job killed
    mid-run counts as executed), ``done_log`` the same line when it ends; ``""``
    logs nothing. ``ballast`` travels with every job and is otherwise unused: it
    makes messages as large as a test needs.
    """

    log: str = ""
    done_log: str = ""
    pause: float = 0.01
    tag: str = ""
    ballast: str = ""

    async def execute(self, x: int) -> str:
        line = f"{x} {os.getpid()} {self.tag}"
        if self.log:
            append_line(self.log, line)
        # 0.5x .. 1.5x of pause, spread deterministically over the inputs
        await trio.sleep(self.pause * (0.5 + ((x * 7919) % 101) / 100))
        if self.done_log:
            append_line(self.done_log, line)
        return render(x)


@attrs.frozen
class RollCall(jobs.Operation[int, int], name="chaos.RollCall"):
    """Note this worker's pid in ``path``, wait until ``expect`` pids are there, return ours.

    Waits at most ``patience`` seconds (then returns anyway: the test sees the
    pids that answered and names the missing ones).
    """

    path: str
    expect: int
    patience: float = 10.0

    async def execute(self, x: int) -> int:
        append_line(self.path, f"{x} {os.getpid()}")
        with trio.move_on_after(self.patience):
            while len(_pids_in(self.path)) < self.expect:
                await trio.sleep(0.01)
        return os.getpid()


def _pids_in(path: str) -> set[str]:
    with open(path, encoding="ascii") as f:
        return {line.split()[1] for line in f if line.strip()}


@attrs.frozen
class TwoAtOnce(jobs.Operation[int, int], name="chaos.TwoAtOnce", concurrency_limit=2):
    """Log ``"<x> <start> <end>"`` (wall-clock) to ``log`` around a ``pause``; at most two at once."""

    log: str
    pause: float = 0.1

    async def execute(self, x: int) -> int:
        start = trio.current_time()
        wall = time.time()
        await trio.sleep(self.pause)
        append_line(self.log, f"{x} {wall} {wall + trio.current_time() - start}")
        return x


@attrs.frozen
class TenPerSecond(jobs.Operation[int, int], name="chaos.TenPerSecond", rate_limit="10/s"):
    """Log ``"<x> <start>"`` (wall-clock) to ``log``; ten a second across every worker."""

    log: str

    async def execute(self, x: int) -> int:
        append_line(self.log, f"{x} {time.time()}")
        return x
