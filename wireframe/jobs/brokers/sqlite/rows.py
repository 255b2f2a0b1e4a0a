"""Checking the SQLite broker's rows, which a hand edit or a damaged file may have broken.

SQLite keeps any value in any column: a ``TEXT`` body, a ``TEXT`` or negative
delivery count, a ``BLOB`` id, text that is not UTF-8. A row like that must
neither crash every reader of its queue (``TypeError`` on each ``consume``, so
good jobs behind it time out) nor vanish. So every row the broker is about to
trust is checked here first, and what is wrong is said in one reason naming the
table, the row, the column and what it held. The broker then deals with it
where it was found: a queued message goes to the dead-letter store (its reply
channel, if readable, gets a dead reply), a reply reaches its waiter as a dead
reply, a broadcast is skipped with a logged warning.

Every check has a fast path for a well-formed row: these functions run for each
message and reply the broker hands out.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Final

from wireframe.jobs.broker import DeadLetter, Message, Reply

__all__ = [
    "InvalidText",
    "dead_letter_from_row",
    "dead_letter_values",
    "described",
    "fetch_all",
    "message_problems",
    "readable_text",
    "reply_from_row",
]

_SHOWN: Final = 40  # characters of a bad value quoted in a reason


class InvalidText(bytes):
    """The raw bytes of a ``TEXT`` value that is not valid UTF-8 (what a damaged
    row may hold, and what Python's ``sqlite3`` refuses to read as ``str``)."""


def _lenient_text(raw: bytes) -> str | InvalidText:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return InvalidText(raw)


def fetch_all(conn: sqlite3.Connection, sql: str, args: Any = ()) -> list[Any]:
    """``conn.execute(sql, args).fetchall()``, reading text that is not UTF-8 as
    :class:`InvalidText` instead of failing the whole query.

    ``sqlite3`` raises ``OperationalError: Could not decode to UTF-8`` for one bad
    value, which would fail every read of the queue; the query is then run again
    (same transaction, same rows) with a lenient text factory, so the good path
    keeps the fast built-in one.
    """
    try:
        return conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError as exc:
        if "decode" not in str(exc):
            raise
    conn.text_factory = _lenient_text
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.text_factory = str


def described(value: object) -> str:
    """What a column held, for a reason: ``TEXT 'abc'``, ``INTEGER -3``, ``NULL``..."""
    if value is None:
        return "NULL"
    if isinstance(value, InvalidText):
        return f"TEXT that is not valid UTF-8 ({_clip(repr(bytes(value)))})"
    if isinstance(value, str):
        return f"TEXT {_clip(repr(value))}"
    if isinstance(value, bytes):
        shown = value[: _SHOWN // 2].hex()
        return f"BLOB x'{shown}'" + ("..." if len(value) > _SHOWN // 2 else "")
    if isinstance(value, int):
        return f"INTEGER {value}"
    if isinstance(value, float):
        return f"REAL {value!r}"
    return (
        f"{type(value).__name__} {_clip(repr(value))}"  # pragma: no cover - sqlite3 gives no other
    )


def _clip(text: str) -> str:
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def readable_text(value: object) -> str | None:
    """``value`` as text if it can be read as such (a str, or UTF-8 bytes), else None."""
    if type(value) is str:
        return value
    if isinstance(value, bytes) and not isinstance(value, InvalidText):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return None


def _is_time(value: object) -> bool:
    return type(value) is float or type(value) is int


def _seconds(value: object) -> float:
    """A time column's value in seconds (0.0, the epoch, for one that is not a number)."""
    return float(value) if isinstance(value, int | float) else 0.0


def message_problems(
    seq: int,
    message_id: object,
    body: object,
    reply_to: object,
    deliveries: object,
    when: object,
    priority: object = 0,
    limit: object = "",
) -> str | None:
    """The reason a ``wf_messages`` row cannot be delivered, or None if it is well formed."""
    if (
        type(message_id) is str
        and type(body) is bytes
        and type(reply_to) is str
        and type(deliveries) is int
        and deliveries >= 0
        and _is_time(when)
        and type(priority) is int
        and type(limit) is str
    ):
        return None
    problems = []
    if type(message_id) is not str:
        problems.append(f"id holds {described(message_id)}, expected TEXT")
    if type(body) is not bytes:
        problems.append(f"body holds {described(body)}, expected a BLOB")
    if type(reply_to) is not str:
        problems.append(f"reply_to holds {described(reply_to)}, expected TEXT")
    if type(deliveries) is not int or deliveries < 0:
        problems.append(f"deliveries holds {described(deliveries)}, expected a whole number >= 0")
    if not _is_time(when):
        problems.append(f"visible_at holds {described(when)}, expected a time in seconds")
    if type(priority) is not int:
        problems.append(f"priority holds {described(priority)}, expected a whole number")
    if type(limit) is not str:
        problems.append(f"limit_name holds {described(limit)}, expected TEXT")
    return f"malformed message row (wf_messages seq {seq}): {'; '.join(problems)}"


def dead_letter_values(
    seq: int, table: str, message_id: object, body: object, reply_to: object, deliveries: object
) -> tuple[str, bytes, str, int]:
    """``(id, body, reply_to, deliveries)`` of a row, made storable as a dead letter.

    What can be read is kept (a BLOB id that is UTF-8 becomes its text, a TEXT
    body its UTF-8 bytes, so ``wireframe jobs retry`` can put it back well
    formed); what cannot is replaced (an unreadable id by a name for the row, an
    unreadable reply channel by ``""``: nobody can be told) — the reason says what
    it held.
    """
    mid = readable_text(message_id)
    if mid is None:
        mid = f"<unreadable id of {table} seq {seq}>"
    if isinstance(body, bytes):
        data = bytes(body)
    elif isinstance(body, str):
        data = body.encode("utf-8")
    else:
        data = b""
    count = deliveries if type(deliveries) is int and deliveries >= 0 else 0
    return mid, data, readable_text(reply_to) or "", count


def reply_from_row(
    channel: str, seq: object, message_id: object, body: object, reason: object
) -> Reply:
    """The :class:`Reply` a ``wf_replies`` row holds; a malformed one becomes a dead
    reply whose reason says what was wrong (its waiter learns of it, nothing hangs)."""
    if type(message_id) is str and (
        (type(body) is bytes and reason is None) or (body is None and type(reason) is str)
    ):
        return Reply(message_id=message_id, body=body, dead_reason=reason)
    problems = []
    if type(message_id) is not str:
        problems.append(f"message_id holds {described(message_id)}, expected TEXT")
    if body is not None and type(body) is not bytes:
        problems.append(f"body holds {described(body)}, expected a BLOB or NULL")
    if reason is not None and type(reason) is not str:
        problems.append(f"dead_reason holds {described(reason)}, expected TEXT or NULL")
    if not problems:
        both = body is not None
        problems.append(
            "both body and dead_reason are set" if both else "neither body nor dead_reason is set"
        )
    mid = readable_text(message_id) or f"<unreadable message_id of wf_replies seq {seq!r}>"
    return Reply(
        message_id=mid,
        dead_reason=(
            f"malformed reply row (wf_replies channel {channel!r} seq {seq!r}): "
            + "; ".join(problems)
        ),
    )


def dead_letter_from_row(
    seq: int,
    queue: object,
    message_id: object,
    body: object,
    reply_to: object,
    reason: object,
    deliveries: object,
    died_at: object,
    priority: object = 0,
    limit: object = "",
) -> DeadLetter:
    """The :class:`DeadLetter` a ``wf_dead`` row holds, readable whatever it holds
    (``wireframe jobs dead`` must list a damaged row, not crash on it)."""
    if (
        type(queue) is str
        and type(message_id) is str
        and type(body) is bytes
        and type(reply_to) is str
        and type(reason) is str
        and type(deliveries) is int
        and _is_time(died_at)
        and type(priority) is int
        and type(limit) is str
    ):
        message = Message(message_id, body, reply_to, priority, limit)
        return DeadLetter(message, queue, reason, deliveries, _seconds(died_at))
    mid, data, channel, count = dead_letter_values(
        seq, "wf_dead", message_id, body, reply_to, deliveries
    )
    problems = [
        f"{column} holds {described(value)}"
        for column, value, ok in (
            ("queue", queue, type(queue) is str),
            ("id", message_id, type(message_id) is str),
            ("body", body, type(body) is bytes),
            ("reply_to", reply_to, type(reply_to) is str),
            ("reason", reason, type(reason) is str),
            ("deliveries", deliveries, type(deliveries) is int),
            ("died_at", died_at, _is_time(died_at)),
            ("priority", priority, type(priority) is int),
            ("limit_name", limit, type(limit) is str),
        )
        if not ok
    ]
    text = readable_text(reason) or "(no readable reason)"
    number = priority if type(priority) is int else 0
    return DeadLetter(
        message=Message(mid, data, channel, number, readable_text(limit) or ""),
        queue=readable_text(queue) or f"<unreadable queue of wf_dead seq {seq}>",
        reason=f"{text} [malformed dead-letter row (wf_dead seq {seq}): {'; '.join(problems)}]",
        deliveries=count,
        died_at=_seconds(died_at),
    )
