"""The replay engine on its own: turns computed from histories, no store and no worker.

``drive`` plays store and worker in a few lines: it runs turns until the
instance finishes, runs each scheduled activity at once (``execute`` called
directly), fires each timer by moving a fake clock, and runs children the same
way. Every history it builds is then replayed from scratch, which must take no
new action: replay is deterministic.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import trio

from wireframe import durable, jobs
from wireframe.durable import history as h
from wireframe.durable.registry import spec_named
from wireframe.durable.replay import Turn, run_turn
from wireframe.jobs.codec import JobResult, OpCache, decode_envelope, encode_result, structure
from wireframe.jobs.errors import RemoteError

T0 = 1_700_000_000.0
CALLS: list[str] = []


@attrs.frozen
class Hello(jobs.Operation[str, str], name="durable-test-hello"):
    def execute(self, who: str) -> str:
        CALLS.append(who)
        return f"Hello, {who}!"


@attrs.frozen
class Flaky(jobs.Operation[int, int], name="durable-test-flaky"):
    def execute(self, x: int) -> int:
        CALLS.append(f"flaky {x}")
        if CALLS.count(f"flaky {x}") < 3:
            raise RuntimeError(f"flaky {x} failed")
        return x


def _run_activity(body: bytes) -> bytes:
    env = decode_envelope(body)
    spec, op = OpCache().resolve(env.op)
    try:
        value = op.execute(structure(env.input, spec.input_type, "$.input"))  # type: ignore[attr-defined]
        return encode_result(JobResult(value=value), spec.output_type)
    except Exception as exc:
        return encode_result(JobResult(error=RemoteError.from_exception(exc)))


@attrs.define
class Instance:
    name: str
    history: list[h.Event]
    inbox: list[h.Event]
    turns: list[Turn] = attrs.Factory(list)
    now: float = T0


def drive(fn: Any, input: Any = None, *, events: list[h.Event] = (), iid: str = "i1") -> Instance:  # type: ignore[assignment]
    """Run ``fn`` to the end (or until it waits for an event nobody raises)."""
    name = fn.__durable_name__
    inst = Instance(name, [], [h.ExecutionStarted(name, input), *events])
    timers: list[tuple[float, h.TimerFired]] = []
    for _ in range(200):
        if not inst.inbox:
            if not timers:
                return inst
            timers.sort(key=lambda t: t[0])
            inst.now, fired = timers.pop(0)
            inst.inbox.append(fired)
        turn = run_turn(spec_named(name), iid, inst.history, inst.inbox, inst.now)
        inst.turns.append(turn)
        inst.history += turn.events
        inst.inbox = []
        for event in turn.events:
            if isinstance(event, h.TaskScheduled):
                inst.inbox.append(h.TaskCompleted(event.action, _run_activity(event.body)))
            elif isinstance(event, h.TimerCreated):
                timers.append((event.fire_at, h.TimerFired(event.action, event.fire_at)))
            elif isinstance(event, h.ChildCreated):
                child = drive(spec_named(event.name).fn, event.input, iid=event.instance_id)
                done = child.turns[-1]
                inst.inbox.append(
                    h.ChildCompleted(event.action, done.output)
                    if done.status == "completed"
                    else h.ChildFailed(event.action, done.error or done.status)
                )
        if turn.finished or turn.status == "continued":
            return inst
    raise AssertionError("the instance did not finish in 200 turns")


def replays_cleanly(inst: Instance) -> None:
    """Replaying the whole history takes no new action."""
    turn = run_turn(spec_named(inst.name), "i1", inst.history, [], inst.now)
    actions = [e for e in turn.events if isinstance(e, h.ACTIONS)]
    assert actions == [], f"replay took new actions: {actions}"


def scheduled(inst: Instance) -> list[str]:
    return [e.name for e in inst.history if isinstance(e, h.TaskScheduled)]


@durable.orchestrator
async def echo(ctx: durable.Context, x: int) -> int:
    return x


@durable.orchestrator
async def chain(ctx: durable.Context, who: str) -> list[str]:
    return [
        await ctx.call(Hello(), who),
        await ctx.call(Hello(), "Tōkyō"),
        await ctx.call(Hello(), "✓"),
    ]


def test_an_orchestrator_that_only_returns_completes_in_one_turn() -> None:
    inst = drive(echo, 41)
    assert [t.status for t in inst.turns] == ["completed"]
    assert inst.turns[-1].output == 41
    assert isinstance(inst.history[-1], h.ExecutionCompleted)


def test_an_activity_chain_runs_each_activity_once_and_replays_without_new_actions() -> None:
    CALLS.clear()
    inst = drive(chain, "ada")
    assert inst.turns[-1].output == ["Hello, ada!", "Hello, Tōkyō!", "Hello, ✓!"]
    assert CALLS == ["ada", "Tōkyō", "✓"]
    assert scheduled(inst) == ["durable-test-hello"] * 3
    assert len(inst.turns) == 4
    replays_cleanly(inst)


@durable.orchestrator
async def timers(ctx: durable.Context) -> list[float]:
    seen = [ctx.now().timestamp()]
    await ctx.sleep(10)
    seen.append(ctx.now().timestamp())
    await ctx.all([ctx.sleep(5), ctx.sleep(30)])
    seen.append(ctx.now().timestamp())
    return seen


def test_timers_move_the_orchestrators_clock_and_concurrent_timers_join() -> None:
    inst = drive(timers)
    assert inst.turns[-1].output == [T0, T0 + 10, T0 + 40]
    replays_cleanly(inst)


@durable.orchestrator
async def fan_out(ctx: durable.Context, n: int) -> list[str]:
    return await ctx.all([ctx.call(Hello(), str(i)) for i in range(n)])


def test_fan_out_fan_in_keeps_the_order_given() -> None:
    inst = drive(fan_out, 10)
    assert inst.turns[-1].output == [f"Hello, {i}!" for i in range(10)]
    assert len(inst.turns) == 2  # every completion arrived in one turn's inbox
    replays_cleanly(inst)


@durable.orchestrator
async def one_activity(ctx: durable.Context) -> str:
    return await ctx.call(Hello(), "a")


@durable.orchestrator(name="durable-test-changed")
async def changed(ctx: durable.Context) -> str:
    return await ctx.call(Flaky(), 1)  # type: ignore[arg-type]


def test_replay_that_takes_another_activity_fails_naming_both_sides() -> None:
    inst = drive(one_activity)
    history = [
        e if not isinstance(e, h.ExecutionStarted) else attrs.evolve(e, name="durable-test-changed")
        for e in inst.history[:3]
    ]
    turn = run_turn(spec_named("durable-test-changed"), "i1", history, [], T0)
    assert turn.status == "failed"
    assert turn.error is not None
    assert "action 1" in turn.error
    assert "'durable-test-hello'" in turn.error and "'durable-test-flaky'" in turn.error
    assert not any(isinstance(e, h.TaskScheduled) for e in turn.events)


@durable.orchestrator(name="durable-test-returns-at-once")
async def returns_at_once(ctx: durable.Context) -> str:
    return "no activity any more"


def test_replay_that_no_longer_takes_a_recorded_action_fails() -> None:
    inst = drive(one_activity)
    turn = run_turn(spec_named("durable-test-returns-at-once"), "i1", inst.history[:3], [], T0)
    # history says action 1 was scheduled; the code returned before taking it
    assert turn.status == "failed", turn
    assert "as activity 'durable-test-hello'" in (turn.error or "")
    assert "takes nothing" in (turn.error or "")


@durable.orchestrator
async def awaits_trio(ctx: durable.Context) -> None:
    await trio.sleep(1)


def test_awaiting_anything_but_the_context_fails_the_instance_naming_it() -> None:
    inst = drive(awaits_trio)
    turn = inst.turns[-1]
    assert turn.status == "failed"
    assert "awaited" in (turn.error or "") and "ctx.call" in (turn.error or "")


@durable.orchestrator
async def two_events(ctx: durable.Context) -> list[Any]:
    first = await ctx.wait_for_event("go")
    second = await ctx.wait_for_event("go")
    return [first, second]


def test_events_raised_before_the_wait_are_buffered_in_order() -> None:
    inst = drive(two_events, events=[h.EventRaised("go", 1), h.EventRaised("go", 2)])
    assert inst.turns[-1].output == [1, 2]
    replays_cleanly(inst)


@durable.orchestrator
async def impatient(ctx: durable.Context) -> str:
    try:
        await ctx.wait_for_event("approved", timeout=60)
    except durable.EventTimeout:
        return f"timed out at +{ctx.now().timestamp() - T0:g}"
    return "approved"


def test_waiting_for_an_event_times_out_on_a_durable_timer() -> None:
    inst = drive(impatient)
    assert inst.turns[-1].output == "timed out at +60"
    inst = drive(impatient, events=[h.EventRaised("approved", True)])
    assert inst.turns[-1].output == "approved"


@durable.orchestrator
async def race(ctx: durable.Context) -> list[Any]:
    return list(await ctx.any([ctx.wait_for_event("cancel"), ctx.sleep(60)]))


def test_any_gives_the_index_and_value_of_the_first_to_finish() -> None:
    assert drive(race).turns[-1].output == [1, None]
    assert drive(race, events=[h.EventRaised("cancel", "now")]).turns[-1].output == [0, "now"]


@durable.orchestrator
async def fails_late(ctx: durable.Context) -> str:
    try:
        await ctx.all([ctx.call(Flaky(), 7), ctx.sleep(100), ctx.call(Hello(), "b")])
    except durable.ActivityFailed as exc:
        return f"{exc.error.message} at +{ctx.now().timestamp() - T0:g}"
    return "no failure"


def test_all_fails_only_after_every_child_finished() -> None:
    CALLS.clear()
    assert drive(fails_late).turns[-1].output == "flaky 7 failed at +100"


@durable.orchestrator
async def retried(ctx: durable.Context) -> int:
    return await ctx.call(Flaky(), 3, retry=jobs.RetryPolicy.fixed(2.0, max_attempts=3))


def test_an_activity_retries_on_durable_timers_by_its_policy() -> None:
    CALLS.clear()
    inst = drive(retried)
    assert inst.turns[-1].output == 3
    assert CALLS == ["flaky 3"] * 3
    assert scheduled(inst) == ["durable-test-flaky"] * 3
    assert inst.now == T0 + 4.0
    replays_cleanly(inst)


@durable.orchestrator
async def replay_aware(ctx: durable.Context) -> list[bool]:
    seen = [ctx.is_replaying]
    await ctx.sleep(1)
    seen.append(ctx.is_replaying)
    return seen


def test_is_replaying_is_true_only_while_history_is_replayed() -> None:
    assert drive(replay_aware).turns[-1].output == [True, False]


@durable.orchestrator
async def counter(ctx: durable.Context, n: int) -> int:
    if n < 3:
        await ctx.sleep(1)
        ctx.continue_as_new(n + 1)
    return n


def test_continue_as_new_ends_the_turn_with_the_next_input_and_carries_events() -> None:
    inst = drive(counter, 0, events=[h.EventRaised("extra", "kept")])
    turn = inst.turns[-1]
    assert turn.status == "continued" and turn.output == 1
    assert isinstance(turn.events[-1], h.ContinuedAsNew)
    assert turn.carryover == [h.EventRaised("extra", "kept")]


@durable.orchestrator
async def child(ctx: durable.Context, who: str) -> str:
    return await ctx.call(Hello(), who)


@durable.orchestrator
async def parent(ctx: durable.Context) -> str:
    return await ctx.call_orchestrator(child, "kid")  # type: ignore[no-any-return]


def test_a_sub_orchestration_returns_its_output_to_the_parent() -> None:
    inst = drive(parent)
    assert inst.turns[-1].output == "Hello, kid!"
    [created] = [e for e in inst.history if isinstance(e, h.ChildCreated)]
    assert created.instance_id == "i1:1"


def test_a_suspended_instance_runs_nothing_until_resumed() -> None:
    start = [h.ExecutionStarted("two_events")]
    spec = spec_named("two_events")
    first = run_turn(
        spec, "i1", [], [*start, h.ExecutionSuspended("ops"), h.EventRaised("go", 1)], T0
    )
    assert first.status == "suspended"
    second = run_turn(spec, "i1", first.events, [h.ExecutionResumed(), h.EventRaised("go", 2)], T0)
    assert (second.status, second.output) == ("completed", [1, 2])


def test_terminating_an_instance_finishes_it_with_the_given_output() -> None:
    spec = spec_named("two_events")
    turn = run_turn(
        spec, "i1", [], [h.ExecutionStarted("two_events"), h.ExecutionTerminated("stop")], T0
    )
    assert (turn.status, turn.output) == ("terminated", "stop")
    assert turn.events[-1] == h.ExecutionCompleted("terminated", "stop", None)


def test_a_taken_name_and_a_sync_function_are_refused() -> None:
    with pytest.raises(durable.OrchestratorError, match="is taken"):

        @durable.orchestrator(name="echo")
        async def other(ctx: durable.Context) -> None: ...

    with pytest.raises(durable.OrchestratorError, match="async def"):
        durable.orchestrator(lambda ctx: None)  # type: ignore[type-var]


def test_an_orchestrator_whose_input_the_codec_cannot_carry_is_refused() -> None:
    with pytest.raises(durable.OrchestratorError, match="input type of orchestrator"):

        @durable.orchestrator(name="durable-test-bad-input")
        async def bad(ctx: durable.Context, x: object) -> None: ...


def test_an_action_first_taken_while_replaying_gets_its_job_body() -> None:
    """Bodies of replayed actions are not encoded; one history lacks is, when appended."""
    started = [h.OrchestratorStarted(T0), h.ExecutionStarted("one_activity")]
    turn = run_turn(spec_named("one_activity"), "i1", started, [], T0)
    [scheduled] = [e for e in turn.events if isinstance(e, h.TaskScheduled)]
    assert decode_envelope(scheduled.body).input == "a"


@durable.orchestrator
async def continues_after_a_call(ctx: durable.Context, n: int) -> int:
    if n == 0:
        await ctx.call(Hello(), "x")
        ctx.continue_as_new(n + 1)
    return n


def test_an_event_raised_in_the_turn_that_continues_as_new_is_carried_over() -> None:
    """The code returns on the activity's completion; the event after it in the same
    turn's inbox was never consumed, so the next generation must get it."""
    spec = spec_named("continues_after_a_call")
    first = run_turn(spec, "i1", [], [h.ExecutionStarted("continues_after_a_call", 0)], T0)
    [scheduled] = [e for e in first.events if isinstance(e, h.TaskScheduled)]
    done = h.TaskCompleted(scheduled.action, _run_activity(scheduled.body))
    turn = run_turn(spec, "i1", first.events, [done, h.EventRaised("late", 1)], T0 + 1)
    assert turn.status == "continued" and turn.output == 1
    assert turn.carryover == [h.EventRaised("late", 1)]
    late = [done, h.ExecutionSuspended("ops"), h.EventRaised("later", 2)]
    turn = run_turn(spec, "i1", first.events, late, T0 + 1)
    assert turn.carryover == [h.ExecutionSuspended("ops"), h.EventRaised("later", 2)]
    turn = run_turn(spec, "i1", first.events, [done, h.ExecutionTerminated("stop")], T0 + 1)
    assert (turn.status, turn.output) == ("terminated", "stop"), "a terminate is not lost"


def test_a_second_suspend_of_a_suspended_instance_needs_no_second_resume() -> None:
    spec = spec_named("two_events")
    start = [h.ExecutionStarted("two_events"), h.ExecutionSuspended("a")]
    first = run_turn(
        spec, "i1", [], [*start, h.ExecutionSuspended("b"), h.EventRaised("go", 1)], T0
    )
    assert first.status == "suspended"
    second = run_turn(spec, "i1", first.events, [h.ExecutionResumed(), h.EventRaised("go", 2)], T0)
    assert (second.status, second.output) == ("completed", [1, 2])


@durable.orchestrator
async def clock_after_event(ctx: durable.Context) -> float:
    await ctx.wait_for_event("go")
    return ctx.now().timestamp() - T0


def test_the_clock_after_a_resume_is_the_resuming_turns() -> None:
    """Events that waited out a suspension are applied at the resume: ``ctx.now()`` (and
    every timer set then) reads the resuming turn's time, not the suspended one's."""
    spec = spec_named("clock_after_event")
    first = run_turn(spec, "i1", [], [h.ExecutionStarted("clock_after_event")], T0)
    suspended = run_turn(spec, "i1", first.events, [h.ExecutionSuspended()], T0 + 10)
    history = [*first.events, *suspended.events]
    waiting = run_turn(spec, "i1", history, [h.EventRaised("go")], T0 + 20)
    assert waiting.status == "suspended"
    history += waiting.events
    resumed = run_turn(spec, "i1", history, [h.ExecutionResumed()], T0 + 100)
    assert (resumed.status, resumed.output) == ("completed", 100)


def test_a_failed_instances_error_names_the_exception_type() -> None:
    """``Instance.error`` is the exception's type and message, also for the engine's own."""
    inst = drive(one_activity)
    turn = run_turn(spec_named("durable-test-changed"), "i1", inst.history[:3], [], T0)
    assert (turn.error or "").startswith("NonDeterminismError: non-deterministic"), turn.error
    turn = drive(awaits_trio).turns[-1]
    assert (turn.error or "").startswith("OrchestratorError: orchestrator"), turn.error


@durable.orchestrator
async def polls(ctx: durable.Context) -> int:
    for n in range(10):
        index, _ = await ctx.any([ctx.wait_for_event("cancel"), ctx.sleep(60)])
        if index == 0:
            return n
    return -1


def test_a_wait_an_any_left_behind_takes_no_event_from_a_later_wait() -> None:
    """The wait of an ``any`` the timer won is not awaited by anything any more: the
    event raised later goes to the wait that is."""
    spec = spec_named("polls")
    history: list[h.Event] = []
    first = run_turn(spec, "i1", history, [h.ExecutionStarted("polls")], T0)
    history += first.events
    [timer] = [e for e in first.events if isinstance(e, h.TimerCreated)]
    second = run_turn(spec, "i1", history, [h.TimerFired(timer.action, timer.fire_at)], T0 + 60)
    assert second.status == "running"
    history += second.events
    third = run_turn(spec, "i1", history, [h.EventRaised("cancel")], T0 + 90)
    assert (third.status, third.output) == ("completed", 1)


@durable.orchestrator
async def awaits_a_left_wait_later(ctx: durable.Context) -> list[Any]:
    wait = ctx.wait_for_event("go")
    index, _ = await ctx.any([wait, ctx.sleep(60)])
    await ctx.sleep(60)  # "go" is raised meanwhile: kept for the wait awaited next
    return [index, await wait, await ctx.all([ctx.wait_for_event("go")])]


def test_a_wait_left_behind_and_awaited_later_gets_the_events_in_order() -> None:
    spec = spec_named("awaits_a_left_wait_later")
    history: list[h.Event] = []
    turn = run_turn(spec, "i1", history, [h.ExecutionStarted(spec.name)], T0)
    history += turn.events
    for at, new in ((60, [h.TimerFired(1, T0 + 60)]), (70, [h.EventRaised("go", "a")])):
        turn = run_turn(spec, "i1", history, new, T0 + at)
        history += turn.events
    turn = run_turn(spec, "i1", history, [h.EventRaised("go", "b")], T0 + 80)
    history += turn.events
    turn = run_turn(spec, "i1", history, [h.TimerFired(2, T0 + 120)], T0 + 120)
    assert (turn.status, turn.output) == ("completed", [1, "a", ["b"]])


@durable.orchestrator
async def falls_back(ctx: durable.Context) -> str:
    try:
        await ctx.call(Hello(), object())  # type: ignore[arg-type]
    except Exception as exc:  # its input cannot be encoded: it never ran
        fallback = type(exc).__name__
    await ctx.sleep(10)
    return fallback


def test_an_activity_whose_input_cannot_be_encoded_raises_on_replay_too() -> None:
    """The first run's ``ctx.call`` raised (nothing was recorded); the replay's must
    raise as well, not wait for an activity that never was."""
    inst = drive(falls_back)
    assert (inst.turns[-1].status, inst.turns[-1].output) == ("completed", "CodecError"), (
        inst.turns[-1]
    )
