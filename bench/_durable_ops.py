"""The durable benchmark's activity and orchestrators (imported by the bench and its worker)."""

from __future__ import annotations

import sys
from pathlib import Path

import attrs

if __package__ in (None, ""):  # imported by path: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wireframe import durable, jobs

#: Activities per instance of :func:`sequence`.
STEPS = 5


@attrs.frozen
class Inc(jobs.Operation[int, int], name="bench.durable-inc"):
    """A no-op activity: an integer in, plus one out."""

    async def execute(self, x: int) -> int:
        return x + 1


@durable.orchestrator(name="bench.durable-sequence")
async def sequence(ctx: durable.Context, x: int) -> int:
    """Five activities one after another (Microsoft's Durable Task Scheduler benchmark)."""
    for _ in range(STEPS):
        x = await ctx.call(Inc(), x)
    return x


@durable.orchestrator(name="bench.durable-fan")
async def fan(ctx: durable.Context, n: int) -> int:
    """``n`` activities at once, joined."""
    return sum(await ctx.all([ctx.call(Inc(), i) for i in range(n)]))
