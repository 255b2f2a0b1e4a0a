"""Restart policies: failing tasks started again after a backoff, on trio's MockClock."""

from __future__ import annotations

import itertools

import pytest
import trio
import trio.testing
from layerkit import forever, make_task, service_of

import wireframe as wf

K = wf.TaskKind
S = wf.TaskState


def flaky(fail_times: int, starts: list[float], then: str = "return") -> object:
    """A task body that raises ``fail_times`` times, then returns or waits for the stop."""

    async def body(stop: wf.StopReceiver) -> None:
        starts.append(trio.current_time())
        if len(starts) <= fail_times:
            raise ConnectionError(f"lost the connection (start {len(starts)})")
        if then == "wait":
            await stop.wait()

    return body


def with_policy(task: wf.Task, policy: wf.RestartPolicy) -> wf.Task:
    task.restart = policy  # type: ignore[attr-defined]
    return task


async def test_a_failing_task_restarts_with_doubling_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    starts: list[float] = []
    task = with_policy(
        make_task(K.TASK, "consumer", flaky(3, starts), []),  # type: ignore[arg-type]
        wf.RestartPolicy(max_restarts=5, window=60.0, backoff=1.0, max_backoff=3.0),
    )
    report = await service_of(task).run()
    assert report.ok
    consumer = report.tasks["consumer"]
    assert consumer.state is S.FINISHED
    assert consumer.restarts == 3
    assert consumer.last_error is not None
    assert consumer.last_error.type == "ConnectionError"
    assert "start 3" in consumer.last_error.message
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(starts)]
    assert gaps == [1.0, 2.0, 3.0]  # doubling, capped at max_backoff


async def test_too_many_failures_within_the_window_stop_the_service(
    autojump_clock: trio.testing.MockClock,
) -> None:
    starts: list[float] = []
    task = with_policy(
        make_task(K.TASK, "consumer", flaky(100, starts), []),  # type: ignore[arg-type]
        wf.RestartPolicy(max_restarts=2, window=60.0, backoff=0.5),
    )
    other = make_task(K.TASK, "other", forever, [])
    with pytest.raises(wf.ServiceError, match="task 'consumer' failed") as info:
        await service_of(task, other).run()
    consumer = info.value.report.tasks["consumer"]
    assert consumer.state is S.FAILED
    assert consumer.restarts == 2
    assert len(starts) == 3
    assert consumer.error is not None and "start 3" in consumer.error.message
    assert info.value.report.tasks["other"].state is S.STOPPED


async def test_failures_outside_the_window_are_forgiven(
    autojump_clock: trio.testing.MockClock,
) -> None:
    starts: list[float] = []
    calls = 0

    async def fails_every_ten_seconds(stop: wf.StopReceiver) -> None:
        nonlocal calls
        calls += 1
        starts.append(trio.current_time())
        if calls <= 4:
            await trio.sleep(10)
            raise ConnectionError("dropped")

    task = with_policy(
        make_task(K.TASK, "consumer", fails_every_ten_seconds, []),
        wf.RestartPolicy(max_restarts=1, window=5.0, backoff=1.0),
    )
    report = await service_of(task).run()
    assert report.tasks["consumer"].restarts == 4
    # each failure is alone in its window: the backoff never doubles
    assert [round(b - a, 6) for a, b in itertools.pairwise(starts)] == [11.0] * 4


async def test_the_stop_ends_a_backoff_at_once(autojump_clock: trio.testing.MockClock) -> None:
    starts: list[float] = []
    task = with_policy(
        make_task(K.TASK, "consumer", flaky(100, starts), []),  # type: ignore[arg-type]
        wf.RestartPolicy(backoff=1000.0, max_backoff=1000.0),
    )

    async def stop_soon(stop: wf.StopReceiver) -> None:
        await trio.sleep(5)

    report = await service_of(task, make_task(K.TASK, "timer", stop_soon, [])).run()
    assert report.ok
    assert report.tasks["consumer"].state is S.STOPPED
    assert report.tasks["consumer"].restarts == 1
    assert report.ended_at is not None and report.ended_at < 10
    assert starts == [0.0]


async def test_a_oneshot_with_a_policy_runs_again_until_it_returns(
    autojump_clock: trio.testing.MockClock,
) -> None:
    starts: list[float] = []
    once = with_policy(
        make_task(K.ONESHOT, "migrate", flaky(2, starts), []),  # type: ignore[arg-type]
        wf.RestartPolicy(backoff=0.1),
    )
    report = await service_of(once).run()
    assert report.tasks["migrate"].state is S.FINISHED
    assert report.tasks["migrate"].restarts == 2


async def test_a_precondition_with_a_policy_keeps_the_barrier_closed_while_it_restarts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    starts: list[float] = []
    gated_start: list[float] = []
    pre = with_policy(
        make_task(K.PRECONDITION, "db-ready", flaky(2, starts), []),  # type: ignore[arg-type]
        wf.RestartPolicy(backoff=1.0),
    )

    async def gated(stop: wf.StopReceiver) -> None:
        gated_start.append(trio.current_time())

    report = await service_of(pre, make_task(K.TASK, "main", gated, [])).run()
    assert report.ok
    assert gated_start == [3.0]  # after backoffs of 1 s and 2 s


async def test_without_a_policy_the_first_failure_stops_the_service() -> None:
    starts: list[float] = []
    with pytest.raises(wf.ServiceError):
        await service_of(make_task(K.TASK, "consumer", flaky(1, starts), [])).run()  # type: ignore[arg-type]
    assert len(starts) == 1


async def test_the_listener_sees_each_restart(autojump_clock: trio.testing.MockClock) -> None:
    starts: list[float] = []
    task = with_policy(
        make_task(K.TASK, "consumer", flaky(2, starts), []),  # type: ignore[arg-type]
        wf.RestartPolicy(backoff=1.0),
    )
    service = service_of(task)
    seen: list[tuple[str, int]] = []
    service.add_listener(lambda r: seen.append((r.state.value, r.restarts)))
    await service.run()
    assert ("running", 1) in seen and ("running", 2) in seen
    assert seen[-1] == ("finished", 2)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"max_restarts": -1}, "max_restarts"),
        ({"window": float("nan")}, "window"),
        ({"backoff": -0.5}, "backoff"),
        ({"max_backoff": float("inf")}, "max_backoff"),
        ({"backoff": 10.0, "max_backoff": 1.0}, "max_backoff"),
        ({"max_restarts": 1.5}, "max_restarts"),
    ],
)
def test_bad_policies_are_refused_naming_the_field(kwargs: dict[str, float], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        wf.RestartPolicy(**kwargs)  # type: ignore[arg-type]


def test_a_restart_attribute_that_is_not_a_policy_is_a_wiring_error() -> None:
    task = with_policy(make_task(K.TASK, "consumer", forever, []), "always")  # type: ignore[arg-type]
    with pytest.raises(wf.WiringError, match="restart='always'") as info:
        trio.run(service_of(task).run)
    assert [p.layer for p in info.value.problems] == ["tasks"]


async def test_a_task_failing_after_the_stop_is_failed_not_restarted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def fails_when_stopped(stop: wf.StopReceiver) -> None:
        await stop.wait()
        raise ConnectionError("could not flush on the way out")

    task = with_policy(
        make_task(K.TASK, "consumer", fails_when_stopped, []), wf.RestartPolicy(backoff=1.0)
    )

    async def stop_soon(stop: wf.StopReceiver) -> None:
        await trio.sleep(1)

    with pytest.raises(wf.ServiceError, match="could not flush") as info:
        await service_of(task, make_task(K.TASK, "timer", stop_soon, [])).run()
    consumer = info.value.report.tasks["consumer"]
    assert consumer.state is S.FAILED and consumer.restarts == 0
