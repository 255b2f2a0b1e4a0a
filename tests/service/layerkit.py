"""Small layers and tasks the service tests assemble services from.

The resources here (``Database``, ``Cache``, ``Mailer``) and the layers that
give them are shared with the CLI's test services, which import this module
(``tests/cli/services/cli_wiring.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

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


# -- resources and the layers that give them (shared with tests/cli/services/cli_wiring.py)


@attrs.frozen
class Database:
    url: str


@attrs.frozen
class Cache:
    size: int


@attrs.frozen
class Mailer:
    host: str


@attrs.frozen
class DbOut:
    db: Database


@attrs.frozen
class DbLayer(wf.WiringLayer[None, DbOut]):
    """Gives a Database for its lifetime, logging its opening and closing."""

    log: list[str] = attrs.field(factory=list, eq=False)
    name: str = "db"

    async def wire(self, input: None) -> AsyncIterator[DbOut]:
        self.log.append("open db")
        yield DbOut(Database("sqlite://"))
        self.log.append("close db")


@attrs.frozen
class CacheIn:
    db: Database


@attrs.frozen
class CacheOut:
    cache: Cache


@attrs.frozen
class CacheLayer(wf.WiringLayer[CacheIn, CacheOut]):
    """Takes the Database, gives a Cache for its lifetime, logging as DbLayer does."""

    log: list[str] = attrs.field(factory=list, eq=False)
    name: str = "cache"

    async def wire(self, input: CacheIn) -> AsyncIterator[CacheOut]:
        assert input.db.url == "sqlite://"
        self.log.append("open cache")
        yield CacheOut(Cache(10))
        self.log.append("close cache")
