"""The SQLite broker's administration transactions: counts, dead letters, purge.

What ``wireframe jobs ...`` and a dashboard ask: counts per queue, the dead
letters (readable whatever a damaged row holds, see :mod:`.rows`), putting
dead letters back on their queues (a tracked job's record comes back to
life with its message), and deleting finished state (with the final job
records). Completed records are rows of ``wf_messages`` with ``done_at`` set,
counted in ``wf_queues.done`` so that a count stays right after a purge of
the rows.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from wireframe.jobs.broker import DeadLetter, QueueStats
from wireframe.jobs.brokers.sqlite import jobs, limits, presence
from wireframe.jobs.brokers.sqlite.rows import dead_letter_from_row, fetch_all

__all__ = ["dead_letters", "purge", "requeue_dead", "stats"]

_DEAD_COLUMNS = "seq, queue, id, body, reply_to, reason, deliveries, died_at, priority, limit_name"


def stats(conn: sqlite3.Connection, now: float) -> list[QueueStats]:
    """Counts per known queue, sorted by name (an expired lease counts as queued, a
    delayed message too: as scheduled while its delay runs; a message its limit
    holds back as held, see :func:`.limits.held_counts`); workers are counted by the
    caller."""
    rows = conn.execute(
        """SELECT q.name,
            (SELECT count(*) FROM wf_messages m
                WHERE m.queue = q.name AND m.done_at IS NULL AND m.lease_token IS NULL),
            (SELECT count(*) FROM wf_messages m
                WHERE m.queue = q.name AND m.done_at IS NULL AND m.lease_token IS NOT NULL),
            (SELECT count(*) FROM wf_messages m
                WHERE m.queue = q.name AND m.done_at IS NULL AND m.lease_token IS NOT NULL
                AND m.visible_at > ?1 AND m.lease_token != ''),
            (SELECT count(*) FROM wf_messages m
                WHERE m.queue = q.name AND m.done_at IS NULL AND m.lease_token = ''
                AND m.visible_at > ?1),
            q.done,
            (SELECT count(*) FROM wf_dead x WHERE x.queue = q.name)
        FROM wf_queues q ORDER BY q.name""",
        (now,),
    ).fetchall()
    held_back = limits.held_counts(conn, now)
    return [
        QueueStats(
            name, visible + held - running, running, done, dead,
            scheduled=scheduled, held=held_back.get(name, 0),
        )
        for name, visible, held, running, scheduled, done, dead in rows
    ]  # fmt: skip


def _dead_rows(
    conn: sqlite3.Connection,
    queue: str | None,
    limit: int,
    offset: int = 0,
    message_id: str | None = None,
) -> list[Any]:
    """Rows of ``wf_dead`` oldest first (of ``queue``, or of every queue; of one
    message, if given), ``limit`` of them after ``offset``."""
    clauses: list[str] = []
    args: list[object] = []
    if queue is not None:
        clauses.append("queue = ?")
        args.append(queue)
    if message_id is not None:
        clauses.append("id = ?")
        args.append(message_id)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    return fetch_all(
        conn,
        f"SELECT {_DEAD_COLUMNS} FROM wf_dead {where} ORDER BY seq LIMIT ? OFFSET ?",
        (*args, limit, max(offset, 0)),
    )


def dead_letters(
    conn: sqlite3.Connection, queue: str | None, limit: int, offset: int = 0
) -> list[DeadLetter]:
    """The oldest ``limit`` dead letters after ``offset``, of ``queue`` or of every queue."""
    return [dead_letter_from_row(*row) for row in _dead_rows(conn, queue, limit, offset)]


def requeue_dead(
    conn: sqlite3.Connection, queue: str | None, now: float, message_id: str | None = None
) -> list[str]:
    """Put dead letters (of one message, if given) back on their queues, delivery count
    reset; return the queue of each one put back."""
    rows = _dead_rows(conn, queue, -1, 0, message_id)  # LIMIT -1: all of them
    letters = [dead_letter_from_row(*row) for row in rows]
    conn.executemany(
        "INSERT OR IGNORE INTO wf_queues (name, created_at) VALUES (?, ?)",
        [(q, now) for q in {letter.queue for letter in letters}],
    )
    for d in letters:
        m = d.message
        cur = conn.execute(
            "INSERT INTO wf_messages (queue, id, body, reply_to, visible_at, deliveries, priority,"
            " limit_name) VALUES (?, ?, ?, ?, ?, 0, ?, ?)",
            (d.queue, m.id, m.body, m.reply_to, now, m.priority, m.limit),
        )
        if not m.reply_to and cur.lastrowid is not None:
            jobs.revive(conn, m.id, cur.lastrowid, now)
    conn.executemany("DELETE FROM wf_dead WHERE seq = ?", [(row[0],) for row in rows])
    return [letter.queue for letter in letters]


def purge(conn: sqlite3.Connection, queue: str | None, now: float) -> int:
    """Delete completed records and dead letters (of ``queue`` or all); count them.

    A purge of everything also drops the replies of dead run channels. Final job
    records go too (not counted: their messages are). A job aborted while it runs
    keeps its message row until its lease ends (it is leased: never purged).
    """
    finished = "done_at IS NOT NULL AND (lease_token IS NULL OR visible_at <= ?)"
    if queue is None:
        done = conn.execute(f"DELETE FROM wf_messages WHERE {finished}", (now,)).rowcount
        dead = conn.execute("DELETE FROM wf_dead").rowcount
        conn.execute("UPDATE wf_queues SET done = 0")
        done += presence.purge_dead_channels(conn, now)
    else:
        done = conn.execute(
            f"DELETE FROM wf_messages WHERE queue = ? AND {finished}", (queue, now)
        ).rowcount
        dead = conn.execute("DELETE FROM wf_dead WHERE queue = ?", (queue,)).rowcount
        conn.execute("UPDATE wf_queues SET done = 0 WHERE name = ?", (queue,))
    jobs.purge(conn, queue)
    return int(done + dead)
