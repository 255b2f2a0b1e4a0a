"""Orchestration behaviour end to end on ``memory://?workers=N``, under ``MockClock``.

Timers running side by side, external events (in order, with a timeout, two
waits on one name), terminate and purge of a tree of instances, an instance id
used again, and what goes wrong plainly: an orchestrator the worker does not
know, an input that cannot be encoded, a wait that times out. The store's own
contract is :class:`~wireframe.testing.OrchestrationStoreConformance`'s (see
``test_store_conformance.py``).
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from typing import Any

import attrs
import pytest
import trio

from wireframe import durable, jobs
from wireframe.durable import history as h


def url() -> str:
    return f"memory://behaviour-{uuid.uuid4().hex[:8]}?workers=2"


@attrs.frozen
class Slow(jobs.Operation[int, str], name="durable-behaviour-slow"):
    async def execute(self, seconds: int) -> str:
        await trio.sleep(seconds)
        return f"slow {seconds}"


def completions(history: list[h.Event]) -> list[h.ExecutionCompleted]:
    return [e for e in history if isinstance(e, h.ExecutionCompleted)]


# -- timers ------------------------------------------------------------------------------
@durable.orchestrator(name="behaviour-timers")
async def timers(ctx: durable.Context) -> dict[str, Any]:
    t0 = ctx.now()
    await ctx.all([ctx.sleep(30), ctx.sleep(10), ctx.sleep(20)])
    t1 = ctx.now()
    index, _ = await ctx.any([ctx.sleep(50), ctx.sleep(5)])
    t2 = ctx.now()
    return {"all": (t1 - t0).total_seconds(), "any": index, "then": (t2 - t1).total_seconds()}


async def test_timers_run_side_by_side_and_a_leftover_one_changes_nothing(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with durable.connect(url()) as client:
        start = trio.current_time()
        iid = await client.start(timers)
        inst = await client.wait_completed(iid, timeout=1000)
        took = trio.current_time() - start
        assert inst.status is durable.Status.COMPLETED, inst.error
        assert inst.output["any"] == 1
        assert 30 <= inst.output["all"] < 31 and 5 <= inst.output["then"] < 6, inst.output
        assert 35 <= took < 37, "three timers side by side take the longest one's time"
        history = await client.history(iid)
        assert sum(isinstance(e, h.TimerCreated) for e in history) == 5
        await trio.sleep(100)  # the any's 50 s timer fires after the instance completed
        assert await client.get(iid) == inst, "a timer firing after completion changed the row"
        assert await client.history(iid) == history
    assert len(completions(history)) == 1


# -- external events -----------------------------------------------------------------------
@durable.orchestrator(name="behaviour-collect")
async def collect(ctx: durable.Context, n: int) -> list[Any]:
    return [await ctx.wait_for_event("item") for _ in range(n)]


async def test_events_reach_the_orchestrator_in_the_order_raised(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with durable.connect(url()) as client:
        iid = await client.start(collect, 6)
        await client.raise_event(iid, "item", 1)  # before the first turn: buffered
        await client.raise_event(iid, "other", "ignored")
        await client.raise_event(iid, "item", 2)
        await client.wait_started(iid, timeout=10)
        for n in (3, 4):
            await client.raise_event(iid, "item", n)
        await trio.sleep(1)
        await client.raise_event(iid, "item", 5)
        await client.raise_event(iid, "item", {"n": 6})
        inst = await client.wait_completed(iid, timeout=10)
    assert inst.output == [1, 2, 3, 4, 5, {"n": 6}]


@durable.orchestrator(name="behaviour-timeout")
async def with_timeout(ctx: durable.Context) -> list[Any]:
    got: list[Any] = []
    for _ in range(2):
        try:
            got.append(await ctx.wait_for_event("ping", timeout=10))
        except durable.EventTimeout as exc:
            got.append(f"timed out after {exc.timeout:g} s")
    got.append(await ctx.wait_for_event("ping"))
    return got


async def test_a_wait_for_an_event_times_out_and_a_later_event_is_kept(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with durable.connect(url()) as client:
        start = trio.current_time()
        iid = await client.start(with_timeout)
        await trio.sleep(5)
        await client.raise_event(iid, "ping", "in time")  # the first wait's timer fires unused
        await trio.sleep(15)  # the second wait times out at 15 s
        assert (await client.get(iid)).status is durable.Status.RUNNING  # type: ignore[union-attr]
        await client.raise_event(iid, "ping", "late")
        inst = await client.wait_completed(iid, timeout=10)
    assert inst.output == ["in time", "timed out after 10 s", "late"]
    assert 20 <= trio.current_time() - start < 21


@durable.orchestrator(name="behaviour-contention")
async def contention(ctx: durable.Context) -> list[Any]:
    first, second = ctx.wait_for_event("go"), ctx.wait_for_event("go")
    ctx.set_status("waiting")
    index, value = await ctx.any([second, first])
    ctx.set_status(f"one of two: {value}")
    return [index, value, await second]


async def test_two_waits_on_one_event_name_take_one_event_each_in_order(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with durable.connect(url()) as client:
        iid = await client.start(contention)
        await client.wait_started(iid, timeout=10)
        await client.raise_event(iid, "go", "first")
        await trio.sleep(10)
        inst = await client.get(iid)
        assert inst is not None and inst.status is durable.Status.RUNNING
        assert inst.custom_status == "one of two: first", "one event resolved both waits"
        await client.raise_event(iid, "go", "second")
        inst = await client.wait_completed(iid, timeout=10)
    assert inst.output == [1, "first", "second"], "the first wait takes the first event"


# -- terminate and purge -------------------------------------------------------------------
@durable.orchestrator(name="behaviour-forever")
async def forever(ctx: durable.Context, depth: int) -> Any:
    if depth > 0:
        await ctx.call_orchestrator(forever, depth - 1)
    return await ctx.wait_for_event("never")


async def statuses(client: durable.Client) -> dict[str, durable.Status]:
    return {i.id: i.status for i in await client.list()}


async def test_terminate_ends_the_instance_and_its_children_unless_told_not_to(
    autojump_clock: trio.abc.Clock,
) -> None:
    running = durable.Status.RUNNING
    async with durable.connect(url()) as client:
        await client.start(forever, 2, instance_id="top")
        await client.start(forever, 1, instance_id="solo")
        with trio.fail_after(10):  # the whole tree is up: 2 + 1 children, each waiting
            while list((await statuses(client)).values()) != [running] * 5:
                await trio.sleep(0.1)
        await client.terminate("top", "stopped")
        for iid in ("top", "top:1", "top:1:1"):
            inst = await client.wait_completed(iid, timeout=10)
            assert inst.status is durable.Status.TERMINATED, (iid, inst)
        assert (await client.get("top")).output == "stopped"  # type: ignore[union-attr]
        await client.terminate("top")  # a finished instance: nothing to do

        await client.terminate("solo", recursive=False)
        assert (await client.wait_completed("solo", timeout=10)).status.value == "terminated"
        await trio.sleep(10)
        assert (await client.get("solo:1")).status is running  # type: ignore[union-attr]
        history = await client.history("solo")
        await client.raise_event("solo:1", "never", "done")  # its parent hears nothing of it
        child = await client.wait_completed("solo:1", timeout=10)
        assert (child.status, child.output) == (durable.Status.COMPLETED, "done")
        await trio.sleep(10)
        assert await client.history("solo") == history
        assert (await client.get("solo")).status is durable.Status.TERMINATED  # type: ignore[union-attr]


@durable.orchestrator(name="behaviour-tree")
async def tree(ctx: durable.Context, depth: int) -> int:
    if depth == 0:
        return 1
    return sum(await ctx.all([ctx.call_orchestrator(tree, depth - 1) for _ in range(2)]))


async def test_purge_removes_the_instance_and_its_children_unless_told_not_to(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with durable.connect(url()) as client:
        assert (
            await client.wait_completed(await client.start(tree, 2, instance_id="t"))
        ).output == 4
        assert (
            await client.wait_completed(await client.start(tree, 1, instance_id="u"))
        ).output == 2
        assert len(await client.list()) == 7 + 3
        await client.purge("t")
        assert sorted(await statuses(client)) == ["u", "u:1", "u:2"]
        assert await client.history("t:1:2") == []
        await client.purge("u", recursive=False)
        assert sorted(await statuses(client)) == ["u:1", "u:2"]
        with pytest.raises(durable.UnknownInstance):
            await client.purge("t")


# -- instance ids used again -----------------------------------------------------------------
@durable.orchestrator(name="behaviour-race")
async def race(ctx: durable.Context, seconds: int) -> str:
    index, value = await ctx.any([ctx.call(Slow(), seconds), ctx.sleep(1)])
    return str(value) if index == 0 else "gave up"


@durable.orchestrator(name="behaviour-patient")
async def patient(ctx: durable.Context, seconds: int) -> str:
    return await ctx.call(Slow(), seconds)


async def test_an_instance_id_is_used_again_only_when_replaced_or_purged(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with durable.connect(url()) as client:
        await client.start(race, 100, instance_id="r")
        first = await client.wait_completed("r", timeout=10)
        assert first.output == "gave up"  # its activity still runs, for 99 s more
        with pytest.raises(durable.InstanceExists):
            await client.start(patient, 300, instance_id="r")
        await client.start(patient, 300, instance_id="r", reuse="replace")
        with pytest.raises(durable.InstanceExists, match=r"running|pending"):
            await client.start(patient, 1, instance_id="r", reuse="replace")  # not finished
        second = await client.wait_completed("r", timeout=1000)
        assert (second.name, second.output) == ("behaviour-patient", "slow 300"), (
            "the replaced run's activity reply reached the new run"
        )
        history = await client.history("r")
        assert [e.name for e in history if isinstance(e, h.ExecutionStarted)] == [
            "behaviour-patient"
        ]
        await client.purge("r")
        await client.start(race, 0, instance_id="r")  # purged: free again
        assert (await client.wait_completed("r", timeout=10)).output == "slow 0"


# -- what goes wrong, plainly ------------------------------------------------------------------
async def test_an_orchestrator_the_worker_does_not_know_fails_the_instance_naming_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with durable.connect(url()) as client:
        first = h.ExecutionStarted("behaviour-nobody-registered", {"x": 1})
        row = durable.Instance("lost", first.name, durable.Status.PENDING, first.input)
        await client.store.create_instance(row, first, visible_at=-math.inf, replace=False)
        inst = await client.wait_completed("lost", timeout=10)
        history = await client.history("lost")
    assert inst.status is durable.Status.FAILED
    assert inst.error is not None
    assert "'behaviour-nobody-registered'" in inst.error
    assert "behaviour-forever" in inst.error and "behaviour-tree" in inst.error, inst.error
    assert inst.error.startswith("OrchestratorError: "), inst.error
    assert first in history, "the history keeps how the instance began"
    assert completions(history) == [h.ExecutionCompleted("failed", None, inst.error)]


async def test_an_input_that_cannot_be_encoded_fails_the_start_naming_the_orchestrator(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with durable.connect(url()) as client:
        with pytest.raises(durable.DurableError, match=r"start of 'behaviour-collect'.*encoded"):
            await client.start(collect, object(), instance_id="bad")
        assert await client.get("bad") is None
        assert await client.list() == []


async def test_waiting_past_a_timeout_raises_too_slow(autojump_clock: trio.abc.Clock) -> None:
    async with durable.connect(url()) as client:
        iid = await client.start(forever, 0)
        start = trio.current_time()
        with pytest.raises(
            trio.TooSlowError, match=rf"instance {iid!r} is still running after 5 s"
        ):
            await client.wait_completed(iid, timeout=5)
        assert trio.current_time() - start == pytest.approx(5)
        inst = await client.get(iid)
        assert inst is not None and inst.status is durable.Status.RUNNING
        later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60)
        late = await client.start(forever, 0, start_at=later)
        with pytest.raises(trio.TooSlowError):
            await client.wait_started(late, timeout=30)
        assert (await client.wait_started(late, timeout=60)).status is durable.Status.RUNNING


# -- children across generations -----------------------------------------------------------
@durable.orchestrator(name="behaviour-sleeper")
async def sleeper(ctx: durable.Context, seconds: int) -> int:
    await ctx.sleep(seconds)
    return seconds


@durable.orchestrator(name="behaviour-child-per-run")
async def child_per_run(ctx: durable.Context, n: int) -> int:
    got = await ctx.call_orchestrator(sleeper, n)
    if n < 2:
        ctx.continue_as_new(n + 1)
    return got  # type: ignore[no-any-return]


async def test_each_run_of_an_instance_starts_children_of_its_own(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A child's default id is its parent's and the action's; a continued or replaced
    run takes the same action numbers again, so its children must not find the
    earlier run's children in their place."""
    async with durable.connect(url()) as client:
        await client.start(child_per_run, 0, instance_id="p")
        inst = await client.wait_completed("p", timeout=100)
        assert (inst.status, inst.output, inst.generation) == (durable.Status.COMPLETED, 2, 2)
        await client.start(child_per_run, 2, instance_id="p", reuse="replace")
        inst = await client.wait_completed("p", timeout=100)
        assert (inst.status, inst.output) == (durable.Status.COMPLETED, 2), inst.error
        kids = [i for i in await client.list() if i.parent_id == "p"]
    assert len(kids) == 4 and all(k.status is durable.Status.COMPLETED for k in kids)


@durable.orchestrator(name="behaviour-outlived-child")
async def outlived_child(ctx: durable.Context, n: int) -> float:
    start = ctx.now()
    if n == 0:  # the child (action 1) outlives this run
        await ctx.any([ctx.call_orchestrator(sleeper, 100), ctx.sleep(1)])
        ctx.continue_as_new(1)
        return 0
    await ctx.sleep(500)  # action 1 again, of the next run
    return (ctx.now() - start).total_seconds()


async def test_a_child_of_an_earlier_run_completing_reaches_no_action_of_the_next(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with durable.connect(url()) as client:
        await client.start(outlived_child, 0, instance_id="o")
        inst = await client.wait_completed("o", timeout=1000)
    assert inst.status is durable.Status.COMPLETED, inst.error
    assert inst.output == 500, "the old run's child completed the new run's timer"


@durable.orchestrator(name="behaviour-timer-left-behind")
async def timer_left_behind(ctx: durable.Context, n: int) -> float:
    start = ctx.now()
    if n == 0:
        ctx.sleep(5)  # action 1: set, never awaited, in the turn that continues as new
        ctx.continue_as_new(1)
        return 0
    await ctx.sleep(50)  # action 1 again, of the next run
    return (ctx.now() - start).total_seconds()


async def test_a_timer_set_in_the_turn_that_continues_as_new_never_fires(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with durable.connect(url()) as client:
        await client.start(timer_left_behind, 0, instance_id="t")
        inst = await client.wait_completed("t", timeout=1000)
    assert inst.status is durable.Status.COMPLETED, inst.error
    assert inst.output == 50, "the old run's timer fired into the new run"


# -- values the codec cannot carry -----------------------------------------------------------
@durable.orchestrator(name="behaviour-unencodable")
async def unencodable(ctx: durable.Context, what: str) -> Any:
    if what == "status":
        ctx.set_status({"at": object()})
    elif what == "event":
        ctx.send_event("nobody", "e", 1 + 2j)
    elif what == "child":
        await ctx.call_orchestrator(collect, object())
    elif what == "continue":
        ctx.continue_as_new(object())
        return None
    return 1 + 2j  # the output


async def test_a_value_the_codec_cannot_carry_fails_the_instance_naming_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Not the worker: a store keeps values as msgpack, and the commit of one it cannot
    pack would fail every time the instance is taken."""
    async with durable.connect(url()) as client:
        for what in ("output", "status", "event", "child", "continue"):
            await client.start(unencodable, what, instance_id=what)
            inst = await client.wait_completed(what, timeout=10)
            assert inst.status is durable.Status.FAILED, (what, inst)
            assert "OrchestratorError" in (inst.error or "") and "encode" in (inst.error or ""), (
                what,
                inst.error,
            )


async def test_a_client_value_the_codec_cannot_carry_is_refused_naming_the_instance(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with durable.connect(url()) as client:
        iid = await client.start(collect, 1, instance_id="c")
        with pytest.raises(durable.DurableError, match=r"raise_event 'item' on 'c'.*encoded"):
            await client.raise_event(iid, "item", object())
        with pytest.raises(durable.DurableError, match=r"terminate of 'c'.*encoded"):
            await client.terminate(iid, 1 + 2j)
        await client.raise_event(iid, "item", "plain")
        inst = await client.wait_completed(iid, timeout=10)
    assert (inst.status, inst.output) == (durable.Status.COMPLETED, ["plain"])


async def test_an_instance_started_later_is_pending_until_then_whatever_it_is_sent(
    autojump_clock: trio.abc.Clock,
) -> None:
    """An event raised before ``start_at`` takes a turn (it is buffered), but the
    orchestrator has not started: the instance stays pending, ``wait_started`` waits."""
    async with durable.connect(url()) as client:
        later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60)
        iid = await client.start(collect, 1, start_at=later)
        await client.raise_event(iid, "item", "early")
        await trio.sleep(5)
        assert (await client.get(iid)).status is durable.Status.PENDING  # type: ignore[union-attr]
        with pytest.raises(trio.TooSlowError):
            await client.wait_started(iid, timeout=30)
        inst = await client.wait_completed(iid, timeout=60)
    assert (inst.status, inst.output) == (durable.Status.COMPLETED, ["early"])
