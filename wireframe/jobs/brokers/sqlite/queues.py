"""The SQLite broker's work-queue transactions: publish, claim, and the ends of a lease.

Plain functions on a ``sqlite3`` connection, each run as one call on the
writer thread (or a peek on the reader), given ``now`` in wall-clock seconds
read on that thread, so a call that waited for the write lock still sees the
time it runs at.

A message is leased by setting ``lease_token`` to ``"<seq>.<nonce>"`` and
``visible_at`` to the end of the lease: a lease that ran out makes its message
visible again with no further write, and every end of a lease (complete,
abandon, extend, dead-letter) checks the token *and* that it has not run out,
raising :class:`LockLost` with what happened instead. A claim settles the
messages of dead run channels instead of leasing them (nobody wants their
results) and dead-letters the rows that cannot be delivered: malformed ones
(:mod:`.rows`) and those delivered ``max_deliveries`` times already.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Sequence
from typing import Any, Final

import attrs

from wireframe.jobs.broker import Delivery, LockLost, Message
from wireframe.jobs.brokers.sqlite import presence
from wireframe.jobs.brokers.sqlite.channels import post_reply
from wireframe.jobs.brokers.sqlite.rows import dead_letter_values, fetch_all, message_problems

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

# A row whose visible_at is not a number (hand-edited, damaged) is claimable at
# once, to be dead-lettered with its reason; otherwise it would sit there unseen.
_CLAIMABLE: Final = (
    "SELECT seq, id, body, reply_to, deliveries, visible_at FROM wf_messages"
    " WHERE queue = ? AND done_at IS NULL"
    " AND (visible_at <= ? OR typeof(visible_at) NOT IN ('integer', 'real'))"
    " ORDER BY seq LIMIT ?"
)

# When the queue's next message becomes visible (0, i.e. now, for a malformed one).
_EARLIEST: Final = (
    "SELECT min(CASE WHEN typeof(visible_at) IN ('integer', 'real') THEN visible_at ELSE 0 END)"
    " FROM wf_messages WHERE queue = ? AND done_at IS NULL"
)


@attrs.frozen
class Claim:
    """What one claim transaction of ``consume`` did."""

    deliveries: list[Delivery]
    #: The reply channels told of a dead letter (their waiters are woken).
    dead_channels: frozenset[str]
    #: When nothing was claimed: the earliest ``visible_at`` left, if any.
    next_visible: float | None


@attrs.frozen
class Peek:
    """A read-only look at a queue: is something visible, or when will it be."""

    ready: bool
    next_visible: float | None


def declare(conn: sqlite3.Connection, queue: str, now: float) -> None:
    """Create ``queue`` if it does not exist."""
    conn.execute("INSERT OR IGNORE INTO wf_queues (name, created_at) VALUES (?, ?)", (queue, now))


def delete(conn: sqlite3.Connection, queue: str) -> None:
    """Delete ``queue``, its messages, completed records and dead letters."""
    for table, column in (("wf_messages", "queue"), ("wf_dead", "queue"), ("wf_queues", "name")):
        conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (queue,))


def publish(
    conn: sqlite3.Connection, queue: str, messages: Sequence[Message], now: float, delay: float
) -> None:
    """Append ``messages`` to ``queue`` (declaring it), visible ``delay`` seconds from now."""
    declare(conn, queue, now)
    visible_at = now + delay
    conn.executemany(
        "INSERT INTO wf_messages (queue, id, body, reply_to, visible_at, deliveries)"
        " VALUES (?, ?, ?, ?, ?, 0)",
        [(queue, m.id, bytes(m.body), m.reply_to, visible_at) for m in messages],
    )


def claim(
    conn: sqlite3.Connection,
    queue: str,
    limit: int,
    *,
    lease: float,
    max_deliveries: int,
    now: float,
) -> Claim:
    """Lease up to ``limit`` visible messages of ``queue``, oldest first, for ``lease`` s.

    Rows set aside on the way (settled orphans, dead letters) do not count: it
    looks further until it has ``limit`` or the queue has no more visible.
    """
    nonce = secrets.token_hex(8)
    out: list[Delivery] = []
    dead_channels: set[str] = set()
    while len(out) < limit:
        rows = fetch_all(conn, _CLAIMABLE, (queue, now, limit - len(out)))
        if not rows:
            break
        rows = _settle_orphans(conn, queue, rows, now)
        if not rows:
            continue  # every one was an orphan: look further
        fit, told = _bury_unfit(conn, queue, rows, max_deliveries, now)
        dead_channels |= told
        out += _lease_rows(conn, queue, fit, nonce, now + lease)
        if len(fit) == len(rows):
            break
    next_visible = None if out else conn.execute(_EARLIEST, (queue,)).fetchone()[0]
    return Claim(out, frozenset(dead_channels), next_visible)


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
    conn: sqlite3.Connection, queue: str, rows: list[Any], max_deliveries: int, now: float
) -> tuple[list[Any], set[str]]:
    """Move the ``rows`` that must not be delivered to the dead-letter store, each with
    its reason; return the others and the reply channels told of a death."""
    fit: list[Any] = []
    dead: list[tuple[int]] = []
    told: set[str] = set()
    for row in rows:
        reason = _unfit(row, max_deliveries)
        if reason is None:
            fit.append(row)
            continue
        seq, message_id, body, reply_to, deliveries, _ = row
        letter = dead_letter_values(seq, "wf_messages", message_id, body, reply_to, deliveries)
        _post_dead(conn, queue, letter[:3], reason, letter[3], now)
        dead.append((seq,))
        if letter[2]:
            told.add(letter[2])
    if dead:
        conn.executemany("DELETE FROM wf_messages WHERE seq = ?", dead)
    return fit, told


def _lease_rows(
    conn: sqlite3.Connection, queue: str, rows: list[Any], nonce: str, expires: float
) -> list[Delivery]:
    """Lease the well-formed ``rows`` until ``expires``, each delivery counted."""
    out: list[Delivery] = []
    leased: list[tuple[str, float, int]] = []
    for seq, message_id, body, reply_to, deliveries, _ in rows:
        token = f"{seq}.{nonce}"
        leased.append((token, expires, seq))
        out.append(
            Delivery(
                message=Message(id=message_id, body=body, reply_to=reply_to),
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
    """Whether ``queue`` has a visible message, and when the next one will be."""
    earliest = conn.execute(_EARLIEST, (queue,)).fetchone()[0]
    return Peek(earliest is not None and earliest <= now, earliest)


def give_back(conn: sqlite3.Connection, deliveries: Sequence[Delivery]) -> None:
    """Undo a claim whose caller was cancelled: visible at once, delivery not counted."""
    conn.executemany(
        "UPDATE wf_messages SET lease_token = NULL, visible_at = 0,"
        " deliveries = max(deliveries - 1, 0) WHERE seq = ? AND lease_token = ?",
        [(seq, d.lease_token) for d in deliveries if (seq := _lease_seq(d)) is not None],
    )


def complete(conn: sqlite3.Connection, delivery: Delivery, reply: bytes | None, now: float) -> None:
    """Keep the delivery as its completed record and post ``reply`` (if not None) to its
    reply channel, unless that channel is dead; :class:`LockLost` if the lease is not current."""
    reply_to = delivery.message.reply_to
    _end_lease(conn, delivery, now, done=True)
    conn.execute("UPDATE wf_queues SET done = done + 1 WHERE name = ?", (delivery.queue,))
    if reply is not None and reply_to and not presence.dead_channels(conn, (reply_to,), now):
        post_reply(conn, reply_to, delivery.message.id, reply, None)


def abandon(
    conn: sqlite3.Connection, delivery: Delivery, body: bytes | None, now: float, delay: float
) -> None:
    """Give the delivery back, visible ``delay`` s from now; a new ``body`` resets its count."""
    seq = _lease_seq(delivery)
    if body is None:
        cur = conn.execute(
            "UPDATE wf_messages SET lease_token = NULL, visible_at = ?"
            " WHERE seq = ? AND lease_token = ? AND visible_at > ?",
            (now + delay, seq, delivery.lease_token, now),
        )
    else:
        cur = conn.execute(
            "UPDATE wf_messages SET lease_token = NULL, visible_at = ?, body = ?,"
            " deliveries = 0 WHERE seq = ? AND lease_token = ? AND visible_at > ?",
            (now + delay, bytes(body), seq, delivery.lease_token, now),
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
    """Move the delivery to the dead-letter store and post a dead reply."""
    message = delivery.message
    _end_lease(conn, delivery, now, done=False)
    _post_dead(
        conn,
        delivery.queue,
        (message.id, bytes(message.body), message.reply_to),
        reason,
        delivery.deliveries,
        now,
    )


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
    elif row[2] is not None:
        detail = "the message was already completed"
    elif row[0] != delivery.lease_token:
        detail = "the message was leased again by another consumer"
    else:
        detail = f"the lease expired {now - row[1]:.3f} s ago"
    return LockLost(message_id, queue, detail)


def _end_lease(conn: sqlite3.Connection, delivery: Delivery, now: float, *, done: bool) -> None:
    """Mark the leased message completed (``done``) or delete it; LockLost unless the
    lease is current."""
    seq = _lease_seq(delivery)
    if seq is not None:
        if done:
            cur = conn.execute(
                "UPDATE wf_messages SET done_at = ?1, lease_token = NULL, body = x''"
                " WHERE seq = ?2 AND lease_token = ?3 AND visible_at > ?1",
                (now, seq, delivery.lease_token),
            )
        else:
            cur = conn.execute(
                "DELETE FROM wf_messages WHERE seq = ?1 AND lease_token = ?2 AND visible_at > ?3",
                (seq, delivery.lease_token, now),
            )
        if cur.rowcount == 1:
            return
    raise _lock_lost(conn, delivery, seq, now)


def _post_dead(
    conn: sqlite3.Connection,
    queue: str,
    seq_row: tuple[str, bytes, str],
    reason: str,
    deliveries: int,
    now: float,
) -> None:
    """Store a dead letter and tell its reply channel (if any) with a dead reply."""
    message_id, body, reply_to = seq_row
    conn.execute(
        "INSERT INTO wf_dead (queue, id, body, reply_to, reason, deliveries, died_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (queue, message_id, body, reply_to, reason, deliveries, now),
    )
    if reply_to:
        post_reply(conn, reply_to, message_id, None, reason)
