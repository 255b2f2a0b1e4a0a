"""Orchestrations on the wall-clock brokers, SQLite and Redis: a job worker and an
orchestration worker on one broker, a client on another connection.

Real time (leases and visibility are wall-clock seconds, or Redis ``TIME``), so
timers are short. What only one broker's design has is tested beside it
(``test_redis_orchestrations.py``, and the damaged SQLite history below).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from durable_scenarios import family, looping, squares, waits, workers

from wireframe import durable, jobs
from wireframe.durable import history as h


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh broker: a SQLite file of the test's own, or a Redis key prefix of its own."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/jobs.db"
    make: Callable[..., str] = request.getfixturevalue("fresh_redis_url")
    return make()


async def test_an_orchestration_runs_to_the_end(url: str) -> None:
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


async def test_the_store_survives_a_reopen_and_an_instance_finishes_there(url: str) -> None:
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


async def test_children_continue_as_new_suspend_and_terminate(url: str) -> None:
    async with workers(url) as client:
        fam = await client.start(family, instance_id="fam")
        loop = await client.start(looping, 0, instance_id="loop")
        w = await client.start(waits, instance_id="w")
        await client.wait_started(w, timeout=10)
        await client.suspend(w, "maintenance")
        await client.raise_event(w, "go", 1)
        with trio.fail_after(10):  # the turn that applies the suspend, then nothing runs
            inst = await client.get(w)
            while inst is not None and inst.status is not durable.Status.SUSPENDED:
                inst = await client.store.wait_changed(w, inst.revision)
        await client.resume(w)
        await client.raise_event(w, "go", 2)
        assert (await client.wait_completed(w, timeout=10)).output == [1, 2]
        assert (await client.wait_completed(fam, timeout=10)).output == [10, 20, 30]
        children = [i for i in await client.list() if i.parent_id == "fam"]
        assert sorted(c.id for c in children) == ["fam:1", "fam:2", "fam:3"]
        done = await client.wait_completed(loop, timeout=10)
        assert (done.output, done.generation) == (3, 3)
        assert sum(isinstance(e, h.ExecutionStarted) for e in await client.history(loop)) == 1
        other = await client.start(waits, instance_id="w2")
        await client.terminate(other, "stopped")
        inst = await client.wait_completed(other, timeout=10)
        assert (inst.status, inst.output) == (durable.Status.TERMINATED, "stopped")
        await client.purge(fam)
        listed = [i.id for i in await client.list()]
        assert listed[0] == "w2" and sorted(listed) == ["loop", "w", "w2"]  # newest first


@durable.orchestrator
async def waiter(ctx: durable.Context) -> str:
    return str(await ctx.wait_for_event("go"))


async def test_a_damaged_sqlite_history_fails_its_instance_and_the_worker_goes_on(
    tmp_path: Path,
) -> None:
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
