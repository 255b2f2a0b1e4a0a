"""The SQLite broker's broadcast transactions: send to a topic, read what came after.

A broadcast is a row of ``wf_broadcasts`` with an ever-growing id
(``AUTOINCREMENT``: ids never go back, even after old rows are deleted). A
subscriber remembers the last id it read, starting from the id current when it
subscribed, and reads the rows of its topic after it; nobody deletes what was
read, since every subscriber in every process reads the same rows: a send
deletes those older than :data:`BROADCAST_RETENTION` instead. A malformed row
(a body that is not a BLOB) is skipped with its reason, never delivered.
"""

from __future__ import annotations

import sqlite3
from typing import Final

import attrs

from wireframe.jobs.brokers.sqlite.rows import described, fetch_all

__all__ = ["BROADCAST_RETENTION", "Found", "latest_id", "read_after", "send"]

#: Broadcasts older than this (seconds) are deleted; a subscriber that lags
#: further behind misses them.
BROADCAST_RETENTION: Final = 60.0

_BATCH: Final = 100  # rows read at most at once


def send(conn: sqlite3.Connection, topic: str, body: bytes, now: float) -> None:
    """Store a broadcast of ``body`` to ``topic``; delete those past retention."""
    conn.execute(
        "INSERT INTO wf_broadcasts (topic, body, sent_at) VALUES (?, ?, ?)", (topic, body, now)
    )
    conn.execute(
        "DELETE FROM wf_broadcasts WHERE sent_at < ?"
        " OR typeof(sent_at) NOT IN ('integer', 'real')",  # hand-edited: never expires
        (now - BROADCAST_RETENTION,),
    )


def latest_id(conn: sqlite3.Connection) -> int:
    """The id of the newest broadcast (0 if none): a new subscriber reads after it."""
    return int(conn.execute("SELECT coalesce(max(id), 0) FROM wf_broadcasts").fetchone()[0])


@attrs.frozen
class Found:
    """What one read of a topic found: the last id read, the bodies, and why any
    row was skipped."""

    last_id: int
    bodies: list[bytes]
    skipped: list[str]


def read_after(conn: sqlite3.Connection, topic: str, after: int) -> Found:
    """The next broadcasts to ``topic`` after id ``after`` (a batch of them at most)."""
    rows = fetch_all(
        conn,
        "SELECT id, body FROM wf_broadcasts WHERE topic = ? AND id > ? ORDER BY id LIMIT ?",
        (topic, after, _BATCH),
    )
    bodies: list[bytes] = []
    skipped: list[str] = []
    for row_id, body in rows:
        if type(body) is bytes:
            bodies.append(body)
        else:
            skipped.append(
                f"skipped a malformed broadcast row (wf_broadcasts id {row_id}, topic "
                f"{topic!r}): body holds {described(body)}, expected a BLOB"
            )
    return Found(rows[-1][0] if rows else after, bodies, skipped)
