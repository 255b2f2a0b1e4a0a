"""Orchestrations on the SQLite broker: a job worker and an orchestration worker on one file.

Real time (SQLite leases and visibility are wall-clock), so timers are short.
Another broker opened on the same file plays a second process's client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from wireframe import durable, jobs
from wireframe.durable import history as h


@attrs.frozen
class Square(jobs.Operation[int, int], name="durable-sqlite-square"):
    def execute(self, x: int) -> int:
        return x * x


@attrs.frozen
class Fails(jobs.Operation[int, int], name="durable-sqlite-fails"):
    async def execute(self, x: int) -> int:
        raise RuntimeError(f"no {x}")


@durable.orchestrator
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


@asynccontextmanager
async def workers(url: str) -> AsyncIterator[durable.Client]:
    async with jobs.open_broker(url) as broker, trio.open_nursery() as nursery:
        await nursery.start(jobs.Worker(broker, concurrency=8).serve)
        await nursery.start(durable.OrchestrationWorker(broker, concurrency=4).serve)
        async with jobs.open_broker(url) as other:
            yield durable.Client(other)
        nursery.cancel_scope.cancel()


async def test_an_orchestration_runs_to_the_end_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/jobs.db"
    async with workers(url) as client:
        iid = await client.start(squares, 4, instance_id="sq")
        await client.wait_started(iid, timeout=10)
        await client.raise_event(iid, "go", {"ok": True})
        inst = await client.wait_completed(iid, timeout=30)
        history = await client.history(iid)
    assert inst.status is durable.Status.COMPLETED, inst.error
    assert inst.output == {
        "first": 16,
        "rest": [0, 1, 4, 9],
        "caught": "no 4",
        "event": {"ok": True},
    }
    completed = [e.action for e in history if isinstance(e, h.TaskCompleted)]
    assert len(completed) == len(set(completed)) == 6, "each activity's result recorded once"


async def test_the_store_survives_a_reopen_and_an_instance_finishes_there(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/jobs.db"
    async with jobs.open_broker(url) as broker:
        iid = await durable.Client(broker).start(squares, 2, instance_id="later")
    async with workers(url) as client:  # "another process", after a restart
        await client.raise_event(iid, "go", 1)
        inst = await client.wait_completed(iid, timeout=30)
        assert inst.output["rest"] == [0, 1]
        with pytest.raises(durable.InstanceExists):
            await client.start(squares, 2, instance_id="later")
        await client.purge(iid)
        assert await client.get(iid) is None and await client.history(iid) == []


@durable.orchestrator
async def waiter(ctx: durable.Context) -> str:
    return str(await ctx.wait_for_event("go"))


async def test_a_damaged_history_fails_its_instance_and_the_worker_goes_on(tmp_path: Path) -> None:
    import sqlite3

    url = f"sqlite:///{tmp_path}/jobs.db"
    async with workers(url) as client:
        damaged = await client.start(waiter, instance_id="damaged")
        await client.wait_started(damaged, timeout=10)
        raw = sqlite3.connect(tmp_path / "jobs.db")
        with raw:
            raw.execute("UPDATE wf_history SET event = X'c1' WHERE instance_id = 'damaged'")
        raw.close()
        await client.raise_event(damaged, "go", 1)
        inst = await client.wait_completed(damaged, timeout=10)
        assert inst.status is durable.Status.FAILED
        assert "cannot be read" in (inst.error or "") and "history event" in (inst.error or "")
        fine = await client.start(waiter, instance_id="fine")
        await client.raise_event(fine, "go", 2)
        assert (await client.wait_completed(fine, timeout=10)).output == "2"
