"""Orchestrations end to end on ``memory://?workers=N``: client, store, worker and job workers.

Everything runs under trio's ``MockClock`` (the memory broker's clock is trio's),
so durable timers of an hour take no time.
"""

from __future__ import annotations

import sys
import uuid
from typing import Any

import attrs
import pytest
import trio

from wireframe import durable, jobs
from wireframe.durable import history as h

RAN: list[str] = []


@attrs.frozen
class Greet(jobs.Operation[str, str], name="durable-e2e-greet"):
    async def execute(self, who: str) -> str:
        RAN.append(who)
        return f"Hello, {who}!"


@attrs.frozen
class Boom(jobs.Operation[int, int], name="durable-e2e-boom"):
    async def execute(self, x: int) -> int:
        raise ValueError(f"boom {x}")


def url() -> str:
    return f"memory://durable-{uuid.uuid4().hex[:8]}?workers=2"


@durable.orchestrator
async def onboard(ctx: durable.Context, user: str) -> dict[str, Any]:
    greeting = await ctx.call(Greet(), user)
    await ctx.sleep(3600)
    try:
        ok = await ctx.wait_for_event("approved", timeout=86400)
    except durable.EventTimeout:
        ok = False
    parts = await ctx.all([ctx.call(Greet(), f"{user}-{n}") for n in range(3)])
    ctx.set_status({"step": "done"})
    return {"greeting": greeting, "approved": ok, "parts": parts}


async def test_an_orchestration_runs_activities_timers_events_and_fan_out(
    autojump_clock: trio.abc.Clock,
) -> None:
    RAN.clear()
    async with durable.connect(url()) as client:
        iid = await client.start(onboard, "ada")
        started = await client.wait_started(iid, timeout=10)
        assert started.status is durable.Status.RUNNING
        await trio.sleep(3700)
        await client.raise_event(iid, "approved", True)
        inst = await client.wait_completed(iid, timeout=100_000)
    assert inst.status is durable.Status.COMPLETED, inst.error
    assert inst.output == {
        "greeting": "Hello, ada!",
        "approved": True,
        "parts": ["Hello, ada-0!", "Hello, ada-1!", "Hello, ada-2!"],
    }
    assert inst.custom_status == {"step": "done"}
    assert sorted(RAN) == ["ada", "ada-0", "ada-1", "ada-2"]


async def test_an_unapproved_orchestration_times_out_on_its_durable_timer(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with durable.connect(url()) as client:
        iid = await client.start(onboard, "bob")
        inst = await client.wait_completed(iid, timeout=200_000)
        history = await client.history(iid)
    assert inst.output["approved"] is False
    assert sum(isinstance(e, h.TimerCreated) for e in history) == 2


@durable.orchestrator
async def fails(ctx: durable.Context) -> int:
    try:
        await ctx.call(Boom(), 1)
    except durable.ActivityFailed as exc:
        assert "boom 1" in str(exc)
    return await ctx.call(Boom(), 2)


async def test_an_activity_failure_is_caught_or_fails_the_instance(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with durable.connect(url()) as client:
        iid = await client.start(fails)
        inst = await client.wait_completed(iid, timeout=60)
    assert inst.status is durable.Status.FAILED
    assert inst.error is not None and "boom 2" in inst.error


@durable.orchestrator
async def kid(ctx: durable.Context, n: int) -> int:
    await ctx.sleep(n)
    return n * 10


@durable.orchestrator
async def family(ctx: durable.Context) -> list[int]:
    return await ctx.all([ctx.call_orchestrator(kid, n) for n in (1, 2, 3)])


async def test_sub_orchestrations_report_to_their_parent(autojump_clock: trio.abc.Clock) -> None:
    async with durable.connect(url()) as client:
        iid = await client.start(family, instance_id="fam")
        inst = await client.wait_completed(iid, timeout=60)
        children = [i for i in await client.list() if i.parent_id == "fam"]
    assert inst.output == [10, 20, 30]
    assert sorted(c.id for c in children) == ["fam:1", "fam:2", "fam:3"]
    assert all(c.status is durable.Status.COMPLETED for c in children)


@durable.orchestrator
async def waits(ctx: durable.Context) -> list[Any]:
    return [await ctx.wait_for_event("go"), await ctx.wait_for_event("go")]


async def test_suspend_resume_terminate_and_purge(autojump_clock: trio.abc.Clock) -> None:
    async with durable.connect(url()) as client:
        iid = await client.start(waits, instance_id="w1")
        await client.wait_started(iid, timeout=10)
        await client.suspend(iid, "maintenance")
        await client.raise_event(iid, "go", 1)
        await trio.sleep(5)
        assert (await client.get(iid)).status is durable.Status.SUSPENDED  # type: ignore[union-attr]
        await client.resume(iid)
        await client.raise_event(iid, "go", 2)
        assert (await client.wait_completed(iid, timeout=10)).output == [1, 2]

        other = await client.start(waits, instance_id="w2")
        with pytest.raises(durable.InstanceExists):
            await client.start(waits, instance_id="w2")
        with pytest.raises(durable.DurableError, match="only a completed"):
            await client.purge(other)
        await client.terminate(other, "stopped")
        inst = await client.wait_completed(other, timeout=10)
        assert (inst.status, inst.output) == (durable.Status.TERMINATED, "stopped")
        await client.purge(other)
        assert await client.get(other) is None
        await client.start(waits, instance_id="w1", reuse="replace")  # w1 finished: replaced
        with pytest.raises(durable.UnknownInstance):
            await client.raise_event("nobody", "go")
        with pytest.raises(durable.DurableError, match="empty"):
            await client.raise_event("w1", "")


@durable.orchestrator
async def looping(ctx: durable.Context, n: int) -> int:
    if n < 5:
        await ctx.call(Greet(), str(n))
        ctx.continue_as_new(n + 1)
    return n


async def test_continue_as_new_starts_afresh_with_a_short_history(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with durable.connect(url()) as client:
        iid = await client.start(looping, 0)
        inst = await client.wait_completed(iid, timeout=60)
        history = await client.history(iid)
    assert (inst.output, inst.generation) == (5, 5)
    assert sum(isinstance(e, h.ExecutionStarted) for e in history) == 1


async def test_two_turns_racing_on_an_expired_lease_commit_once() -> None:
    """A stale turn's commit raises LockLost and the history has no duplicate."""
    async with jobs.open_broker(f"memory://race-{uuid.uuid4().hex[:8]}") as broker:
        client = durable.Client(broker)
        iid = await client.start(waits)
        store = client.store
        [stale] = await store.take_work(1, lease=0.05)
        await trio.sleep(0.1)  # the lease ran out
        [fresh] = await store.take_work(1, lease=30)
        from wireframe.durable.registry import spec_named
        from wireframe.durable.replay import run_turn
        from wireframe.durable.worker import commit_of

        turn = run_turn(spec_named("waits"), iid, stale.history, stale.inbox, 0.0)
        await store.commit(fresh, commit_of(fresh, turn, "default", 0.0))
        with pytest.raises(jobs.LockLost):
            await store.commit(stale, commit_of(stale, turn, "default", 0.0))
        history = await store.history(iid)
    assert sum(isinstance(e, h.ExecutionStarted) for e in history) == 1


async def test_the_worker_service_runs_orchestrators_the_imports_define(
    autojump_clock: trio.abc.Clock,
) -> None:
    """``wireframe worker`` adds an orchestration worker when orchestrators are defined."""
    from wireframe.cli.workers import worker_builder

    name = f"memory://svc-{uuid.uuid4().hex[:8]}"
    from wireframe.cli.workers import defines_orchestrators

    here = sys.modules[__name__]
    assert defines_orchestrators([here]) and not defines_orchestrators([jobs])
    builder, _ = worker_builder(
        name,
        [],
        queues=["default"],
        concurrency=4,
        graceful_shutdown_timeout=5,
        orchestrations=defines_orchestrators([here]),
    )
    service = builder.build()
    async with jobs.open_broker(name) as broker, trio.open_nursery() as nursery:
        nursery.start_soon(service.run)
        client = durable.Client(broker)
        iid = await client.start(chain_of_two, "x")
        inst = await client.wait_completed(iid, timeout=60)
        service.stop()
    assert inst.output == ["Hello, x!", "Hello, x!"]
    assert set(service.status().tasks) >= {"worker:default", "orchestrations"}


@durable.orchestrator
async def chain_of_two(ctx: durable.Context, who: str) -> list[str]:
    return [await ctx.call(Greet(), who), await ctx.call(Greet(), who)]


@durable.orchestrator
async def adopts(ctx: durable.Context) -> str:
    try:
        await ctx.call_orchestrator(kid, 1, instance_id="taken")
    except durable.ChildFailed as exc:
        return str(exc)
    return "started"


async def test_a_child_whose_id_is_taken_fails_in_its_parent(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with durable.connect(url()) as client:
        await client.start(waits, instance_id="taken")
        iid = await client.start(adopts)
        inst = await client.wait_completed(iid, timeout=60)
    assert "'taken' is taken by another instance" in inst.output


async def test_a_turn_cancelled_with_its_worker_gives_its_instance_back(
    autojump_clock: trio.abc.Clock,
) -> None:
    """As a job worker abandons the jobs it is cancelled in, an orchestration worker
    releases the instances of its unfinished turns: another worker takes them at once,
    not when the lease (here 600 s) runs out."""
    async with jobs.open_broker(f"memory://cancel-{uuid.uuid4().hex[:8]}?workers=1") as broker:
        client = durable.Client(broker)
        iid = await client.start(chain_of_two, "x")
        stuck = durable.OrchestrationWorker(broker, lease=600)

        async def never(item: Any) -> Any:
            await trio.sleep_forever()

        stuck._run = never  # type: ignore[method-assign]
        async with trio.open_nursery() as nursery:
            await nursery.start(stuck.serve)
            while not stuck._running:
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            await nursery.start(jobs.Worker(broker).serve)
            await nursery.start(durable.OrchestrationWorker(broker, lease=600).serve)
            inst = await client.wait_completed(iid, timeout=1000)
            nursery.cancel_scope.cancel()
    assert inst.output == ["Hello, x!", "Hello, x!"]
    assert trio.current_time() - start < 60, "the instance waited for the lease to run out"
