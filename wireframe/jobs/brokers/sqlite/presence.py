"""The SQLite broker's records of who is alive: run channels and workers.

Plain functions on a ``sqlite3`` connection, run on the broker's connection
threads (see :mod:`.threads`). A run channel's row says
until when it is live (``alive_until``, wall-clock seconds); closing a channel
sets that to now, so "dead" is one comparison whichever way the run ended. A
worker's row is its last heartbeat and when it runs out.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Final

from wireframe.jobs.broker import DEAD_CHANNEL_RETENTION, ChannelLost, ScheduleInfo, WorkerInfo

__all__ = [
    "MIGRATION",
    "SCHEDULES",
    "announce_schedule",
    "close_channel",
    "dead_channels",
    "forget_channel",
    "heartbeat",
    "keep_channel",
    "live_schedules",
    "live_workers",
    "open_channel",
    "purge_dead_channels",
]

#: The schema migration that adds these records (version 2).
MIGRATION: Final = (
    """CREATE TABLE wf_channels (
        name TEXT PRIMARY KEY,
        alive_until REAL NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX wf_channels_by_deadline ON wf_channels (alive_until)",
    """CREATE TABLE wf_workers (
        id TEXT PRIMARY KEY,
        queue TEXT NOT NULL,
        concurrency INTEGER NOT NULL,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started_at REAL NOT NULL,
        running INTEGER NOT NULL,
        seen_at REAL NOT NULL,
        expires_at REAL NOT NULL
    ) WITHOUT ROWID""",
)


def open_channel(conn: sqlite3.Connection, channel: str, ttl: float, now: float) -> None:
    """Record ``channel`` live until ``now + ttl``; forget channels dead for a day."""
    conn.execute(
        "INSERT OR REPLACE INTO wf_channels (name, alive_until) VALUES (?, ?)",
        (channel, now + ttl),
    )
    old = now - DEAD_CHANNEL_RETENTION
    conn.execute(
        "DELETE FROM wf_replies WHERE channel IN"
        " (SELECT name FROM wf_channels WHERE alive_until <= ?)",
        (old,),
    )
    conn.execute("DELETE FROM wf_channels WHERE alive_until <= ?", (old,))


def keep_channel(
    conn: sqlite3.Connection, channel: str, ttl: float, now: float, where: str
) -> None:
    """Move a live channel's deadline to ``now + ttl``; :class:`ChannelLost` if it is not live."""
    row = conn.execute("SELECT alive_until FROM wf_channels WHERE name = ?", (channel,)).fetchone()
    if row is None:
        raise ChannelLost(channel, f"{where} has no record of it")
    if row[0] <= now:
        raise ChannelLost(channel, f"it was closed or expired {now - row[0]:.3f} s ago")
    conn.execute("UPDATE wf_channels SET alive_until = ? WHERE name = ?", (now + ttl, channel))


def close_channel(conn: sqlite3.Connection, channel: str, now: float) -> None:
    """Drop ``channel``'s replies and make it dead from ``now`` on."""
    conn.execute("DELETE FROM wf_replies WHERE channel = ?", (channel,))
    conn.execute(
        "INSERT INTO wf_channels (name, alive_until) VALUES (?1, ?2) ON CONFLICT (name)"
        " DO UPDATE SET alive_until = min(alive_until, ?2)",
        (channel, now),
    )


def forget_channel(conn: sqlite3.Connection, channel: str) -> None:
    """Drop ``channel``'s replies and its record: it is an unmanaged mailbox again."""
    conn.execute("DELETE FROM wf_replies WHERE channel = ?", (channel,))
    conn.execute("DELETE FROM wf_channels WHERE name = ?", (channel,))


def dead_channels(conn: sqlite3.Connection, channels: Iterable[str], now: float) -> set[str]:
    """Which of ``channels`` are dead (closed, or not kept alive in time)."""
    names = [c for c in set(channels) if c]
    if not names:
        return set()
    marks = ",".join("?" * len(names))
    rows = conn.execute(
        f"SELECT name FROM wf_channels WHERE alive_until <= ? AND name IN ({marks})",
        (now, *names),
    ).fetchall()
    return {name for (name,) in rows}


def purge_dead_channels(conn: sqlite3.Connection, now: float) -> int:
    """Delete dead channels' replies (counted) and records dead for over a day."""
    count = conn.execute(
        "DELETE FROM wf_replies WHERE channel IN"
        " (SELECT name FROM wf_channels WHERE alive_until <= ?)",
        (now,),
    ).rowcount
    conn.execute("DELETE FROM wf_channels WHERE alive_until <= ?", (now - DEAD_CHANNEL_RETENTION,))
    return int(count)


def heartbeat(conn: sqlite3.Connection, worker: WorkerInfo, ttl: float, now: float) -> None:
    """Record ``worker`` live until ``now + ttl`` (``ttl`` 0: remove it); drop expired ones."""
    conn.execute("DELETE FROM wf_workers WHERE id = ? OR expires_at <= ?", (worker.id, now))
    if ttl > 0:
        conn.execute(
            "INSERT INTO wf_workers (id, queue, concurrency, host, pid, started_at, running,"
            " seen_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                worker.id,
                worker.queue,
                worker.concurrency,
                worker.host,
                worker.pid,
                worker.started_at,
                worker.running,
                now,
                now + ttl,
            ),
        )


#: The tables of schedules schedulers announce (schema version 3).
SCHEDULES: Final = (
    """CREATE TABLE wf_schedules (
        name TEXT PRIMARY KEY,
        schedule TEXT NOT NULL,
        operation TEXT NOT NULL,
        queue TEXT NOT NULL,
        next_at REAL NOT NULL,
        last_at REAL,
        scheduler TEXT NOT NULL,
        seen_at REAL NOT NULL,
        expires_at REAL NOT NULL
    ) WITHOUT ROWID""",
)


def announce_schedule(
    conn: sqlite3.Connection, schedule: ScheduleInfo, ttl: float, now: float
) -> None:
    """Record ``schedule`` (by name) until ``now + ttl``; drop expired ones."""
    conn.execute("DELETE FROM wf_schedules WHERE expires_at <= ?", (now,))
    conn.execute(
        "INSERT OR REPLACE INTO wf_schedules (name, schedule, operation, queue, next_at,"
        " last_at, scheduler, seen_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (schedule.name, schedule.schedule, schedule.operation, schedule.queue,
         schedule.next_at, schedule.last_at, schedule.scheduler, now, now + ttl),
    )  # fmt: skip


def live_schedules(conn: sqlite3.Connection, now: float) -> list[ScheduleInfo]:
    """The schedules announced within their ttl, by name."""
    rows = conn.execute(
        "SELECT name, schedule, operation, queue, next_at, last_at, scheduler, seen_at"
        " FROM wf_schedules WHERE expires_at > ? ORDER BY name",
        (now,),
    ).fetchall()
    return [ScheduleInfo(*row) for row in rows]


def live_workers(conn: sqlite3.Connection, queue: str | None, now: float) -> list[WorkerInfo]:
    """The workers whose last heartbeat has not run out, by queue and id."""
    where, args = ("AND queue = ?", (queue,)) if queue is not None else ("", ())
    rows = conn.execute(
        "SELECT id, queue, concurrency, host, pid, started_at, running, seen_at"
        f" FROM wf_workers WHERE expires_at > ? {where} ORDER BY queue, id",
        (now, *args),
    ).fetchall()
    return [WorkerInfo(*row) for row in rows]
