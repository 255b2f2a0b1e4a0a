"""The durable chaos case's orchestrator and activity: imported by the test and by the workers.

:func:`chain` runs five :class:`Step` activities one after another; each adds
one to its input and logs the execution (``input pid`` per line), so the test
can count how often an activity *ran* while it checks that each *result* was
recorded once in its instance's history.
"""

from __future__ import annotations

import os
import time

import attrs

from wireframe import durable, jobs

__all__ = ["STEPS", "ChainInput", "Step", "chain"]

#: Activities per instance.
STEPS = 5


@attrs.frozen
class Step(jobs.Operation[int, int], name="chaos.durable-step"):
    """Log, pause ``pause`` seconds (a plain ``def``: on a worker thread), add one."""

    log: str
    pause: float = 1.0

    def execute(self, x: int) -> int:
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{x} {os.getpid()}\n".encode())
        finally:
            os.close(fd)
        time.sleep(self.pause)
        return x + 1


@attrs.frozen
class ChainInput:
    """Where a chain starts, and the file its steps log to."""

    x: int
    log: str


@durable.orchestrator(name="chaos.durable-chain")
async def chain(ctx: durable.Context, start: ChainInput) -> int:
    """``start.x + STEPS`` after five steps."""
    x = start.x
    for _ in range(STEPS):
        x = await ctx.call(Step(start.log), x)
    return x
