"""Orchestrators, activities and a worker pair the wall-clock broker tests share (SQLite, Redis)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from wireframe import durable, jobs

__all__ = ["Fails", "Square", "family", "kid", "looping", "squares", "waits", "workers"]


@attrs.frozen
class Square(jobs.Operation[int, int], name="durable-wall-square"):
    def execute(self, x: int) -> int:
        return x * x


@attrs.frozen
class Fails(jobs.Operation[int, int], name="durable-wall-fails"):
    async def execute(self, x: int) -> int:
        raise RuntimeError(f"no {x}")


@durable.orchestrator(name="durable-wall-squares")
async def squares(ctx: durable.Context, n: int) -> dict[str, Any]:
    first = await ctx.call(Square(), n)
    await ctx.sleep(0.2)
    rest = await ctx.all([ctx.call(Square(), i) for i in range(n)])
    try:
        await ctx.call(Fails(), n)
    except durable.ActivityFailed as exc:
        caught = exc.error.message
    event = await ctx.wait_for_event("go", timeout=30)
    return {"first": first, "rest": rest, "caught": caught, "event": event}


@durable.orchestrator(name="durable-wall-kid")
async def kid(ctx: durable.Context, n: int) -> int:
    await ctx.sleep(0.05 * n)
    return n * 10


@durable.orchestrator(name="durable-wall-family")
async def family(ctx: durable.Context) -> list[int]:
    return await ctx.all([ctx.call_orchestrator(kid, n) for n in (1, 2, 3)])


@durable.orchestrator(name="durable-wall-looping")
async def looping(ctx: durable.Context, n: int) -> int:
    if n < 3:
        await ctx.call(Square(), n)
        ctx.continue_as_new(n + 1)
    return n


@durable.orchestrator(name="durable-wall-waits")
async def waits(ctx: durable.Context) -> list[Any]:
    return [await ctx.wait_for_event("go"), await ctx.wait_for_event("go")]


@asynccontextmanager
async def workers(url: str) -> AsyncIterator[durable.Client]:
    """A job worker and an orchestration worker on ``url``; the client on another
    connection, as a second process's would be."""
    async with jobs.open_broker(url) as broker, trio.open_nursery() as nursery:
        await nursery.start(jobs.Worker(broker, concurrency=8).serve)
        await nursery.start(durable.OrchestrationWorker(broker, concurrency=4).serve)
        async with jobs.open_broker(url) as other:
            yield durable.Client(other)
        nursery.cancel_scope.cancel()
