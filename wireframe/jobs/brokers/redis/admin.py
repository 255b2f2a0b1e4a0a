"""Administration: counts per queue, dead letters read and requeued, finished records purged.

What ``wireframe jobs stats``, ``dead``, ``retry`` and ``purge`` ask. Each count
is one script call over every known queue (the ``P queues`` set), so the numbers
of one queue are consistent with each other; dead letters are read straight from
each queue's dead stream, foreign entries included (missing fields read as empty).
Purging also deletes the replies and inboxes that dead run channels left behind
(a receiver deletes its own inboxes; those of a receiver that died stay until then),
the finished records of tracked jobs (found by a scan, like the inboxes) and the
streams of priority levels no longer in use.
"""

from __future__ import annotations

import functools
from typing import Any

from wireframe.jobs.broker import DEAD_CHANNEL_RETENTION, DeadLetter, Message, QueueStats
from wireframe.jobs.brokers.redis.connection import Arg, Connection
from wireframe.jobs.brokers.redis.keys import GROUP, INBOX, RELEASED, Keys
from wireframe.jobs.brokers.redis.scripts import admin as scripts
from wireframe.jobs.brokers.redis.scripts.channels import PURGE_CHANNELS
from wireframe.jobs.brokers.redis.scripts.jobs import PURGE_JOBS
from wireframe.jobs.brokers.redis.values import COUNT, as_bytes, ms, text

__all__ = ["Admin", "parse_dead_letter"]

#: Most job records one purge script call looks at.
_PURGE_BATCH = 1000


def _glob_escape(text: str) -> str:
    """``text`` matched literally in a SCAN pattern."""
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


def parse_dead_letter(queue: str, sid: Any, f: Any) -> DeadLetter:
    """One entry of a dead stream (fields missing from a foreign entry read as empty; its
    priority from the field ``p``, 0 when absent, its limit from ``l``)."""

    def number(key: bytes, default: int) -> int:
        value = as_bytes(f.get(key, b""))
        return int(value) if COUNT.fullmatch(value) else default

    priority = as_bytes(f.get(b"p", b"0"))
    return DeadLetter(
        message=Message(
            id=text(f.get(b"i", b"")),
            body=as_bytes(f.get(b"b", b"")),
            reply_to=text(f.get(b"r", b"")),
            priority=int(priority) if COUNT.fullmatch(priority.removeprefix(b"-")) else 0,
            limit=text(f.get(b"l", b"")),
        ),
        queue=queue,
        reason=text(f.get(b"why", b"(no reason recorded)")),
        deliveries=number(b"n", 0),
        died_at=number(b"t", int(text(sid).split("-")[0] or 0)) / 1000,
    )


class Admin:
    """Inspection and housekeeping of one broker's prefix (see the module doc)."""

    def __init__(self, conn: Connection, keys: Keys) -> None:
        self._conn = conn
        self._keys = keys
        self._stats = conn.script(scripts.STATS)
        self._requeue = conn.script(scripts.REQUEUE_DEAD)
        self._purge = conn.script(scripts.PURGE)
        self._purge_channels = conn.script(PURGE_CHANNELS)
        self._purge_jobs = conn.script(PURGE_JOBS)

    async def stats(self) -> list[QueueStats]:
        """Counts per known queue (workers not counted yet), in one script call."""
        keys: list[str] = [self._keys.queues]
        args: list[Arg] = [self._keys.prefix, GROUP, RELEASED]
        flat: Any = await self._conn.run("stats", self._stats, keys, args, resend=True)
        return [
            QueueStats(
                queue=text(flat[k]),
                queued=int(flat[k + 1]),
                running=int(flat[k + 2]),
                done=int(flat[k + 3]),
                dead=int(flat[k + 4]),
                scheduled=int(flat[k + 5]),
                held=int(flat[k + 6]),
            )
            for k in range(0, len(flat), 7)
        ]

    async def _queues(self, queue: str | None) -> list[str]:
        """``[queue]``, or every known queue when ``queue`` is None."""
        if queue is not None:
            return [queue]
        key, client = self._keys.queues, self._conn.client
        names: Any = await self._conn.call("list queues", lambda: client.smembers(key), resend=True)
        return sorted(text(n) for n in names)

    async def dead_letters(
        self, queue: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters after ``offset``, read from each queue's dead
        stream (the first ``offset + limit`` of each, merged by when they died)."""
        start, limit = max(offset, 0), max(limit, 0)
        if limit == 0:
            return []
        found: list[tuple[str, Any]] = []
        for q in await self._queues(queue):
            key = self._keys.queue(q, "dead")
            entries: Any = await self._conn.call(
                "dead_letters",
                functools.partial(self._conn.client.xrange, key, count=start + limit),
                resend=True,
            )
            if entries:
                found.append((q, entries))
        if len(found) == 1:  # one queue's stream is in order already: parse only the page
            q, entries = found[0]
            return [parse_dead_letter(q, e.identifier, e.field_values) for e in entries[start:]]
        out = [parse_dead_letter(q, e.identifier, e.field_values) for q, es in found for e in es]
        out.sort(key=lambda d: d.died_at)
        return out[start : start + limit]

    async def requeue_dead(self, queue: str | None = None, message_id: str | None = None) -> int:
        """Re-add each dead letter (of one message, if given) to its queue with a fresh
        delivery count."""
        total = 0
        for q in await self._queues(queue):
            keys = [self._keys.queues, self._keys.queue(q, "ready"), self._keys.queue(q, "dead")]
            args: list[Arg] = [GROUP, q, self._keys.prefix]
            if message_id is not None:
                args.append(message_id)
            total += int(
                await self._conn.run("requeue_dead", self._requeue, keys, args, resend=False)
            )
        return total

    async def purge(self, queue: str | None = None) -> int:
        """Delete dead letters and completed-message counters; queued/leased stay.

        Purging every queue also deletes the replies and inboxes of dead channels and
        the finished job records (not counted: their jobs are counted done or dead).
        """
        total = 0
        for q in await self._queues(queue):
            keys = [
                self._keys.queue(q, "dead"),
                self._keys.queue(q, "done"),
                self._keys.queue(q, "ready"),
            ]
            total += int(await self._conn.run("purge", self._purge, keys, [], resend=False))
        if queue is None:
            inboxes = await self._inboxes()
            keys = [self._keys.channels, *inboxes]
            args: list[Arg] = [self._keys.prefix, ms(DEAD_CHANNEL_RETENTION), *inboxes.values()]
            total += int(
                await self._conn.run("purge", self._purge_channels, keys, args, resend=True)
            )
            await self._purge_records()
        return total

    async def _purge_records(self) -> None:
        """Delete every finished job record (found by a scan), in batches."""
        client = self._conn.client
        pattern = f"{_glob_escape(self._keys.prefix)}job:*"

        async def scan() -> list[str]:
            return [text(raw) async for raw in client.scan_iter(match=pattern, count=1000)]

        found = await self._conn.call("purge", scan, resend=True)
        for k in range(0, len(found), _PURGE_BATCH):
            batch = found[k : k + _PURGE_BATCH]
            args: list[Arg] = [self._keys.prefix]
            await self._conn.run("purge", self._purge_jobs, batch, args, resend=True)

    async def _inboxes(self) -> dict[str, str]:
        """Every receiver's inbox list in this prefix (a scan): key -> its channel.

        A receiver deletes its own inboxes; those of a receiver that died stay
        until ``purge`` finds their channel dead.
        """
        head, client = self._keys.channel_head, self._conn.client

        async def scan() -> dict[str, str]:
            found: dict[str, str] = {}
            async for raw in client.scan_iter(match=f"{head}*{INBOX}*", count=1000):
                key = text(raw)
                channel, sep, _ = key.removeprefix(head).partition(INBOX)
                if sep:
                    found[key] = channel
            return found

        return await self._conn.call("purge", scan, resend=True)
