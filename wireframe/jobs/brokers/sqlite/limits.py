"""The SQLite broker's limits: which limited messages a claim may hand out, and when more may go.

*Storage.* A limit is a row of ``wf_limits`` (name, ``rate`` per ``per``
seconds, ``concurrency``) with its token bucket (``tokens`` at clock reading
``at``; NULL without a rate). A message names its limit in
``wf_messages.limit_name`` (``''``: none; a name without a row: none either),
and a dead letter keeps it so that a requeue hands it out within the same
limit. The slots a limit uses are its *current* leases, counted on the
``wf_messages_limit_leases`` index (leased rows with a limit, by name and
lease end): a complete, a dead letter or an abort takes the row out of that
index, an abandon or a give-back clears its lease, and a lease that ran out
is past ``now``, so every end of a lease frees its slot without a write of
its own.

*Claim.* The visible messages are indexed by queue, then limit name, then
priority and age (:mod:`.schema`), so a claim takes the unlimited ones as
before (``limit_name = ''``: the held ones are never walked) and asks a
:class:`Gate` for the rest. The gate hops over the limit names the queue's
visible messages carry (one index seek each), computes what each limit
allows now — tokens in its bucket, free slots — and fetches at most that many
of its messages, in order; a held message is never read. Those are merged
with the unlimited ones by priority and age. Handing one out takes a token
(:meth:`Gate.took`), written back once per claim (:meth:`Gate.settle`).
A queue without a visible limited message costs the claim one index seek.

*Waiting.* When nothing may go, the gate says which limits held messages back
(their consumers wait on a per-limit signal too, fired by every end of a lease
of that limit in this process; another process's write wakes them through the
data_version watcher like any other) and when the first of them may go on its
own: the next token, or the end of the earliest lease holding a slot.
"""

from __future__ import annotations

import functools
import math
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any, Final

import attrs

from wireframe.jobs.brokers.sqlite.rows import InvalidText, fetch_all
from wireframe.jobs.limits import Bucket, Limit, LimitError

__all__ = ["MIGRATION", "Gate", "define", "give_back_tokens", "held_counts"]

#: The schema migration that adds limits (version 4).
MIGRATION: Final = (
    "ALTER TABLE wf_messages ADD COLUMN limit_name TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE wf_dead ADD COLUMN limit_name TEXT NOT NULL DEFAULT ''",
    # visible messages by limit: an unlimited claim walks limit_name = '' only
    "DROP INDEX wf_messages_visible",
    "CREATE INDEX wf_messages_visible ON wf_messages (queue, limit_name, priority DESC, seq)"
    " WHERE done_at IS NULL AND lease_token IS NULL",
    # the leases of limited messages (a delay's '' is no lease): the slots in use
    "CREATE INDEX wf_messages_limit_leases ON wf_messages (limit_name, visible_at)"
    " WHERE limit_name != '' AND done_at IS NULL AND lease_token IS NOT NULL"
    " AND lease_token != ''",
    # tokens at clock reading `at`: the bucket (NULL without a rate)
    """CREATE TABLE wf_limits (
        name TEXT PRIMARY KEY,
        rate INTEGER,
        per REAL NOT NULL,
        concurrency INTEGER,
        tokens REAL,
        at REAL
    ) WITHOUT ROWID""",
)

# The next limit name (in index order) after {name} among the queue's visible messages.
_NEXT_NAME: Final = (
    "SELECT limit_name FROM wf_messages WHERE queue = ?1 AND limit_name > {name}"
    " AND done_at IS NULL AND lease_token IS NULL ORDER BY limit_name LIMIT 1"
)

# The visible messages of one limit in a queue, in claim order.
_LIMITED: Final = (
    "SELECT seq, id, body, reply_to, deliveries, visible_at, priority, limit_name"
    " FROM wf_messages WHERE queue = ?1 AND limit_name = {name} AND done_at IS NULL"
    " AND lease_token IS NULL ORDER BY priority DESC, seq LIMIT ?3"
)


def _naming(sql: str, name: object) -> str:
    """``sql`` with its ``{name}`` bound to parameter 2 as ``name`` is stored.

    Python's ``sqlite3`` binds :class:`.rows.InvalidText` (what a damaged name that
    is not UTF-8 reads as) as a BLOB; cast back, it matches the TEXT it came from.
    """
    return _variant(sql, isinstance(name, InvalidText))


@functools.cache
def _variant(sql: str, cast: bool) -> str:
    return sql.format(name="CAST(?2 AS TEXT)" if cast else "?2")


# A limit's current leases, on the wf_messages_limit_leases index: the slots in use.
_CURRENT_LEASES: Final = (
    "FROM wf_messages WHERE limit_name = ?1 AND limit_name != '' AND done_at IS NULL"
    " AND lease_token IS NOT NULL AND lease_token != '' AND visible_at > ?2"
)
# Counted up to the cap (?3), so that a count walks no more index entries than that.
_USED: Final = f"SELECT count(*) FROM (SELECT 1 {_CURRENT_LEASES} LIMIT ?3)"
# When the first of them ends (the index's first entry in the range).
_FIRST_END: Final = f"SELECT visible_at {_CURRENT_LEASES} ORDER BY visible_at LIMIT 1"

_ROW: Final = "SELECT rate, per, concurrency, tokens, at FROM wf_limits WHERE name = ?"

#: Seconds added to the time a token accrues before a waiter looks again, so that
#: float rounding does not wake it a hair early to find 0.9999 tokens.
_MARGIN: Final = 0.001


def _read(conn: sqlite3.Connection, name: object, now: float) -> tuple[Limit, Bucket] | None:
    """The limit named ``name`` and its bucket at ``now``; None if there is none (no limit).

    A row a hand edit broke (a rate of 0, text where numbers belong) is no limit
    either: the messages go, rather than wait for ever on a limit nobody can read.
    A bucket last touched later than ``now`` (the wall clock went back) counts
    from ``now``, so a step back of the clock does not hold messages back as long.
    """
    if type(name) is not str:
        return None
    row = conn.execute(_ROW, (name,)).fetchone()
    if row is None:
        return None
    rate, per, concurrency, tokens, at = row
    try:
        limit = Limit(name, rate, per, concurrency)
    except (LimitError, TypeError):
        return None
    if rate is not None and not (isinstance(tokens, int | float) and isinstance(at, int | float)):
        tokens, at = float(rate), now  # a bucket nobody can read starts full
    return limit, Bucket(float(tokens or 0.0), min(float(at or 0.0), now))


def define(conn: sqlite3.Connection, limit: Limit, now: float) -> bool:
    """Record ``limit``, replacing the one of that name; True if anything changed.

    A new bucket starts full; a redefined one keeps its tokens (refilled until
    ``now`` by the old rate, capped at the new one). Defining the same limit
    again writes nothing, so the runtime's periodic definitions wake nobody.
    """
    known = _read(conn, limit.name, now)
    if known is not None and known[0] == limit:
        return False
    if limit.rate is None:
        tokens: float | None = None
    elif known is None or known[0].rate is None:
        tokens = float(limit.rate)
    else:
        tokens = min(float(limit.rate), known[1].level(known[0], now))
    conn.execute(
        "INSERT OR REPLACE INTO wf_limits (name, rate, per, concurrency, tokens, at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (limit.name, limit.rate, limit.per, limit.concurrency, tokens, now),
    )
    return True


@attrs.define
class _State:
    """One limit as a claim sees it: its bucket, its free slots, what was taken."""

    limit: Limit
    bucket: Bucket
    now: float
    #: Slots free when the claim began (None: no concurrency cap).
    free: int | None
    #: Messages handed out in this claim.
    taken: int = 0

    def tokens(self) -> float:
        """Tokens left in the bucket (``inf`` without a rate)."""
        return self.bucket.level(self.limit, self.now) - self.taken

    @property
    def allows(self) -> int:
        """How many more messages it may hand out now."""
        allows = _MOST
        if self.limit.rate is not None:
            allows = math.floor(self.tokens() + 1e-9)
        if self.free is not None:
            allows = min(allows, self.free - self.taken)
        return max(0, allows)

    def next_go(self, conn: sqlite3.Connection) -> float:
        """When it may hand out a message again, if no lease of it ends before its time."""
        at = self.now
        tokens = self.tokens()
        if tokens + 1e-9 < 1.0:
            at = self.now + (1.0 - tokens) / self.limit.refill + _MARGIN
        if self.free is not None and self.free - self.taken <= 0:
            row = conn.execute(_FIRST_END, (self.limit.name, self.now)).fetchone()
            if row is not None and isinstance(row[0], int | float):
                at = max(at, row[0])
        return at


#: What "no limit" allows in one claim (more than any claim asks for).
_MOST: Final = 2**31


def _state(conn: sqlite3.Connection, limit: Limit, bucket: Bucket, now: float) -> _State:
    """What ``limit`` allows at ``now``: its bucket, and its leases counted on the index."""
    free = None
    if limit.concurrency is not None:
        used = conn.execute(_USED, (limit.name, now, limit.concurrency)).fetchone()[0]
        free = limit.concurrency - used
    return _State(limit, bucket, now, free)


class Gate:
    """The limited messages of one queue during one claim (or peek): what each limit
    allows, the candidates it may hand out, the tokens taken.

    Made by :meth:`open`, which returns None when the queue has no visible
    limited message (the cost of a claim without limits: one index seek).
    """

    __slots__ = ("_free", "_limited", "_now", "_queue")

    def __init__(self, queue: str, now: float) -> None:
        self._queue = queue
        self._now = now
        #: Names on visible messages that no limit holds (undefined, or unreadable).
        self._free: list[object] = []
        #: The defined limits on visible messages, by name.
        self._limited: dict[str, _State] = {}

    @classmethod
    def open(cls, conn: sqlite3.Connection, queue: str, now: float) -> Gate | None:
        """The gate of ``queue`` now; None if no visible message names a limit.

        (A limit name is text or, hand-edited, a BLOB, which sorts after text: a
        TEXT column keeps no numbers. The rows of a BLOB name are handed out as
        unlimited ones, to be dead-lettered for it.)
        """
        names: list[object] = []
        after: object = ""
        while found := fetch_all(conn, _naming(_NEXT_NAME, after), (queue, after)):
            after = found[0][0]
            names.append(after)
        if not names:
            return None
        gate = cls(queue, now)
        for name in names:
            known = _read(conn, name, now)
            if known is None:
                gate._free.append(name)
            else:
                gate._limited[known[0].name] = _state(conn, *known, now)
        return gate

    @property
    def ready(self) -> bool:
        """Whether some visible limited message may go now."""
        return bool(self._free) or any(s.allows > 0 for s in self._limited.values())

    def held_by(self) -> frozenset[str]:
        """The limits that hold back visible messages now."""
        return frozenset(name for name, s in self._limited.items() if s.allows <= 0)

    def next_go(self, conn: sqlite3.Connection) -> float | None:
        """When the first held limit may hand out a message on its own (a token, a
        lease running out); None if none holds anything."""
        times = [s.next_go(conn) for s in self._limited.values() if s.allows <= 0]
        return min(times) if times else None

    def candidates(self, conn: sqlite3.Connection, rows: list[Any], want: int) -> list[Any]:
        """The first ``want`` of ``rows`` (the unlimited visible ones, in order) and
        the limited ones their limits allow, by priority and age."""
        extra: list[Any] = []
        for name in self._free:
            extra += fetch_all(conn, _naming(_LIMITED, name), (self._queue, name, want))
        for name, state in self._limited.items():
            if state.allows > 0:
                n = min(want, state.allows)
                extra += fetch_all(conn, _naming(_LIMITED, name), (self._queue, name, n))
        if not extra:
            return rows
        merged = sorted([*rows, *extra], key=_order)
        return merged[:want]

    def took(self, rows: Iterable[Any]) -> None:
        """``rows`` were handed out: each takes a token and a slot of its limit."""
        for row in rows:
            state = self._limited.get(row[7])
            if state is not None:
                state.taken += 1

    def settle(self, conn: sqlite3.Connection) -> None:
        """Write back the tokens taken during the claim."""
        for state in self._limited.values():
            if state.taken and state.limit.rate is not None:
                conn.execute(
                    "UPDATE wf_limits SET tokens = ?, at = ? WHERE name = ?",
                    (state.tokens(), self._now, state.limit.name),
                )


def _order(row: Any) -> tuple[int, int]:
    """A claimable row's place: highest priority first, then oldest (a priority that
    is not a whole number sorts as 0, to be dead-lettered in its turn)."""
    priority = row[6]
    return (-priority if type(priority) is int else 0, row[0])


def give_back_tokens(conn: sqlite3.Connection, names: Sequence[str], now: float) -> None:
    """A claim was given back: the tokens its limited messages took return (capped)."""
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    for name, n in counts.items():
        known = _read(conn, name, now)
        if known is not None and known[0].rate is not None:
            limit, bucket = known
            level = min(float(limit.rate or 0), bucket.level(limit, now) + n)
            conn.execute(
                "UPDATE wf_limits SET tokens = ?, at = ? WHERE name = ?", (level, now, name)
            )


def held_counts(conn: sqlite3.Connection, now: float) -> dict[str, int]:
    """Per queue, the visible messages their limits hold back now.

    A limit allows the same messages whichever queue they are in, so in each
    queue those beyond what the limit allows now count as held.
    """
    rows = fetch_all(
        conn,
        "SELECT queue, limit_name, count(*) FROM wf_messages WHERE limit_name > ''"
        " AND done_at IS NULL AND lease_token IS NULL GROUP BY queue, limit_name",
    )
    allows: dict[object, int | None] = {}
    held: dict[str, int] = {}
    for queue, name, count in rows:
        if name not in allows:
            known = _read(conn, name, now)
            allows[name] = None if known is None else _state(conn, *known, now).allows
        allowed = allows[name]
        if allowed is not None:
            held[queue] = held.get(queue, 0) + max(0, count - allowed)
    return held
