"""Small layers and tasks the service tests assemble services from."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs
import trio

import wireframe as wf

Body = Callable[[wf.StopReceiver], Awaitable[None]]


@attrs.define
class FnTask:
    """Records when it started and ended; its body decides what it does."""

    id: str
    body: Body
    events: list[str]

    async def run(self, stop: wf.StopReceiver) -> None:
        self.events.append(f"start {self.id}")
        try:
            await self.body(stop)
        finally:
            self.events.append(f"end {self.id}")


def make_task(kind: wf.TaskKind, id: str, body: Body, events: list[str]) -> wf.Task:
    """A task of ``kind`` whose run is ``body``."""
    cls = {
        wf.TaskKind.TASK: KTask,
        wf.TaskKind.ONESHOT: KOneshot,
        wf.TaskKind.PRECONDITION: KPrecondition,
        wf.TaskKind.UNCONSTRAINED: KUnconstrained,
        wf.TaskKind.UNCONSTRAINED_ONESHOT: KUnconstrainedOneshot,
    }[kind]
    return cls(id, body, events)  # type: ignore[return-value]


@attrs.define
class KTask(FnTask, wf.Task):
    pass


@attrs.define
class KOneshot(FnTask, wf.OneshotTask):
    pass


@attrs.define
class KPrecondition(FnTask, wf.Precondition):
    pass


@attrs.define
class KUnconstrained(FnTask, wf.UnconstrainedTask):
    pass


@attrs.define
class KUnconstrainedOneshot(FnTask, wf.UnconstrainedOneshotTask):
    pass


@attrs.frozen
class TasksOut:
    tasks: list[wf.Task]


@attrs.frozen
class TasksLayer(wf.WiringLayer[None, TasksOut]):
    """Gives the tasks it was made with."""

    tasks: list[wf.Task]
    name: str = "tasks"

    async def wire(self, input: None) -> TasksOut:
        return TasksOut(self.tasks)


async def forever(stop: wf.StopReceiver) -> None:
    """A well-behaved long-running body: returns when the stop arrives."""
    await stop.wait()


async def returns(stop: wf.StopReceiver) -> None:
    """Returns at once."""
    await trio.lowlevel.checkpoint()


async def raises(stop: wf.StopReceiver) -> None:
    """Raises at once."""
    await trio.lowlevel.checkpoint()
    raise RuntimeError("boom")


async def ignores_stop(stop: wf.StopReceiver) -> None:
    """Never returns by itself."""
    await trio.sleep_forever()


def service_of(*tasks: wf.Task, grace: float = 30.0) -> wf.Service:
    """A service of one layer giving ``tasks``."""
    builder = wf.ServiceBuilder(graceful_shutdown_timeout=grace, handle_signals=False)
    return builder.add_layer(TasksLayer(list(tasks))).build()
