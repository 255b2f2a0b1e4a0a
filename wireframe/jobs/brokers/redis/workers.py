"""Worker records: each worker's heartbeat, and the list of live workers.

A worker records itself (queue, concurrency, host, pid, when it started, how many
jobs it runs) with a time to live, and renews it while it serves; a record that
was not renewed in time is dropped when read. The runtime asks whether a queue has
workers, and ``stats`` counts them. The key: :mod:`.scripts.workers`.
"""

from __future__ import annotations

from typing import Any

import msgpack

from wireframe.jobs.broker import WorkerInfo
from wireframe.jobs.brokers.redis.connection import Arg, Connection
from wireframe.jobs.brokers.redis.keys import Keys
from wireframe.jobs.brokers.redis.scripts import workers as scripts
from wireframe.jobs.brokers.redis.values import ms, text

__all__ = ["WorkerRecords", "parse_worker"]


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
