"""The SQLite broker's administration transactions: counts, dead letters, purge.

What ``wireframe jobs ...`` and a dashboard ask: counts per queue, the dead
letters (readable whatever a damaged row holds, see :mod:`.rows`), putting
dead letters back on their queues, and deleting finished state. Completed
records are rows of ``wf_messages`` with ``done_at`` set, counted in
``wf_queues.done`` so that a count stays right after a purge of the rows.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from wireframe.jobs.broker import DeadLetter, QueueStats
from wireframe.jobs.brokers.sqlite import presence
from wireframe.jobs.brokers.sqlite.rows import dead_letter_from_row, fetch_all

__all__ = ["dead_letters", "purge", "requeue_dead", "stats"]

_DEAD_COLUMNS = "seq, queue, id, body, reply_to, reason, deliveries, died_at"


def stats(conn: sqlite3.Connection, now: float) -> list[QueueStats]:
    """Counts per known queue, sorted by name (an expired lease counts as queued);
    workers are counted by the caller."""
    rows = conn.execute(
        """SELECT q.name,
            (SELECT count(*) FROM wf_messages m
                WHERE m.queue = q.name AND m.done_at IS NULL
                AND (m.lease_token IS NULL OR m.visible_at <= ?1)),
            (SELECT count(*) FROM wf_messages m
                WHERE m.queue = q.name AND m.done_at IS NULL
                AND m.lease_token IS NOT NULL AND m.visible_at > ?1),
            q.done,
            (SELECT count(*) FROM wf_dead x WHERE x.queue = q.name)
        FROM wf_queues q ORDER BY q.name""",
        (now,),
    ).fetchall()
    return [
        QueueStats(name, queued, running, done, dead) for name, queued, running, done, dead in rows
    ]


def _dead_rows(conn: sqlite3.Connection, queue: str | None, limit: int) -> list[Any]:
    """The oldest ``limit`` rows of ``wf_dead`` (of ``queue``, or of every queue)."""
    where, args = ("WHERE queue = ?", (queue,)) if queue is not None else ("", ())
    return fetch_all(
        conn, f"SELECT {_DEAD_COLUMNS} FROM wf_dead {where} ORDER BY seq LIMIT ?", (*args, limit)
    )


def dead_letters(conn: sqlite3.Connection, queue: str | None, limit: int) -> list[DeadLetter]:
    """The oldest ``limit`` dead letters, of ``queue`` or of every queue."""
    return [dead_letter_from_row(*row) for row in _dead_rows(conn, queue, limit)]


def requeue_dead(conn: sqlite3.Connection, queue: str | None, now: float) -> list[str]:
    """Put dead letters back on their queues, delivery count reset; return the queue of
    each one put back."""
    rows = _dead_rows(conn, queue, -1)  # LIMIT -1: all of them
    letters = [dead_letter_from_row(*row) for row in rows]
    conn.executemany(
        "INSERT OR IGNORE INTO wf_queues (name, created_at) VALUES (?, ?)",
        [(q, now) for q in {letter.queue for letter in letters}],
    )
    conn.executemany(
        "INSERT INTO wf_messages (queue, id, body, reply_to, visible_at, deliveries)"
        " VALUES (?, ?, ?, ?, ?, 0)",
        [(d.queue, d.message.id, d.message.body, d.message.reply_to, now) for d in letters],
    )
    conn.executemany("DELETE FROM wf_dead WHERE seq = ?", [(row[0],) for row in rows])
    return [letter.queue for letter in letters]


def purge(conn: sqlite3.Connection, queue: str | None, now: float) -> int:
    """Delete completed records and dead letters (of ``queue`` or all); count them.

    A purge of everything also drops the replies of dead run channels.
    """
    if queue is None:
        done = conn.execute("DELETE FROM wf_messages WHERE done_at IS NOT NULL").rowcount
        dead = conn.execute("DELETE FROM wf_dead").rowcount
        conn.execute("UPDATE wf_queues SET done = 0")
        done += presence.purge_dead_channels(conn, now)
    else:
        done = conn.execute(
            "DELETE FROM wf_messages WHERE queue = ? AND done_at IS NOT NULL", (queue,)
        ).rowcount
        dead = conn.execute("DELETE FROM wf_dead WHERE queue = ?", (queue,)).rowcount
        conn.execute("UPDATE wf_queues SET done = 0 WHERE name = ?", (queue,))
    return int(done + dead)
