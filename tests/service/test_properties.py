"""Property tests: random sets of task kinds and outcomes keep the table's invariants."""

from __future__ import annotations

import attrs
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from layerkit import make_task, service_of

import wireframe as wf

K = wf.TaskKind
S = wf.TaskState

OUTCOMES = ("return", "raise", "wait_stop")


@attrs.frozen
class Spec:
    kind: wf.TaskKind
    outcome: str
    delay: int  # whole seconds on the mock clock


specs = st.lists(
    st.builds(Spec, st.sampled_from(list(K)), st.sampled_from(OUTCOMES), st.integers(0, 3)),
    min_size=1,
    max_size=7,
)


def body_for(spec: Spec):  # type: ignore[no-untyped-def]
    async def body(stop: wf.StopReceiver) -> None:
        if spec.outcome == "wait_stop":
            await stop.wait()
            return
        await trio.sleep(spec.delay)
        if spec.outcome == "raise":
            raise ValueError("planned failure")

    return body


async def sentinel(stop: wf.StopReceiver) -> None:
    with stop.cancel_on_stop():
        await trio.sleep(100)


def run_specs(specs: list[Spec]) -> tuple[wf.ServiceReport, list[str]]:
    events: list[str] = []
    tasks = [make_task(s.kind, f"t{i}", body_for(s), events) for i, s in enumerate(specs)]
    # a sentinel ends every run at t=100 (all planned delays are <= 3 s), so a service of
    # tasks that all wait for the stop still ends
    tasks.append(make_task(K.UNCONSTRAINED, "sentinel", sentinel, events))
    service = service_of(*tasks, grace=5)

    async def main() -> wf.ServiceReport:
        try:
            return await service.run()
        except wf.ServiceError as exc:
            return exc.report

    report = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return report, events


@settings(max_examples=150, deadline=None)
@given(specs)
def test_task_table_invariants(specs: list[Spec]) -> None:
    report, _ = run_specs(specs)
    tasks = [report.tasks[f"t{i}"] for i in range(len(specs))]
    any_failed = any(t.state is S.FAILED for t in tasks)

    # every task ends in a final state; the report is ok iff nothing failed
    assert all(t.state.is_final for t in tasks)
    assert report.ok == (not any_failed)
    # only a raising task is failed, and it is reported under its own id
    for spec, t in zip(specs, tasks, strict=True):
        if t.state is S.FAILED:
            assert spec.outcome == "raise"
            assert t.error is not None and t.error.type == "ValueError"
        if t.state is S.TIMED_OUT:
            raise AssertionError(f"well-behaved task {t.id} timed out")

    preconditions = [t for s, t in zip(specs, tasks, strict=True) if s.kind is K.PRECONDITION]
    gated = [t for s, t in zip(specs, tasks, strict=True) if s.kind.gated]
    # gated tasks start only after every precondition finished
    for g in gated:
        if g.started_at is not None:
            assert all(p.state is S.FINISHED for p in preconditions)
            assert all(p.ended_at is not None and p.ended_at <= g.started_at for p in preconditions)
    # a failed precondition means no gated task started
    if any(p.state is S.FAILED for p in preconditions):
        assert all(g.started_at is None for g in gated)
    # unconstrained tasks and preconditions always start
    for s, t in zip(specs, tasks, strict=True):
        if not s.kind.gated:
            assert t.started_at is not None
    # the service stops iff a Task/UnconstrainedTask returned on its own or any task raised;
    # otherwise (only oneshots/preconditions end, nothing failed) there is no stop reason
    stoppers = [
        t
        for s, t in zip(specs, tasks, strict=True)
        if s.kind.stops_service_on_return and t.state is S.FINISHED
    ]
    assert report.stop_reason is not None
    if report.stop_reason == "task 'sentinel' returned":
        assert not any_failed and not stoppers
    else:
        assert any_failed or stoppers
        assert report.tasks["sentinel"].state is S.STOPPED
    # oneshots and preconditions that return on their own always finish
    for s, t in zip(specs, tasks, strict=True):
        if (
            not s.kind.stops_service_on_return
            and s.outcome == "return"
            and t.started_at is not None
        ):
            assert t.state is S.FINISHED
