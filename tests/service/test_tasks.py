"""The task kinds' table, scenario by scenario."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from layerkit import forever, ignores_stop, make_task, raises, returns, service_of

import wireframe as wf

K = wf.TaskKind
S = wf.TaskState


async def test_no_tasks_is_an_error() -> None:
    service = wf.ServiceBuilder(handle_signals=False).build()
    with pytest.raises(wf.ServiceError, match="no tasks"):
        await service.run()


async def test_failing_task_fails_the_service() -> None:
    events: list[str] = []
    service = service_of(
        make_task(K.TASK, "bad", raises, events), make_task(K.TASK, "good", forever, events)
    )
    with pytest.raises(wf.ServiceError, match="task 'bad' failed") as info:
        await service.run()
    report = info.value.report
    assert report.tasks["bad"].state is S.FAILED
    assert report.tasks["bad"].error is not None
    assert report.tasks["bad"].error.type == "RuntimeError"
    assert "boom" in report.tasks["bad"].error.traceback
    assert report.tasks["good"].state is S.STOPPED
    assert report.stop_reason is not None and "'bad' failed" in report.stop_reason


async def test_one_task_returns_the_other_sees_stop() -> None:
    events: list[str] = []
    seen: list[str | None] = []

    async def watcher(stop: wf.StopReceiver) -> None:
        await stop.wait()
        seen.append(stop.reason)

    report = await service_of(
        make_task(K.TASK, "quick", returns, events), make_task(K.TASK, "watcher", watcher, events)
    ).run()
    assert report.ok
    assert report.tasks["quick"].state is S.FINISHED
    assert report.tasks["watcher"].state is S.STOPPED
    assert seen == ["task 'quick' returned"]


async def test_failing_precondition_gated_tasks_never_start() -> None:
    events: list[str] = []
    service = service_of(
        make_task(K.PRECONDITION, "pre", raises, events),
        make_task(K.TASK, "main", forever, events),
        make_task(K.ONESHOT, "once", returns, events),
    )
    with pytest.raises(wf.ServiceError) as info:
        await service.run()
    tasks = info.value.report.tasks
    assert tasks["pre"].state is S.FAILED
    for gated in ("main", "once"):
        assert tasks[gated].started_at is None
        assert tasks[gated].state is S.STOPPED
    assert "start main" not in events and "start once" not in events


async def test_unconstrained_start_before_preconditions_pass() -> None:
    events: list[str] = []
    release = trio.Event()

    async def slow_pre(stop: wf.StopReceiver) -> None:
        await release.wait()

    async def unconstrained(stop: wf.StopReceiver) -> None:
        events.append("unconstrained saw the barrier closed")
        release.set()
        await stop.wait()

    async def gated(stop: wf.StopReceiver) -> None:
        events.append("gated ran")

    report = await service_of(
        make_task(K.PRECONDITION, "pre", slow_pre, events),
        make_task(K.UNCONSTRAINED, "free", unconstrained, events),
        make_task(K.TASK, "main", gated, events),
    ).run()
    assert report.ok
    assert events.index("unconstrained saw the barrier closed") < events.index("end pre")
    assert events.index("end pre") < events.index("start main")


async def test_oneshot_only_service_ends_cleanly() -> None:
    events: list[str] = []
    report = await service_of(
        make_task(K.PRECONDITION, "pre", returns, events),
        make_task(K.ONESHOT, "a", returns, events),
        make_task(K.UNCONSTRAINED_ONESHOT, "b", returns, events),
    ).run()
    assert report.ok
    assert report.stop_reason is None
    assert {t.state for t in report.tasks.values()} == {S.FINISHED}


async def test_oneshot_failure_reported_under_its_own_id() -> None:
    events: list[str] = []
    with pytest.raises(wf.ServiceError, match="task 'migrate' failed") as info:
        await service_of(
            make_task(K.ONESHOT, "migrate", raises, events),
            make_task(K.TASK, "serve", forever, events),
        ).run()
    assert info.value.report.tasks["migrate"].state is S.FAILED
    assert set(info.value.report.tasks) == {"migrate", "serve"}


async def test_task_ignoring_stop_times_out(autojump_clock: trio.testing.MockClock) -> None:
    events: list[str] = []
    service = service_of(
        make_task(K.TASK, "stubborn", ignores_stop, events),
        make_task(K.TASK, "quick", returns, events),
        grace=30.0,
    )
    start = trio.current_time()
    with pytest.raises(wf.ServiceError, match="'stubborn' timed_out") as info:
        await service.run()
    assert trio.current_time() - start == pytest.approx(30.0)
    stubborn = info.value.report.tasks["stubborn"]
    assert stubborn.state is S.TIMED_OUT
    assert stubborn.error is not None and "30 s grace" in stubborn.error.message
    assert events[-1] == "end stubborn"  # it was cancelled, its finally ran


async def test_second_stop_during_grace_cancels_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    events: list[str] = []
    service = service_of(make_task(K.TASK, "stubborn", ignores_stop, events), grace=30.0)
    async with trio.open_nursery() as nursery:

        async def run() -> None:
            with pytest.raises(wf.ServiceError) as info:
                await service.run()
            assert info.value.report.tasks["stubborn"].state is S.TIMED_OUT
            assert "second stop request" in str(info.value)

        nursery.start_soon(run)
        await trio.sleep(1)
        service.stop("first")
        await trio.sleep(1)
        assert service.phase == "stopping"
        start = trio.current_time()
        service.stop("second")
    assert trio.current_time() - start < 1


async def test_stop_from_outside_stops_everything_cleanly() -> None:
    events: list[str] = []
    service = service_of(
        make_task(K.TASK, "a", forever, events), make_task(K.UNCONSTRAINED, "b", forever, events)
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(service.run)
        await trio.testing.wait_all_tasks_blocked()
        assert service.status().tasks["a"].state is S.RUNNING
        service.stop("test says so")
    report = service.status()
    assert report.ok and report.stop_reason == "test says so"
    assert {t.state for t in report.tasks.values()} == {S.STOPPED}


async def test_cancelled_caused_by_stop_is_stopped_not_failed() -> None:
    events: list[str] = []

    async def uses_cancel_on_stop(stop: wf.StopReceiver) -> None:
        with stop.cancel_on_stop() as scope:
            await trio.sleep_forever()
        assert scope.cancelled_caught

    async def reraises_cancelled(stop: wf.StopReceiver) -> None:
        # a task that lets the Cancelled of its own stop-driven scope escape as a group
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            await stop.wait()
            nursery.cancel_scope.cancel()

    report = await service_of(
        make_task(K.TASK, "a", uses_cancel_on_stop, events),
        make_task(K.TASK, "b", reraises_cancelled, events),
        make_task(K.TASK, "quit", returns, events),
    ).run()
    assert report.tasks["a"].state is S.STOPPED
    assert report.tasks["b"].state is S.STOPPED


async def test_task_decorator_and_duplicate_ids() -> None:
    @wf.task(kind="OneshotTask", id="once")
    async def once(stop: wf.StopReceiver) -> None:
        pass

    assert isinstance(once, wf.OneshotTask) and once.id == "once"
    report = await service_of(once).run()
    assert report.tasks["once"].kind is K.ONESHOT

    with pytest.raises(ValueError, match="unknown task kind"):
        wf.task(kind="Daemon")

    events: list[str] = []
    dup = service_of(
        make_task(K.TASK, "x", forever, events), make_task(K.TASK, "x", forever, events)
    )
    with pytest.raises(wf.WiringError, match="task id 'x'"):
        await dup.run()


async def test_status_and_listeners_follow_the_run() -> None:
    events: list[str] = []
    service = service_of(
        make_task(K.PRECONDITION, "pre", returns, events),
        make_task(K.ONESHOT, "job", returns, events),
    )
    changes: list[tuple[str, str]] = []
    service.add_listener(lambda t: changes.append((t.id, t.state.value)))
    assert service.phase == "new"
    await service.run()
    assert service.phase == "done"
    assert changes.index(("pre", "finished")) < changes.index(("job", "running"))
    assert ("job", "waiting") in changes
    with pytest.raises(RuntimeError, match="runs once"):
        await service.run()


def test_run_sync_for_scripts() -> None:
    events: list[str] = []
    report = wf.run(
        wf.ServiceBuilder(handle_signals=False).add_layer(
            __import__("layerkit").TasksLayer([make_task(K.ONESHOT, "one", returns, events)])
        )
    )
    assert report.tasks["one"].state is S.FINISHED


async def test_task_cancelled_inside_its_own_nursery_times_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The grace period's Cancelled reaches the service wrapped in the task's nursery group."""
    events: list[str] = []

    async def nursery_ignoring_stop(stop: wf.StopReceiver) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            await trio.sleep_forever()

    service = service_of(
        make_task(K.TASK, "stubborn", nursery_ignoring_stop, events),
        make_task(K.TASK, "quick", returns, events),
        grace=5.0,
    )
    with pytest.raises(wf.ServiceError, match="'stubborn' timed_out") as info:
        await service.run()
    assert info.value.report.tasks["stubborn"].state is S.TIMED_OUT
