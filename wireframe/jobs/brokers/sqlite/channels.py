"""The SQLite broker's reply-channel transactions: post a reply, take replies in order.

A reply is a row of ``wf_replies`` keyed by (channel, seq), ``seq`` counting up
within its channel, so a channel is read oldest first with one index range and
taken with one range delete. Replies wait there, surviving restarts, until a
``receive_replies`` takes them; a take whose caller was cancelled puts them
back first, in their order (:func:`put_back`). Whether a channel is live is
recorded apart, in :mod:`.presence`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Final

from wireframe.jobs.broker import Reply
from wireframe.jobs.brokers.sqlite.rows import fetch_all, reply_from_row

__all__ = ["has_replies", "post_reply", "put_back", "take"]

# The channel's highest numeric seq + 1 (`seq < ''` holds for numbers only: a
# hand-edited TEXT seq must not make every new reply collide with seq 1).
_INSERT_REPLY: Final = (
    "INSERT INTO wf_replies (channel, seq, message_id, body, dead_reason) VALUES (?1, coalesce("
    "(SELECT seq FROM wf_replies WHERE channel = ?1 AND seq < '' ORDER BY seq DESC LIMIT 1), 0)"
    " + 1, ?2, ?3, ?4)"
)


def post_reply(
    conn: sqlite3.Connection,
    channel: str,
    message_id: str,
    body: bytes | None,
    dead_reason: str | None,
) -> None:
    """Append a reply (a ``body``, or a ``dead_reason``) to ``channel``."""
    conn.execute(_INSERT_REPLY, (channel, message_id, body, dead_reason))


def take(conn: sqlite3.Connection, channel: str, limit: int) -> list[Reply]:
    """Take (read and delete) the oldest ``limit`` replies of ``channel``."""
    rows = fetch_all(
        conn,
        "SELECT seq, message_id, body, dead_reason FROM wf_replies"
        " WHERE channel = ? ORDER BY seq LIMIT ?",
        (channel, limit),
    )
    if rows and all(type(row[0]) is int for row in rows):
        conn.execute(
            "DELETE FROM wf_replies WHERE channel = ? AND seq <= ?", (channel, rows[-1][0])
        )
    elif rows:  # a hand-edited seq: delete exactly what was read, compared in SQL
        conn.execute(
            "DELETE FROM wf_replies WHERE channel = ?1 AND seq IN"
            " (SELECT seq FROM wf_replies WHERE channel = ?1 ORDER BY seq LIMIT ?2)",
            (channel, limit),
        )
    return [reply_from_row(channel, *row) for row in rows]


def has_replies(conn: sqlite3.Connection, channel: str) -> bool:
    """Whether a reply waits in ``channel`` (a read-only look before taking)."""
    row = conn.execute("SELECT 1 FROM wf_replies WHERE channel = ? LIMIT 1", (channel,)).fetchone()
    return row is not None


def put_back(conn: sqlite3.Connection, channel: str, replies: Sequence[Reply]) -> None:
    """Undo a take whose caller was cancelled: the same replies, in their order, first."""
    # below the lowest numeric seq left (replies posted since, or not taken)
    row = conn.execute(
        "SELECT seq FROM wf_replies WHERE channel = ? AND seq < '' ORDER BY seq LIMIT 1",
        (channel,),
    ).fetchone()
    start = (len(replies) + 1 if row is None else row[0]) - len(replies)
    conn.executemany(
        "INSERT INTO wf_replies (channel, seq, message_id, body, dead_reason)"
        " VALUES (?, ?, ?, ?, ?)",
        [(channel, start + i, r.message_id, r.body, r.dead_reason) for i, r in enumerate(replies)],
    )
