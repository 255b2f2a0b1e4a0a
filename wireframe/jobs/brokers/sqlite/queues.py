"""The SQLite broker's work-queue transactions: publish, claim, and the ends of a lease.

Plain functions on a ``sqlite3`` connection, each run as one call on the
writer thread (or a peek on the reader), given ``now`` in wall-clock seconds
read on that thread, so a call that waited for the write lock still sees the
time it runs at.

A message is leased by setting ``lease_token`` to ``"<seq>.<nonce>"`` and
``visible_at`` to the end of the lease; a delayed one is held the same way
with the token ``''`` (see :mod:`.schema`). A claim first makes every held
message whose ``visible_at`` has passed visible again (``lease_token`` NULL:
one range look-up on the held rows' index, whatever their number), then takes
the visible ones by priority and age. So a lease that ran out needs no write
of its own, and every end of a lease (complete, abandon, extend, dead-letter)
checks the token *and* that it has not run out, raising :class:`LockLost`
with what happened instead. A claim settles the messages of dead run channels
instead of leasing them (nobody wants their results) and dead-letters the
rows that cannot be delivered: malformed ones (:mod:`.rows`) and those
delivered ``max_deliveries`` times already.

A message naming a limit (``limit_name``) is handed out only as the limit
allows: a claim takes the unlimited messages as before and asks a
:class:`.limits.Gate` for the limited ones; a claim that finds only held
messages says which limits hold them and when one may go, for its consumer
to sleep until then.

A message with ``reply_to`` ``''`` may be a tracked job's (:mod:`.jobs`): its
claim, completion and dead letter also move the job's record, in the same
transaction. Directive jobs (with a reply channel) pay nothing for that.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Sequence
from typing import Any, Final

import attrs

from wireframe.jobs.broker import Delivery, LockLost, Message, RecordStatus
from wireframe.jobs.brokers.sqlite import jobs, presence
from wireframe.jobs.brokers.sqlite.channels import post_reply
from wireframe.jobs.brokers.sqlite.limits import Gate, give_back_tokens
from wireframe.jobs.brokers.sqlite.rows import (
    dead_letter_values,
    fetch_all,
    message_problems,
    readable_text,
)

__all__ = [
    "Claim",
    "Peek",
    "abandon",
    "claim",
    "complete",
    "dead_letter",
    "declare",
    "delete",
    "extend",
    "give_back",
    "peek",
    "publish",
]

# Held messages (leased or delayed) whose time has come become visible: a range of
# the wf_messages_held index, so delayed rows not yet due are never walked.
_RELEASE_DUE: Final = (
    "UPDATE wf_messages SET lease_token = NULL WHERE queue = ? AND done_at IS NULL"
    " AND lease_token IS NOT NULL AND visible_at <= ?"
)

# Held rows whose visible_at is not a number (hand-edited, damaged: TEXT and BLOB
# sort after every number) become visible too, to be dead-lettered with their
# reason; looked for only when a claim finds nothing else, so the busy path pays
# nothing for them.
_RELEASE_MALFORMED: Final = (
    "UPDATE wf_messages SET lease_token = NULL WHERE queue = ? AND done_at IS NULL"
    " AND lease_token IS NOT NULL AND visible_at >= ''"
)

# The visible messages without a limit, highest priority first, oldest first among
# equals: the wf_messages_visible index in its order (limited ones: see .limits).
_CLAIMABLE: Final = (
    "SELECT seq, id, body, reply_to, deliveries, visible_at, priority, limit_name"
    " FROM wf_messages WHERE queue = ? AND limit_name = '' AND done_at IS NULL"
    " AND lease_token IS NULL ORDER BY priority DESC, seq LIMIT ?"
)

# When the queue's next held message becomes visible (the held index's first entry).
_EARLIEST: Final = (
    "SELECT min(visible_at) FROM wf_messages"
    " WHERE queue = ? AND done_at IS NULL AND lease_token IS NOT NULL"
)

_ANY_VISIBLE: Final = (
    "SELECT 1 FROM wf_messages WHERE queue = ? AND limit_name = '' AND done_at IS NULL"
    " AND lease_token IS NULL LIMIT 1"
)


@attrs.frozen
class Claim:
    """What one claim transaction of ``consume`` did."""

    deliveries: list[Delivery]
    #: The reply channels told of a dead letter (their waiters are woken).
    dead_channels: frozenset[str]
    #: The tracked jobs that died (their waiters are woken).
    dead_jobs: frozenset[str]
    #: When nothing was claimed: the earliest ``visible_at`` left, or when a limit
    #: holding messages back may let one go, if any.
    next_visible: float | None
    #: When nothing was claimed: the limits holding visible messages back.
    held: frozenset[str] = frozenset()


@attrs.frozen
class Peek:
    """A read-only look at a queue: is something visible (that no limit holds), or when
    will it be, and which limits hold messages back."""

    ready: bool
    next_visible: float | None
    held: frozenset[str] = frozenset()


def declare(conn: sqlite3.Connection, queue: str, now: float) -> None:
    """Create ``queue`` if it does not exist."""
    conn.execute("INSERT OR IGNORE INTO wf_queues (name, created_at) VALUES (?, ?)", (queue, now))


def delete(conn: sqlite3.Connection, queue: str) -> None:
    """Delete ``queue``, its messages, completed records, dead letters and job records."""
    for table, column in (
        ("wf_messages", "queue"),
        ("wf_dead", "queue"),
        ("wf_jobs", "queue"),
        ("wf_queues", "name"),
    ):
        conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (queue,))


def publish(
    conn: sqlite3.Connection, queue: str, messages: Sequence[Message], now: float, delay: float
) -> None:
    """Append ``messages`` to ``queue`` (declaring it), visible ``delay`` seconds from now."""
    declare(conn, queue, now)
    visible_at = now + delay
    held = "" if delay > 0 else None
    conn.executemany(
        "INSERT INTO wf_messages (queue, id, body, reply_to, visible_at, deliveries, priority,"
        " lease_token, limit_name) VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?)",
        [
            (queue, m.id, bytes(m.body), m.reply_to, visible_at, m.priority, held, m.limit)
            for m in messages
        ],
    )


def claim(
    conn: sqlite3.Connection,
    queue: str,
    limit: int,
    *,
    lease: float,
    max_deliveries: int,
    now: float,
    worker: str,
) -> Claim:
    """Lease up to ``limit`` visible messages of ``queue`` for ``lease`` s, highest
    priority first, oldest first among equals; ``worker`` names the consumer in the
    records of tracked jobs.

    Rows set aside on the way (settled orphans, dead letters) do not count: it
    looks further until it has ``limit`` or the queue has no more visible. A
    message naming a limit is handed out only as that limit allows (a
    :class:`.limits.Gate`); the others pay one index seek for that.
    """
    conn.execute(_RELEASE_DUE, (queue, now))
    nonce = secrets.token_hex(8)
    out: list[Delivery] = []
    dead_channels: set[str] = set()
    dead_jobs: set[str] = set()
    gate = Gate.open(conn, queue, now)
    while len(out) < limit:
        want = limit - len(out)
        rows = fetch_all(conn, _CLAIMABLE, (queue, want))
        if gate is not None:
            rows = gate.candidates(conn, rows, want)
        if not rows:
            if out or conn.execute(_RELEASE_MALFORMED, (queue,)).rowcount == 0:
                break
            gate = Gate.open(conn, queue, now)  # some may name a limit
            continue  # damaged held rows became visible: bury them
        rows = _settle_orphans(conn, queue, rows, now)
        if not rows:
            continue  # every one was an orphan: look further
        fit = _bury_unfit(conn, queue, rows, max_deliveries, now, dead_channels, dead_jobs)
        out += _lease_rows(conn, queue, fit, nonce, now + lease)
        tracked = [(r[1], r[0]) for r in fit if r[3] == ""]
        if tracked:
            jobs.started(conn, tracked, worker, now)
        if gate is not None:
            gate.took(fit)
        if len(fit) == len(rows):
            break
    if out:
        if gate is not None:
            gate.settle(conn)
        return Claim(out, frozenset(dead_channels), frozenset(dead_jobs), None)
    next_visible = conn.execute(_EARLIEST, (queue,)).fetchone()[0]
    held: frozenset[str] = frozenset()
    if gate is not None:
        held, next_visible = gate.held_by(), _earliest(next_visible, gate.next_go(conn))
    return Claim([], frozenset(dead_channels), frozenset(dead_jobs), next_visible, held)


def _earliest(a: Any, b: float | None) -> Any:
    """The earlier of a queue's next ``visible_at`` (maybe damaged: not a number) and
    the time a limit may let a message go."""
    if b is None or (a is not None and (not isinstance(a, int | float) or a <= b)):
        return a
    return b


def _settle_orphans(conn: sqlite3.Connection, queue: str, rows: list[Any], now: float) -> list[Any]:
    """Mark the claimable ``rows`` whose run channel is dead as done; return the others.

    Their run is gone (aborted, or its process died), so nobody wants their results.
    """
    orphans = presence.dead_channels(conn, (r[3] for r in rows if isinstance(r[3], str)), now)
    if not orphans:
        return rows
    settled = [(now, r[0]) for r in rows if r[3] in orphans]
    conn.executemany(
        "UPDATE wf_messages SET done_at = ?, lease_token = NULL, body = x'' WHERE seq = ?",
        settled,
    )
    conn.execute("UPDATE wf_queues SET done = done + ? WHERE name = ?", (len(settled), queue))
    return [r for r in rows if r[3] not in orphans]


def _unfit(row: Any, max_deliveries: int) -> str | None:
    """Why a claimable row must not be delivered (malformed, or delivered too often)."""
    reason = message_problems(*row)
    deliveries = row[4]
    if reason is None and deliveries >= max_deliveries:
        return f"delivered {deliveries} times without completing (max_deliveries={max_deliveries})"
    return reason


def _bury_unfit(
    conn: sqlite3.Connection,
    queue: str,
    rows: list[Any],
    max_deliveries: int,
    now: float,
    told: set[str],
    died: set[str],
) -> list[Any]:
    """Move the ``rows`` that must not be delivered to the dead-letter store, each with
    its reason, and return the others; add the reply channels told of a death to
    ``told``, the tracked jobs that died to ``died``."""
    fit: list[Any] = []
    dead: list[tuple[int]] = []
    for row in rows:
        reason = _unfit(row, max_deliveries)
        if reason is None:
            fit.append(row)
            continue
        seq, message_id, body, reply_to, deliveries, _, priority, limit_name = row
        letter = dead_letter_values(seq, "wf_messages", message_id, body, reply_to, deliveries)
        number = priority if type(priority) is int else 0
        name = readable_text(limit_name) or ""
        _post_dead(conn, queue, letter[:3], reason, letter[3], now, number, name)
        dead.append((seq,))
        if letter[2]:
            told.add(letter[2])
        elif reply_to == "" and jobs.finish(
            conn, letter[0], seq, RecordStatus.DEAD, now, error=reason
        ):
            died.add(letter[0])
    if dead:
        conn.executemany("DELETE FROM wf_messages WHERE seq = ?", dead)
    return fit


def _lease_rows(
    conn: sqlite3.Connection, queue: str, rows: list[Any], nonce: str, expires: float
) -> list[Delivery]:
    """Lease the well-formed ``rows`` until ``expires``, each delivery counted."""
    out: list[Delivery] = []
    leased: list[tuple[str, float, int]] = []
    for seq, message_id, body, reply_to, deliveries, _, priority, limit_name in rows:
        token = f"{seq}.{nonce}"
        leased.append((token, expires, seq))
        message = Message(message_id, body, reply_to, priority, limit_name)
        out.append(
            Delivery(
                message=message,
                queue=queue,
                deliveries=deliveries + 1,
                lease_token=token,
                lease_expires=expires,
            )
        )
    conn.executemany(
        "UPDATE wf_messages SET deliveries = deliveries + 1, lease_token = ?,"
        " visible_at = ? WHERE seq = ?",
        leased,
    )
    return out


def peek(conn: sqlite3.Connection, queue: str, now: float) -> Peek:
    """Whether ``queue`` has a visible message (or a held one now due), and when the
    next held one will be."""
    earliest = conn.execute(_EARLIEST, (queue,)).fetchone()[0]
    if earliest is not None and not isinstance(earliest, int | float):
        return Peek(True, None)  # only damaged held rows: a claim buries them
    if earliest is not None and earliest <= now:
        return Peek(True, earliest)
    if conn.execute(_ANY_VISIBLE, (queue,)).fetchone() is not None:
        return Peek(True, earliest)
    gate = Gate.open(conn, queue, now)
    if gate is None:
        return Peek(False, earliest)
    return Peek(gate.ready, _earliest(earliest, gate.next_go(conn)), gate.held_by())


def give_back(conn: sqlite3.Connection, deliveries: Sequence[Delivery], now: float) -> None:
    """Undo a claim whose caller was cancelled: visible at once, delivery not counted,
    the tokens of limited messages returned."""
    held = [(seq, d) for d in deliveries if (seq := _lease_seq(d)) is not None]
    conn.executemany(
        "UPDATE wf_messages SET lease_token = NULL, visible_at = 0,"
        " deliveries = max(deliveries - 1, 0) WHERE seq = ? AND lease_token = ?",
        [(seq, d.lease_token) for seq, d in held],
    )
    tracked = [(d.message.id, seq) for seq, d in held if d.message.reply_to == ""]
    if tracked:
        jobs.unstarted(conn, tracked)
    limited = [d.message.limit for _, d in held if d.message.limit]
    if limited:
        give_back_tokens(conn, limited, now)


def complete(conn: sqlite3.Connection, delivery: Delivery, reply: bytes | None, now: float) -> None:
    """Keep the delivery as its completed record and post ``reply`` (if not None) to its
    reply channel, unless that channel is dead; :class:`LockLost` if the lease is not current.

    A tracked job's record becomes ``done`` with ``reply`` as its result — unless the
    job was aborted while it ran: then its lease just ends, and the result is dropped.
    """
    reply_to = delivery.message.reply_to
    seq = _end_lease(conn, delivery, now, done=True)
    if seq is None:
        return  # aborted while it ran: settled already
    conn.execute("UPDATE wf_queues SET done = done + 1 WHERE name = ?", (delivery.queue,))
    if not reply_to:
        jobs.finish(conn, delivery.message.id, seq, RecordStatus.DONE, now, result=reply)
    elif reply is not None and not presence.dead_channels(conn, (reply_to,), now):
        post_reply(conn, reply_to, delivery.message.id, reply, None)


def abandon(
    conn: sqlite3.Connection, delivery: Delivery, body: bytes | None, now: float, delay: float
) -> None:
    """Give the delivery back, visible ``delay`` s from now; a new ``body`` resets its count."""
    seq = _lease_seq(delivery)
    # delayed: held until then, like a lease (a job aborted while it ran is done: free)
    held = "" if delay > 0 else None
    token = "lease_token = CASE WHEN done_at IS NULL THEN ? END"
    if body is None:
        cur = conn.execute(
            f"UPDATE wf_messages SET {token}, visible_at = ?"
            " WHERE seq = ? AND lease_token = ? AND visible_at > ?",
            (held, now + delay, seq, delivery.lease_token, now),
        )
    else:
        cur = conn.execute(
            f"UPDATE wf_messages SET {token}, visible_at = ?, body = ?,"
            " deliveries = 0 WHERE seq = ? AND lease_token = ? AND visible_at > ?",
            (held, now + delay, bytes(body), seq, delivery.lease_token, now),
        )
    if cur.rowcount != 1:
        raise _lock_lost(conn, delivery, seq, now)


def extend(conn: sqlite3.Connection, delivery: Delivery, lease: float, now: float) -> float:
    """Renew the lease until ``now + lease`` (same token); return that time."""
    seq = _lease_seq(delivery)
    expires = now + lease
    cur = conn.execute(
        "UPDATE wf_messages SET visible_at = ? WHERE seq = ? AND lease_token = ? AND visible_at > ?",
        (expires, seq, delivery.lease_token, now),
    )
    if cur.rowcount != 1:
        raise _lock_lost(conn, delivery, seq, now)
    return expires


def dead_letter(conn: sqlite3.Connection, delivery: Delivery, reason: str, now: float) -> None:
    """Move the delivery to the dead-letter store and post a dead reply; a tracked job's
    record becomes ``dead`` (one aborted while it ran stays aborted, with no dead letter)."""
    message = delivery.message
    seq = _end_lease(conn, delivery, now, done=False)
    if seq is None:
        return  # aborted while it ran: settled already
    _post_dead(
        conn,
        delivery.queue,
        (message.id, bytes(message.body), message.reply_to),
        reason,
        delivery.deliveries,
        now,
        message.priority,
        message.limit,
    )
    if not message.reply_to:
        jobs.finish(conn, message.id, seq, RecordStatus.DEAD, now, error=reason)


def _lease_seq(delivery: Delivery) -> int | None:
    """The message's ``seq`` named in a lease token this broker issued; None otherwise."""
    head, sep, _ = delivery.lease_token.partition(".")
    if not sep or not head.isdigit():
        return None
    return int(head)


def _lock_lost(
    conn: sqlite3.Connection, delivery: Delivery, seq: int | None, now: float
) -> LockLost:
    """The :class:`LockLost` for a lease that is no longer current, saying why."""
    message_id, queue = delivery.message.id, delivery.queue
    if seq is None:
        return LockLost(message_id, queue, "the lease token was not issued by a SQLite broker")
    row = conn.execute(
        "SELECT lease_token, visible_at, done_at FROM wf_messages WHERE seq = ?", (seq,)
    ).fetchone()
    if row is None:
        detail = "the message is no longer queued (dead-lettered or deleted)"
    elif row[2] is not None and row[0] == delivery.lease_token:
        detail = f"the job was aborted by id, and the lease expired {now - row[1]:.3f} s ago"
    elif row[2] is not None:
        detail = "the message was already completed"
    elif row[0] is None and isinstance(row[1], int | float) and row[1] <= now:
        detail = f"the lease expired {now - row[1]:.3f} s ago (the message is visible again)"
    elif row[0] != delivery.lease_token:
        detail = "the message was leased again by another consumer (or given back)"
    else:
        detail = f"the lease expired {now - row[1]:.3f} s ago"
    return LockLost(message_id, queue, detail)


def _end_lease(
    conn: sqlite3.Connection, delivery: Delivery, now: float, *, done: bool
) -> int | None:
    """Mark the leased message completed (``done``) or delete it and return its seq;
    LockLost unless the lease is current.

    A message whose job was aborted by id while it ran is done already (see
    :func:`.jobs.abort`): its lease just ends, and None says there is nothing more to do.
    """
    seq = _lease_seq(delivery)
    if seq is not None:
        if done:
            cur = conn.execute(
                "UPDATE wf_messages SET done_at = ?1, lease_token = NULL, body = x''"
                " WHERE seq = ?2 AND lease_token = ?3 AND visible_at > ?1 AND done_at IS NULL",
                (now, seq, delivery.lease_token),
            )
        else:
            cur = conn.execute(
                "DELETE FROM wf_messages WHERE seq = ?1 AND lease_token = ?2 AND visible_at > ?3"
                " AND done_at IS NULL",
                (seq, delivery.lease_token, now),
            )
        if cur.rowcount == 1:
            return seq
        aborted = conn.execute(
            "UPDATE wf_messages SET lease_token = NULL, body = x''"
            " WHERE seq = ?1 AND lease_token = ?2 AND visible_at > ?3 AND done_at IS NOT NULL",
            (seq, delivery.lease_token, now),
        )
        if aborted.rowcount == 1:
            return None
    raise _lock_lost(conn, delivery, seq, now)


def _post_dead(
    conn: sqlite3.Connection,
    queue: str,
    seq_row: tuple[str, bytes, str],
    reason: str,
    deliveries: int,
    now: float,
    priority: int,
    limit: str,
) -> None:
    """Store a dead letter and tell its reply channel (if any) with a dead reply."""
    message_id, body, reply_to = seq_row
    conn.execute(
        "INSERT INTO wf_dead (queue, id, body, reply_to, reason, deliveries, died_at, priority,"
        " limit_name) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (queue, message_id, body, reply_to, reason, deliveries, now, priority, limit),
    )
    if reply_to:
        post_reply(conn, reply_to, message_id, None, reason)
