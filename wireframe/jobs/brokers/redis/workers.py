"""Worker records: each worker's heartbeat, and the list of live workers; schedules too.

A worker records itself (queue, concurrency, host, pid, when it started, how many
jobs it runs) with a time to live, and renews it while it serves; a record that
was not renewed in time is dropped when read. A scheduler announces its
schedules the same way, in a hash of their own (the same scripts). The runtime asks whether a queue has
workers, and ``stats`` counts them. The key: :mod:`.scripts.workers`.
"""

from __future__ import annotations

from typing import Any

import msgpack

from wireframe.jobs.broker import ScheduleInfo, WorkerInfo
from wireframe.jobs.brokers.redis.connection import Arg, Connection
from wireframe.jobs.brokers.redis.keys import Keys
from wireframe.jobs.brokers.redis.scripts import workers as scripts
from wireframe.jobs.brokers.redis.values import ms, text

__all__ = ["WorkerRecords", "parse_schedule", "parse_worker"]


def parse_worker(worker_id: str, raw: bytes) -> WorkerInfo | None:
    """A worker entry of ``P workers``, or None if unreadable."""
    try:
        seen_ms, _, info = msgpack.unpackb(raw, raw=True)
        queue, concurrency, host, pid, started_at, running = msgpack.unpackb(info, raw=False)
        return WorkerInfo(
            id=worker_id,
            queue=str(queue),
            concurrency=int(concurrency),
            host=str(host),
            pid=int(pid),
            started_at=float(started_at),
            running=int(running),
            seen_at=int(seen_ms) / 1000,
        )
    except (ValueError, TypeError, msgpack.UnpackException):
        return None


def parse_schedule(name: str, raw: bytes) -> ScheduleInfo | None:
    """A schedule entry of ``P schedules``, or None if unreadable."""
    try:
        seen_ms, _, info = msgpack.unpackb(raw, raw=True)
        schedule, operation, queue, next_at, last_at, scheduler = msgpack.unpackb(info, raw=False)
        return ScheduleInfo(
            name=name,
            schedule=str(schedule),
            operation=str(operation),
            queue=str(queue),
            next_at=float(next_at),
            last_at=None if last_at is None else float(last_at),
            scheduler=str(scheduler),
            seen_at=int(seen_ms) / 1000,
        )
    except (ValueError, TypeError, msgpack.UnpackException):
        return None


class WorkerRecords:
    """The worker records of one broker's prefix."""

    def __init__(self, conn: Connection, keys: Keys) -> None:
        self._conn = conn
        self._keys = keys
        self._heartbeat = conn.script(scripts.HEARTBEAT)
        self._workers = conn.script(scripts.WORKERS)

    async def heartbeat(self, worker: WorkerInfo, ttl: float) -> None:
        """Record ``worker`` as live for ``ttl`` seconds (``0``: remove it)."""
        info = msgpack.packb(
            [
                worker.queue,
                worker.concurrency,
                worker.host,
                worker.pid,
                worker.started_at,
                worker.running,
            ],
            use_bin_type=True,
        )
        args: list[Arg] = [worker.id, ms(ttl) if ttl > 0 else 0, info]
        keys = [self._keys.workers]
        await self._conn.run("heartbeat", self._heartbeat, keys, args, resend=True)

    async def live(self, queue: str | None = None) -> list[WorkerInfo]:
        """The live workers (of ``queue``, or all), sorted by queue and id."""
        keys: list[str] = [self._keys.workers]
        raw: Any = await self._conn.run("workers", self._workers, keys, [], resend=True)
        pairs = zip(raw[::2], raw[1::2], strict=True)
        out = [w for w in (parse_worker(text(i), entry) for i, entry in pairs) if w is not None]
        if queue is not None:
            out = [w for w in out if w.queue == queue]
        return sorted(out, key=lambda w: (w.queue, w.id))

    async def announce_schedule(self, schedule: ScheduleInfo, ttl: float) -> None:
        """Record ``schedule`` (by name) for ``ttl`` seconds."""
        info = msgpack.packb(
            [schedule.schedule, schedule.operation, schedule.queue, schedule.next_at,
             schedule.last_at, schedule.scheduler],
            use_bin_type=True,
        )  # fmt: skip
        args: list[Arg] = [schedule.name, ms(ttl), info]
        keys = [self._keys.schedules]
        await self._conn.run("announce_schedule", self._heartbeat, keys, args, resend=True)

    async def schedules(self) -> list[ScheduleInfo]:
        """The schedules announced within their ttl, by name."""
        keys: list[str] = [self._keys.schedules]
        raw: Any = await self._conn.run("schedules", self._workers, keys, [], resend=True)
        pairs = zip(raw[::2], raw[1::2], strict=True)
        out = [s for s in (parse_schedule(text(n), e) for n, e in pairs) if s is not None]
        return sorted(out, key=lambda s: s.name)
