"""The SQLite broker's records of jobs submitted on their own (the job store role).

A tracked job is a message like any other (``reply_to`` is ``''``: its result
stays here, by id) plus a row of ``wf_jobs`` naming that message by ``seq``.
The row keeps what the message cannot: the dedup ``key``, the operation's
name, when it was submitted, its attempts, and — once final — its status
(``done``, ``aborted``, ``dead``), result or error and when it expires.

*Live states are read, not written.* While a job may still run its row's
``status`` is NULL and whether it is scheduled, queued or running is read from
its message (held by a delay, visible, or held by a current lease), so a lease
running out or a message becoming due changes nothing here. What the queue
transactions write is small and only for tracked messages: a claim counts the
attempt and names the worker (:func:`started`); a complete, a dead letter or
an abort makes the record final (:func:`finish`) in the same transaction as
the message's own change, so record and queue never disagree.

*Keys.* A partial unique index holds at most one live job per key; ``submit``
looks for it in the same write transaction as its insert, so two processes
submitting one key at once get one job.

*Expiry.* A final record is kept ``ttl`` seconds (the submitter's
``result_ttl``): reads treat an expired one as unknown, every
:data:`SWEEP_EVERY`-th submit of a broker deletes expired ones, ``purge``
deletes every final one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any, Final

from wireframe.jobs.broker import JobRecord, Message, RecordStatus
from wireframe.jobs.brokers.sqlite.rows import described, fetch_all

__all__ = [
    "MIGRATION",
    "SWEEP_EVERY",
    "abort",
    "find",
    "finish",
    "not_live",
    "purge",
    "read",
    "revive",
    "started",
    "submit",
    "unstarted",
]

#: The schema migration that adds the records (part of version 3).
MIGRATION: Final = (
    # seq: the job's message in wf_messages (the last one: requeue_dead makes a new
    # row). status: NULL while live, else 'done', 'aborted' or 'dead'. ttl: seconds a
    # final record is kept (the submitter's result_ttl), so expires_at = finished_at + ttl.
    """CREATE TABLE wf_jobs (
        id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        queue TEXT NOT NULL,
        key TEXT,
        priority INTEGER NOT NULL,
        operation TEXT NOT NULL,
        ttl REAL NOT NULL,
        enqueued_at REAL NOT NULL,
        visible_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        started_at REAL,
        worker TEXT,
        status TEXT,
        result BLOB,
        error TEXT,
        finished_at REAL,
        expires_at REAL
    )""",
    "CREATE UNIQUE INDEX wf_jobs_live_key ON wf_jobs (key)"
    " WHERE status IS NULL AND key IS NOT NULL",
    "CREATE INDEX wf_jobs_expiry ON wf_jobs (expires_at) WHERE expires_at IS NOT NULL",
)

#: Every this many submits (per broker), expired records are deleted.
SWEEP_EVERY: Final = 1024

_IDS_PER_QUERY: Final = 500  # under SQLite's limit of bound parameters (999 before 3.32)

_FINAL: Final = {s.value: s for s in (RecordStatus.DONE, RecordStatus.ABORTED, RecordStatus.DEAD)}

# A record with its message's state (the message must be its own: seq and id match).
_RECORD: Final = (
    "SELECT j.id, j.queue, j.status, j.enqueued_at, j.visible_at, j.key, j.priority,"
    " j.operation, j.attempts, j.started_at, j.finished_at, j.worker, j.result, j.error,"
    " j.expires_at, j.seq, m.seq, m.lease_token, m.visible_at, m.done_at"
    " FROM wf_jobs j LEFT JOIN wf_messages m ON m.seq = j.seq AND m.id = j.id"
)

_FINISH: Final = (
    "UPDATE wf_jobs SET status = ?1, result = ?2, error = ?3, finished_at = ?4,"
    " expires_at = ?4 + ttl WHERE id = ?5 AND seq = ?6 AND status IS NULL"
)


# A record :func:`_record` reads as live (not final, its message there and not done,
# not expired), given now; no part is ever NULL, so its negation is every other
# record (final, expired, or whose message is gone: m.seq reads NULL).
_IS_LIVE: Final = (
    "(j.status IS NULL AND m.seq IS NOT NULL AND m.done_at IS NULL"
    " AND coalesce(j.expires_at > ?, 1))"
)
_LIVE_IDS: Final = (
    "SELECT j.id FROM wf_jobs j JOIN wf_messages m ON m.seq = j.seq AND m.id = j.id"
    f" WHERE {_IS_LIVE} AND j.id IN"
)


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _live_status(lease_token: object, visible_at: object, now: float) -> RecordStatus:
    """Where a live job is, from its message's ``lease_token`` and ``visible_at``."""
    due = not isinstance(visible_at, int | float) or visible_at <= now
    if lease_token is None or due:
        return RecordStatus.QUEUED
    return RecordStatus.SCHEDULED if lease_token == "" else RecordStatus.RUNNING


def _record(row: Any, now: float) -> JobRecord | None:
    """The :class:`JobRecord` a ``_RECORD`` row gives; None if it expired.

    A live record whose message is gone (only a hand edit or a damaged file does
    that) reads as dead, saying so, rather than waiting for ever.
    """
    (job_id, queue, status, enqueued_at, visible_at, key, priority, operation, attempts,
     started_at, finished_at, worker, result, error, expires_at, seq,
     message_seq, lease_token, message_visible_at, done_at) = row  # fmt: skip
    expires = _number(expires_at)
    if expires is not None and expires <= now:
        return None
    if status is None and (message_seq is None or done_at is not None):
        state, error = RecordStatus.DEAD, f"its message (wf_messages seq {seq}) is gone"
    elif status is None:
        state = _live_status(lease_token, message_visible_at, now)
        if state is RecordStatus.SCHEDULED:
            visible_at = message_visible_at
    else:
        found = _FINAL.get(status) if isinstance(status, str) else None
        if found is None:
            found = RecordStatus.DEAD
            error = f"malformed job row (wf_jobs id {job_id!r}): status holds {described(status)}"
        state = found
    return JobRecord(
        id=str(job_id),
        queue=str(queue),
        status=state,
        enqueued_at=_number(enqueued_at) or 0.0,
        visible_at=_number(visible_at) or 0.0,
        key=key if isinstance(key, str) else None,
        priority=priority if type(priority) is int else 0,
        operation=operation if isinstance(operation, str) else "",
        attempts=attempts if type(attempts) is int else 0,
        started_at=_number(started_at),
        finished_at=_number(finished_at),
        worker=worker if isinstance(worker, str) else None,
        result=result if isinstance(result, bytes) else None,
        error=error if isinstance(error, str) else None,
        expires_at=expires,
    )


# Where a record is, in SQL (?1 is now), as :func:`_record` reads it.
_STATUS_SQL: Final = {
    RecordStatus.DONE: "j.status = 'done'",
    RecordStatus.ABORTED: "j.status = 'aborted'",
    RecordStatus.DEAD: "(j.status = 'dead' OR (j.status IS NULL"
    " AND (m.seq IS NULL OR m.done_at IS NOT NULL)))",
    RecordStatus.QUEUED: "(j.status IS NULL AND m.seq IS NOT NULL AND m.done_at IS NULL"
    " AND (m.lease_token IS NULL OR m.visible_at <= ?1))",
    RecordStatus.SCHEDULED: "(j.status IS NULL AND m.done_at IS NULL AND m.lease_token = ''"
    " AND m.visible_at > ?1)",
    RecordStatus.RUNNING: "(j.status IS NULL AND m.done_at IS NULL AND m.lease_token != ''"
    " AND m.visible_at > ?1)",
}


def find(
    conn: sqlite3.Connection,
    now: float,
    *,
    queue: str | None,
    status: RecordStatus | None,
    operation: str | None,
    key: str | None,
    limit: int,
    offset: int,
) -> list[JobRecord]:
    """Records newest first (by insertion: the rowid, so no index is needed), matching
    every filter given; ``limit`` of them after ``offset``. A filter no index serves
    reads rows until the page is full: SQLite reads ~100k rows in a few tens of ms."""
    clauses = ["(j.expires_at IS NULL OR j.expires_at > ?1)"]
    args: list[object] = [now]
    for column, value in (("j.queue", queue), ("j.operation", operation), ("j.key", key)):
        if value is not None:
            args.append(value)
            clauses.append(f"{column} = ?{len(args)}")
    if status is not None:
        clauses.append(_STATUS_SQL[status])
    args += [max(limit, 0), max(offset, 0)]
    sql = (
        f"{_RECORD} WHERE {' AND '.join(clauses)} ORDER BY j.rowid DESC"
        f" LIMIT ?{len(args) - 1} OFFSET ?{len(args)}"
    )
    found = (_record(row, now) for row in fetch_all(conn, sql, tuple(args)))
    return [record for record in found if record is not None]


def not_live(
    conn: sqlite3.Connection, job_ids: list[str], now: float
) -> dict[str, JobRecord | None]:
    """Which of ``job_ids`` are no longer live, with their records (None: unknown or
    expired): one look for all the jobs a process waits on (see :mod:`.wakeups`), whose
    waiters then need not read their records again.

    Asked after every commit another process makes, mostly about jobs still running:
    so the live ones are only counted (their id, on the index, no record built) and
    full records are read for the others alone.
    """
    found: dict[str, JobRecord | None] = {}
    live: set[str] = set()
    for start in range(0, len(job_ids), _IDS_PER_QUERY):
        chunk = tuple(job_ids[start : start + _IDS_PER_QUERY])
        marks = ",".join("?" * len(chunk))
        sql = f"{_RECORD} WHERE j.id IN ({marks}) AND NOT {_IS_LIVE}"
        rows = fetch_all(conn, sql, (*chunk, now))
        for row in rows:
            found[row[0]] = _record(row, now)
        if len(rows) < len(chunk):
            ids = fetch_all(conn, f"{_LIVE_IDS} ({marks})", (now, *chunk))
            live.update(row[0] for row in ids)
    return {job_id: found.get(job_id) for job_id in job_ids if job_id not in live}


def _row(conn: sqlite3.Connection, where: str, args: tuple[object, ...]) -> Any:
    """The first ``_RECORD`` row ``where`` selects (text that is not UTF-8 read leniently,
    see :func:`.rows.fetch_all`), or None."""
    rows = fetch_all(conn, f"{_RECORD} WHERE {where} LIMIT 1", args)
    return rows[0] if rows else None


def read(conn: sqlite3.Connection, job_id: str, now: float) -> JobRecord | None:
    """The job's record, or None if it is unknown or expired."""
    row = _row(conn, "j.id = ?", (job_id,))
    return None if row is None else _record(row, now)


def submit(
    conn: sqlite3.Connection,
    queue: str,
    message: Message,
    *,
    now: float,
    delay: float,
    key: str | None,
    operation: str,
    ttl: float,
    sweep: bool,
) -> tuple[JobRecord, bool]:
    """Publish ``message`` as a tracked job, or return the job the broker knows by its id
    (live, or finished and not expired) or the live job holding ``key``.

    Returns the record and whether it is new. ``sweep``: delete expired records too.
    """
    known = _known(conn, message.id, now)
    if known is not None:
        return known, False
    if key is not None:
        held = _live_with_key(conn, key, now)
        if held is not None:
            return held, False
    conn.execute("INSERT OR IGNORE INTO wf_queues (name, created_at) VALUES (?, ?)", (queue, now))
    visible_at = now + delay
    cur = conn.execute(
        "INSERT INTO wf_messages (queue, id, body, reply_to, visible_at, deliveries, priority,"
        " lease_token, limit_name) VALUES (?, ?, ?, '', ?, 0, ?, ?, ?)",
        (queue, message.id, bytes(message.body), visible_at, message.priority,
         "" if delay > 0 else None, message.limit),
    )  # fmt: skip
    conn.execute(
        "INSERT INTO wf_jobs (id, seq, queue, key, priority, operation, ttl, enqueued_at,"
        " visible_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (message.id, cur.lastrowid, queue, key, message.priority, operation, ttl, now, visible_at),
    )
    if sweep:
        conn.execute("DELETE FROM wf_jobs WHERE expires_at <= ?", (now,))
    status = RecordStatus.SCHEDULED if delay > 0 else RecordStatus.QUEUED
    record = JobRecord(
        id=message.id, queue=queue, status=status, enqueued_at=now, visible_at=visible_at,
        key=key, priority=message.priority, operation=operation,
    )  # fmt: skip
    return record, True


def _live_with_key(conn: sqlite3.Connection, key: str, now: float) -> JobRecord | None:
    """The live job holding ``key``; a live row whose message is gone gives its key up."""
    row = _row(conn, "j.key = ? AND j.status IS NULL", (key,))
    if row is None:
        return None
    record = _record(row, now)
    if record is not None and not record.final:
        return record
    conn.execute(  # damaged: make it what it reads as, so the key is free
        "UPDATE wf_jobs SET status = 'dead', error = ?1, finished_at = ?2, expires_at = ?2 + ttl"
        " WHERE id = ?3",
        (record.error if record else None, now, row[0]),
    )
    return None


def _known(conn: sqlite3.Connection, job_id: str, now: float) -> JobRecord | None:
    """The record of ``job_id`` if the broker knows it; an expired one is deleted."""
    row = _row(conn, "j.id = ?", (job_id,))
    if row is None:
        return None  # a new id: the usual case, one index look-up
    record = _record(row, now)
    if record is None:
        conn.execute("DELETE FROM wf_jobs WHERE id = ?", (job_id,))  # expired
    return record


def started(
    conn: sqlite3.Connection, rows: Iterable[tuple[str, int]], worker: str, now: float
) -> None:
    """Claimed: count an attempt of each tracked job of ``rows`` (id, seq), name its worker."""
    conn.executemany(
        "UPDATE wf_jobs SET attempts = attempts + 1, worker = ?, started_at = coalesce(started_at, ?)"
        " WHERE id = ? AND seq = ? AND status IS NULL",
        [(worker, now, job_id, seq) for job_id, seq in rows],
    )


def unstarted(conn: sqlite3.Connection, rows: Iterable[tuple[str, int]]) -> None:
    """A claim was given back (its consumer was cancelled): the attempts do not count."""
    conn.executemany(
        "UPDATE wf_jobs SET attempts = max(attempts - 1, 0) WHERE id = ? AND seq = ?"
        " AND status IS NULL",
        list(rows),
    )


def finish(
    conn: sqlite3.Connection,
    job_id: str,
    seq: int,
    status: RecordStatus,
    now: float,
    *,
    result: bytes | None = None,
    error: str | None = None,
) -> bool:
    """Make the live record of the message ``seq`` final; False if there is none."""
    cur = conn.execute(_FINISH, (status.value, result, error, now, job_id, seq))
    return cur.rowcount == 1


def abort(conn: sqlite3.Connection, job_id: str, now: float) -> JobRecord | None:
    """Abort a job that has not finished; its record after (None if unknown).

    A waiting job's message is settled (done, body dropped): it never runs. A
    running one's message is marked done but keeps its lease, so its worker's
    ``complete`` still succeeds — and changes nothing more (see
    :func:`.queues.complete`); a lease that runs out does not make it visible again.
    """
    row = _row(conn, "j.id = ?", (job_id,))
    record = None if row is None else _record(row, now)
    if record is None or record.final:
        return record
    seq, message_seq = row[15], row[16]
    if message_seq is not None:
        if record.status is RecordStatus.RUNNING:
            conn.execute("UPDATE wf_messages SET done_at = ? WHERE seq = ?", (now, seq))
        else:
            conn.execute(
                "UPDATE wf_messages SET done_at = ?, lease_token = NULL, body = x'' WHERE seq = ?",
                (now, seq),
            )
        conn.execute("UPDATE wf_queues SET done = done + 1 WHERE name = ?", (record.queue,))
    finish(conn, job_id, seq, RecordStatus.ABORTED, now, error="aborted by id")
    return read(conn, job_id, now)


def revive(conn: sqlite3.Connection, job_id: str, seq: int, now: float) -> None:
    """A dead job's message was put back on its queue as row ``seq``: live again.

    If another live job took its key meanwhile, that one keeps it and this one
    runs without a key (at most one live job per key).
    """
    conn.execute(
        "UPDATE wf_jobs SET seq = ?, status = NULL, result = NULL, error = NULL,"
        " finished_at = NULL, expires_at = NULL, visible_at = ?,"
        " key = CASE WHEN EXISTS (SELECT 1 FROM wf_jobs o WHERE o.key = wf_jobs.key"
        " AND o.status IS NULL) THEN NULL ELSE key END"
        " WHERE id = ? AND status = 'dead' AND expires_at > ?",
        (seq, now, job_id, now),
    )


def purge(conn: sqlite3.Connection, queue: str | None) -> None:
    """Delete the final records (of ``queue``, or all); live ones stay."""
    if queue is None:
        conn.execute("DELETE FROM wf_jobs WHERE status IS NOT NULL")
    else:
        conn.execute("DELETE FROM wf_jobs WHERE queue = ? AND status IS NOT NULL", (queue,))
