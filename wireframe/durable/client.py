"""The orchestration client: start instances, wait for them, send them events, manage them.

:func:`connect` opens a broker by URL (the same URLs as :func:`wireframe.jobs.connect`)
and gives a :class:`Client`. With ``memory://?workers=N`` it also runs N emulated job
workers and an orchestration worker in the block, on trio's clock, so a test can drive
a whole orchestration under ``MockClock``.
"""

from __future__ import annotations

import builtins
import datetime as dt
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio

from wireframe.durable.errors import DurableError
from wireframe.durable.history import (
    Event,
    EventRaised,
    ExecutionResumed,
    ExecutionStarted,
    ExecutionSuspended,
    ExecutionTerminated,
)
from wireframe.durable.registry import name_of, spec_named
from wireframe.durable.store import (
    Instance,
    OrchestrationStore,
    Status,
    UnknownInstance,
)
from wireframe.durable.worker import OrchestrationWorker, store_of
from wireframe.jobs import codec
from wireframe.jobs.broker import Broker
from wireframe.jobs.runtime import connect as jobs_connect
from wireframe.jobs.runtime import emulated_workers

__all__ = ["Client", "connect"]

_MAX_ID = 256


def _plain(value: Any, typ: Any, where: str) -> Any:
    """``value`` as plain data a store keeps; :class:`DurableError` naming ``where`` if it is not."""
    try:
        data = codec.unstructure(value, typ)
        codec._packb(data)
    except Exception as exc:
        raise DurableError(
            f"{where}: {value!r} cannot be encoded as {typ!r} ({type(exc).__name__}: {exc})"
        ) from None
    return data


def _check_id(instance_id: str, where: str) -> None:
    if not isinstance(instance_id, str) or not 0 < len(instance_id) <= _MAX_ID:
        raise DurableError(
            f"{where}: instance_id={instance_id!r} must be a non-empty string of at most "
            f"{_MAX_ID} characters"
        )


class Client:
    """Start, follow and manage orchestration instances on one broker."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.store: OrchestrationStore = store_of(broker)
        self._offset = time.time() - broker.clock()

    async def start(
        self,
        fn: Callable[..., Any],
        input: Any = None,
        *,
        instance_id: str | None = None,
        start_at: dt.datetime | None = None,
        version: str | None = None,
        reuse: str | None = None,
    ) -> str:
        """Start orchestrator ``fn`` on ``input``; its instance id.

        ``start_at`` (an aware datetime) delays its first turn. An id that
        exists raises :class:`InstanceExists`, unless the instance finished and
        ``reuse="replace"``.
        """
        spec = spec_named(name_of(fn))
        iid = instance_id if instance_id is not None else uuid.uuid4().hex
        _check_id(iid, f"start of {spec.name!r}")
        if reuse not in (None, "replace"):
            raise DurableError(f"start of {spec.name!r}: reuse={reuse!r}: give None or 'replace'")
        if start_at is not None and start_at.tzinfo is None:
            raise DurableError(f"start of {spec.name!r}: start_at={start_at!r} has no time zone")
        try:
            data = codec.unstructure(input, spec.input_type)
            codec._packb(data)
        except Exception as exc:
            raise DurableError(
                f"start of {spec.name!r}: its input {input!r} cannot be encoded as "
                f"{spec.input_type!r} ({type(exc).__name__}: {exc})"
            ) from None
        visible = -math.inf if start_at is None else start_at.timestamp() - self._offset
        row = Instance(iid, spec.name, Status.PENDING, data, version=version)
        first = ExecutionStarted(spec.name, data, version)
        await self.store.create_instance(row, first, visible_at=visible, replace=reuse is not None)
        return iid

    async def get(self, instance_id: str) -> Instance | None:
        """The instance now, or None if there is none."""
        return await self.store.instance(instance_id)

    async def history(self, instance_id: str) -> builtins.list[Event]:
        """The instance's history events, in order."""
        return await self.store.history(instance_id)

    async def _wait(
        self, instance_id: str, done: Callable[[Instance], bool], timeout: float
    ) -> Instance:
        inst: Instance | None = None
        with trio.move_on_after(timeout):
            inst = await self.store.instance(instance_id)
            while True:
                if inst is None:
                    raise UnknownInstance(f"no orchestration instance has id {instance_id!r}")
                if done(inst):
                    return inst
                inst = await self.store.wait_changed(instance_id, inst.revision)
        now = "not read yet" if inst is None else f"still {inst.status.value}"
        raise trio.TooSlowError(f"instance {instance_id!r} is {now} after {timeout:g} s")

    async def wait_started(self, instance_id: str, timeout: float = math.inf) -> Instance:
        """The instance once its first turn ran (``trio.TooSlowError`` after ``timeout``)."""
        return await self._wait(instance_id, lambda i: i.status is not Status.PENDING, timeout)

    async def wait_completed(self, instance_id: str, timeout: float = math.inf) -> Instance:
        """The instance once completed, failed or terminated (``trio.TooSlowError`` after ``timeout``)."""
        return await self._wait(instance_id, lambda i: i.status.finished, timeout)

    async def raise_event(self, instance_id: str, name: str, data: Any = None) -> None:
        """Send event ``name`` with ``data`` to the instance (buffered until it waits for it)."""
        if not name:
            raise DurableError(f"raise_event on {instance_id!r}: the event name is empty")
        data = _plain(data, Any, f"raise_event {name!r} on {instance_id!r}: its data")
        await self.store.send_event(instance_id, EventRaised(name, data))

    async def suspend(self, instance_id: str, reason: str = "") -> None:
        """Suspend the instance: events wait, nothing runs, until :meth:`resume`."""
        await self.store.send_event(instance_id, ExecutionSuspended(reason))

    async def resume(self, instance_id: str) -> None:
        """Resume a suspended instance."""
        await self.store.send_event(instance_id, ExecutionResumed())

    async def terminate(self, instance_id: str, output: Any = None, recursive: bool = True) -> None:
        """Terminate the instance (and, by default, its unfinished children)."""
        inst = await self.store.instance(instance_id)
        if inst is None:
            raise UnknownInstance(f"terminate: no orchestration instance has id {instance_id!r}")
        if inst.status.finished:
            return
        data = _plain(output, Any, f"terminate of {instance_id!r}: its output")
        await self.store.send_event(instance_id, ExecutionTerminated(data))
        if recursive:
            for child in await self._children(instance_id):
                if not child.status.finished:
                    await self.terminate(child.id, recursive=True)

    async def purge(self, instance_id: str, recursive: bool = True) -> None:
        """Remove a finished instance and its history (and its children's, by default)."""
        inst = await self.store.instance(instance_id)
        if inst is None:
            raise UnknownInstance(f"purge: no orchestration instance has id {instance_id!r}")
        if not inst.status.finished:
            raise DurableError(
                f"purge: instance {instance_id!r} is {inst.status.value}; only a completed, "
                "failed or terminated instance can be purged (terminate it first)"
            )
        family = [inst, *(await self._descendants(instance_id))] if recursive else [inst]
        running = [i.id for i in family if not i.status.finished]
        if running:  # purge all or nothing
            raise DurableError(
                f"purge: instance {instance_id!r} has unfinished children {running}; "
                "terminate them first, or purge with recursive=False"
            )
        for member in reversed(family):
            await self.store.purge_instance(member.id)

    async def _descendants(self, instance_id: str) -> builtins.list[Instance]:
        found = []
        for child in await self._children(instance_id):
            found += [child, *(await self._descendants(child.id))]
        return found

    async def list(
        self, status: Status | str | None = None, limit: int = 100
    ) -> builtins.list[Instance]:
        """Instances, most recently updated first (of one status, if given)."""
        wanted = Status(status) if isinstance(status, str) else status
        return await self.store.instances(wanted, limit)

    async def _children(self, instance_id: str) -> builtins.list[Instance]:
        return [
            i for i in await self.store.instances(None, 1_000_000) if i.parent_id == instance_id
        ]


@asynccontextmanager
async def connect(url: str, *, concurrency: int = 64) -> AsyncIterator[Client]:
    """A :class:`Client` on the broker ``url`` names.

    ``memory://NAME?workers=N`` also runs N job workers and one orchestration
    worker (of ``concurrency`` turns) in this block, on trio's clock.
    """
    async with jobs_connect(url) as rt:
        if not emulated_workers(rt.broker.url):
            yield Client(rt.broker)
            return
        async with trio.open_nursery() as nursery:
            worker = OrchestrationWorker(rt.broker, concurrency=concurrency, queue=rt.queue)
            await nursery.start(worker.serve)
            try:
                yield Client(rt.broker)
            finally:
                nursery.cancel_scope.cancel()
