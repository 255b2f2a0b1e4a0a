"""Wiring: the graph from declared types, every problem at once, lifetimes and hooks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from layerkit import (
    Cache,
    CacheLayer,
    Database,
    DbLayer,
    DbOut,
    Mailer,
    TasksLayer,
    TasksOut,
    make_task,
    raises,
    returns,
)

import wireframe as wf

K = wf.TaskKind


@attrs.frozen
class AppIn:
    db: Database
    cache: Cache | None = None
    mailer: Mailer | None = None


@attrs.frozen
class AppOut:
    main: wf.Task
    hook: wf.ShutdownHook


@attrs.frozen
class AppLayer(wf.WiringLayer[AppIn, AppOut]):
    log: list[str] = attrs.field(factory=list, eq=False)
    fail: bool = False
    name: str = "app"

    async def wire(self, input: AppIn) -> AppOut:
        self.log.append(f"app cache={input.cache} mailer={input.mailer}")
        body = raises if self.fail else returns

        async def hook() -> None:
            self.log.append("hook")

        return AppOut(make_task(K.TASK, "main", body, self.log), wf.ShutdownHook("flush", hook))


def builder() -> wf.ServiceBuilder:
    return wf.ServiceBuilder(handle_signals=False)


async def test_dependency_order_is_independent_of_add_order() -> None:
    log: list[str] = []
    layers = [AppLayer(log), CacheLayer(log), DbLayer(log)]
    plan = builder().add_layer(layers[0]).add_layer(layers[1]).add_layer(layers[2]).plan()
    assert [n.name for n in plan.layers] == ["db", "cache", "app"]
    plan2 = builder().add_layer(layers[2]).add_layer(layers[1]).add_layer(layers[0]).plan()
    assert [n.name for n in plan2.layers] == ["db", "cache", "app"]


async def test_ties_keep_add_order() -> None:
    a = TasksLayer([], name="a")
    b = TasksLayer([], name="b")
    c = TasksLayer([], name="c")
    assert [n.name for n in builder().add_layer(b).add_layer(c).add_layer(a).plan().layers] == [
        "b",
        "c",
        "a",
    ]


async def test_teardown_runs_after_tasks_in_reverse_wiring_order() -> None:
    log: list[str] = []
    service = builder().add_layer(AppLayer(log)).add_layer(CacheLayer(log)).add_layer(DbLayer(log))
    report = await service.build().run()
    assert log == [
        "open db",
        "open cache",
        "app cache=Cache(size=10) mailer=None",
        "start main",
        "end main",
        "hook",
        "close cache",
        "close db",
    ]
    assert [(h.name, h.what) for h in report.shutdown] == [
        ("flush", "hook"),
        ("cache", "teardown"),
        ("db", "teardown"),
    ]


async def test_teardown_runs_even_when_a_task_fails() -> None:
    log: list[str] = []
    service = builder().add_layer(AppLayer(log, fail=True)).add_layer(DbLayer(log)).build()
    with pytest.raises(wf.ServiceError):
        await service.run()
    assert log[-3:] == ["end main", "hook", "close db"]


async def test_optional_input_is_none_when_absent() -> None:
    log: list[str] = []
    await builder().add_layer(AppLayer(log)).add_layer(DbLayer(log)).build().run()
    assert "app cache=None mailer=None" in log


async def test_missing_resource_names_layer_and_resource() -> None:
    with pytest.raises(wf.WiringError) as info:
        builder().add_layer(CacheLayer()).build()
    (problem,) = info.value.problems
    assert problem.layer == "cache" and problem.resource == "Database"
    assert "takes resource Database" in str(info.value)


async def test_duplicate_provider() -> None:
    with pytest.raises(wf.ResourceAlreadyProvided) as info:
        builder().add_layer(DbLayer()).add_layer(DbLayer(name="db2")).build()
    assert "layer 'db2': gives resource Database, which layer 'db' already gives" in str(info.value)


async def test_errors_from_several_layers_all_reported() -> None:
    @attrs.frozen
    class BadOut:
        anything: object  # fine: a resource of type object
        either: int | str  # not fine

    @attrs.frozen
    class BadLayer(wf.WiringLayer[None, BadOut]):
        name = "bad"

        async def wire(self, input: None) -> BadOut:
            raise AssertionError("never wired")

    with pytest.raises(wf.WiringError) as info:
        builder().add_layer(CacheLayer()).add_layer(AppLayer()).add_layer(BadLayer()).build()
    by_layer = {p.layer for p in info.value.problems}
    assert by_layer == {"cache", "app", "bad"}
    assert len(info.value.problems) == 3


async def test_cycle_detected() -> None:
    @attrs.frozen
    class AIn:
        mailer: Mailer

    @attrs.frozen
    class BIn:
        db: Database

    @attrs.frozen
    class MailOut:
        mailer: Mailer

    @attrs.frozen
    class ALayer(wf.WiringLayer[AIn, DbOut]):
        name = "a"

        async def wire(self, input: AIn) -> DbOut:
            raise AssertionError

    @attrs.frozen
    class BLayer(wf.WiringLayer[BIn, MailOut]):
        name = "b"

        async def wire(self, input: BIn) -> MailOut:
            raise AssertionError

    with pytest.raises(wf.WiringError, match="cycle") as info:
        builder().add_layer(ALayer()).add_layer(BLayer()).build()
    text = str(info.value)
    assert "'a' takes Mailer from 'b'" in text and "'b' takes Database from 'a'" in text


@attrs.frozen
class Edge(wf.WiringLayer[Any, Any]):
    """A layer that takes ``takes`` and gives ``gives``: a test's graph, edge by edge."""

    name: str
    takes: tuple[type, ...] = ()
    gives: tuple[type, ...] = ()

    def input_type(self) -> type | None:
        fields = {f"t{i}": attrs.field(type=t) for i, t in enumerate(self.takes)}
        return attrs.make_class(f"{self.name}In", fields, frozen=True) if fields else None

    def output_type(self) -> type | None:
        fields = {f"g{i}": attrs.field(type=t) for i, t in enumerate(self.gives)}
        return attrs.make_class(f"{self.name}Out", fields, frozen=True) if fields else None

    async def wire(self, input: Any) -> Any:
        raise AssertionError("never wired")


async def test_every_cycle_is_named_once_and_a_layer_behind_one_is_not() -> None:
    layers = [
        Edge("ok", gives=(Cache,)),
        Edge("a", takes=(Mailer, Cache), gives=(Database,)),
        Edge("b", takes=(Database,), gives=(Mailer,)),
        Edge("waits", takes=(Database,), gives=(str,)),  # behind the a-b cycle, not on it
        Edge("c", takes=(int,), gives=(float,)),
        Edge("d", takes=(float,), gives=(bytes,)),
        Edge("e", takes=(bytes,), gives=(int,)),
        Edge("self", takes=(complex,), gives=(complex,)),
    ]
    b = builder()
    for layer in layers:
        b.add_layer(layer)
    with pytest.raises(wf.WiringError) as info:
        b.build()
    by_layer = {p.layer: p.message for p in info.value.problems}
    assert list(by_layer) == ["a", "c", "self"]
    assert by_layer["a"] == (
        "is in a dependency cycle: 'a' takes Mailer from 'b'; 'b' takes Database from 'a'"
    )
    assert by_layer["c"] == (
        "is in a dependency cycle: 'c' takes int from 'e'; 'd' takes float from 'c'; "
        "'e' takes bytes from 'd'"
    )
    assert "takes resource complex (field 't0'), which it gives itself" in by_layer["self"]


async def test_failing_wire_names_the_layer_and_all_failures_are_reported() -> None:
    @attrs.frozen
    class Boom(wf.WiringLayer[None, None]):
        name: str = "boom"

        async def wire(self, input: None) -> None:
            raise OSError("disk on fire")

    log: list[str] = []
    service = (
        builder()
        .add_layer(DbLayer(log))
        .add_layer(Boom())
        .add_layer(Boom(name="boom2"))
        .add_layer(TasksLayer([make_task(K.TASK, "t", returns, log)]))
        .build()
    )
    with pytest.raises(wf.WiringError) as info:
        await service.run()
    assert [p.layer for p in info.value.problems] == ["boom", "boom2"]
    assert "wire() raised OSError: disk on fire" in str(info.value)
    assert info.value.problems[0].error is not None
    assert log == ["open db", "close db"]  # what was wired is torn down; no task ran


async def test_dependents_of_a_failed_layer_are_not_wired() -> None:
    @attrs.frozen
    class BadDb(wf.WiringLayer[None, DbOut]):
        name = "db"

        async def wire(self, input: None) -> DbOut:
            raise RuntimeError("no database")

    log: list[str] = []
    with pytest.raises(wf.WiringError) as info:
        await builder().add_layer(BadDb()).add_layer(CacheLayer(log)).build().run()
    assert [p.layer for p in info.value.problems] == ["db", "cache"]
    assert "failed layer(s) ['db']" in str(info.value)
    assert log == []


async def test_same_name_first_wins_and_replace_layer() -> None:
    first = TasksLayer([], name="x")
    second = TasksLayer([], name="x")
    b = builder().add_layer(first).add_layer(second)
    assert b.layers == (first,) and b.layers[0] is first
    b.replace_layer(second)
    assert b.layers[0] is second
    with pytest.raises(KeyError, match="no layer named 'y'"):
        b.replace_layer(TasksLayer([], name="y"))


async def test_unique_resource_taken_twice() -> None:
    @attrs.frozen
    class Conn:
        n: int

    unique = wf.Unique(Conn(1))
    assert unique.take("layer 'a'") == Conn(1)
    with pytest.raises(wf.ResourceTaken, match="already taken by layer 'a'"):
        unique.take("layer 'b'")


async def test_unique_through_layers() -> None:
    taken: list[object] = []

    @attrs.frozen
    class ChanOut:
        chan: wf.Unique[Mailer]

    @attrs.frozen
    class ChanIn:
        chan: wf.Unique[Mailer]

    @attrs.frozen
    class Giver(wf.WiringLayer[None, ChanOut]):
        name = "giver"

        async def wire(self, input: None) -> ChanOut:
            return ChanOut(wf.Unique(Mailer("smtp")))

    @attrs.frozen
    class Taker(wf.WiringLayer[ChanIn, TasksOut]):
        name: str = "taker"

        async def wire(self, input: ChanIn) -> TasksOut:
            taken.append(input.chan.take(f"layer {self.name!r}"))
            return TasksOut([make_task(K.ONESHOT, f"t-{self.name}", returns, [])])

    service = (
        builder().add_layer(Giver()).add_layer(Taker()).add_layer(Taker(name="taker2")).build()
    )
    with pytest.raises(wf.WiringError, match="already taken by layer 'taker'"):
        await service.run()
    assert taken == [Mailer("smtp")]


async def test_hooks_fail_and_time_out_and_are_reported(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ran: list[str] = []

    async def ok() -> None:
        ran.append("ok")

    async def bad() -> None:
        ran.append("bad")
        raise ValueError("hook broke")

    async def slow() -> None:
        ran.append("slow")
        await trio.sleep(100)

    @attrs.frozen
    class HooksOut:
        hooks: list[wf.ShutdownHook]
        task: wf.OneshotTask

    @attrs.frozen
    class Hooks(wf.WiringLayer[None, HooksOut]):
        name = "hooks"

        async def wire(self, input: None) -> HooksOut:
            return HooksOut(
                [
                    wf.ShutdownHook("bad", bad),
                    wf.ShutdownHook("slow", slow, timeout=2.0),
                    wf.ShutdownHook("ok", ok),
                ],
                make_task(K.ONESHOT, "once", returns, []),  # type: ignore[arg-type]
            )

    with pytest.raises(wf.ServiceError) as info:
        await builder().add_layer(Hooks()).build().run()
    assert ran == ["bad", "slow", "ok"]
    states = {h.name: h.state for h in info.value.report.shutdown}
    assert states == {
        "bad": wf.TaskState.FAILED,
        "slow": wf.TaskState.TIMED_OUT,
        "ok": wf.TaskState.FINISHED,
    }
    message = str(info.value)
    assert "hook 'bad' failed: ValueError: hook broke" in message
    assert "hook 'slow' timed_out" in message


async def test_teardown_that_times_out_is_reported(autojump_clock: trio.testing.MockClock) -> None:
    @attrs.frozen
    class SlowClose(wf.WiringLayer[None, TasksOut]):
        name = "slow-close"

        async def wire(self, input: None) -> AsyncIterator[TasksOut]:
            yield TasksOut([make_task(K.ONESHOT, "x", returns, [])])
            await trio.sleep_forever()

    service = wf.ServiceBuilder(graceful_shutdown_timeout=3, handle_signals=False)
    with pytest.raises(wf.ServiceError, match="teardown 'slow-close' timed_out"):
        await service.add_layer(SlowClose()).build().run()


async def test_layer_without_generic_args_is_a_clear_error() -> None:
    class NoTypes(wf.WiringLayer):  # type: ignore[type-arg]
        name = "untyped"

    with pytest.raises(wf.WiringError, match=r"layer 'untyped': .*WiringLayer\[Input, Output\]"):
        builder().add_layer(NoTypes()).build()


async def test_wire_returning_wrong_type_names_the_layer() -> None:
    @attrs.frozen
    class Liar(wf.WiringLayer[None, DbOut]):
        name = "liar"

        async def wire(self, input: None) -> DbOut:
            return "not a DbOut"  # type: ignore[return-value]

    with pytest.raises(
        wf.WiringError, match="layer 'liar': wire\\(\\) returned str, expected DbOut"
    ):
        await builder().add_layer(Liar()).build().run()


async def test_a_layer_taking_its_own_output_is_named_plainly() -> None:
    @attrs.frozen
    class SelfIn:
        db: Database

    @attrs.frozen
    class SelfLayer(wf.WiringLayer[SelfIn, DbOut]):
        name = "selfish"

        async def wire(self, input: SelfIn) -> DbOut:
            raise AssertionError

    with pytest.raises(wf.WiringError) as info:
        builder().add_layer(SelfLayer()).build()
    (problem,) = info.value.problems
    assert problem.resource == "Database"
    assert "which it gives itself" in problem.message


@attrs.frozen
class StatusIn:
    status: wf.ServiceStatus


async def test_every_service_gives_its_own_status() -> None:
    seen: list[tuple[str, bool, dict[str, str]]] = []

    @attrs.frozen
    class Watcher(wf.WiringLayer[StatusIn, TasksOut]):
        name = "watcher"

        async def wire(self, input: StatusIn) -> TasksOut:
            async def look(stop: wf.StopReceiver) -> None:
                report = input.status.report()
                states = {t.id: t.state.value for t in report.tasks.values()}
                seen.append((input.status.phase, input.status.barrier_open, states))

            return TasksOut([make_task(K.ONESHOT, "look", look, [])])

    plan = builder().add_layer(Watcher()).plan()
    assert plan.providers[wf.ServiceStatus] == "(the service)"
    await builder().add_layer(Watcher()).build().run()
    assert seen == [("running", True, {"look": "running"})]


async def test_no_layer_may_give_the_service_status() -> None:
    @attrs.frozen
    class StatusOut:
        status: wf.ServiceStatus

    @attrs.frozen
    class Impostor(wf.WiringLayer[None, StatusOut]):
        name = "impostor"

        async def wire(self, input: None) -> StatusOut:
            raise AssertionError

    with pytest.raises(wf.WiringError, match="which the service gives itself"):
        builder().add_layer(Impostor()).build()
