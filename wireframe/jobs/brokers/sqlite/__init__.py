"""The SQLite broker: ``sqlite:///path/to/jobs.db``, the embedded, durable default.

One database file holds every queue, lease, result channel, dead letter and
broadcast, so several worker processes on one machine can share it and a
restart loses nothing: queued and leased-but-unfinished messages are still
there (a lease that ran out, by the wall clock, makes its message visible
again), replies not yet taken wait in their channel, completed records stay
until :meth:`SqliteBroker.purge`.

URL
    ``sqlite:///relative/jobs.db`` (three slashes) names a path relative to the
    current directory *at the time the broker is opened*; ``sqlite:////abs/jobs.db``
    (four slashes) an absolute path. The directory must exist; the file is
    created (except by ``open(url, create=False)``, what inspection commands
    use: a mistyped path must not leave an empty database). There is no host.
    ``sqlite:///:memory:`` is **not supported**: a private in-memory database
    could be neither shared by the broker's threads and processes nor survive
    a restart — use ``memory://`` for that.

Options (``?name=value&...``)
    ``lease`` (seconds, default 30) and ``max_deliveries`` (default 5) as on
    every broker; ``poll`` — the longest pause, in seconds, between two looks
    for another process's writes while something waits (default 0.05; it looks
    every 1 ms for 10 ms after any change, then doubles the pause while idle);
    ``busy_timeout`` — how long, in seconds, to wait for another process's write
    lock before :class:`~wireframe.jobs.broker.BrokerUnavailable` (default 10);
    ``synchronous`` — ``normal`` (default: safe against a killed process, a power
    cut may lose the last transactions) or ``full`` (fsync every commit).

Design
    *Threads.* The stdlib ``sqlite3`` module blocks, so nothing touches a
    connection on the trio thread. The broker owns exactly two threads, started
    and joined inside :func:`open`, each owning one connection: a **writer**
    that runs every write transaction (and the cheap ``data_version`` polls) and
    a **reader** for look-ups that never write (peeks, stats, broadcast reads).
    Calls travel on a queue and come back through the trio token; no connection
    is ever shared. (A no-op round trip costs ~30 µs this way, about half of
    ``trio.to_thread.run_sync``, whose cached threads would also outlive the
    broker.) The writer *group-commits*: calls that queued up while it was busy
    run in one ``BEGIN IMMEDIATE`` transaction, each inside its own savepoint,
    so each call still succeeds or fails alone (a ``complete`` that raises
    ``LockLost`` leaves no trace) while many concurrent completions share one
    commit. When another process holds the write lock the writer retries with
    pauses from 0.1 ms to 5 ms (SQLite's own busy handler sleeps whole
    milliseconds), up to ``busy_timeout``.

    *Cancellation.* Like ``trio.to_thread.run_sync``, a call handed to a thread
    runs to its end and the caller is cancelled afterwards — a cancelled
    ``complete`` queued behind other writes still completes — with two
    exceptions: a write that has waited more than 0.1 s for *another process's*
    write lock is dropped as soon as it is cancelled (so a stuck lock cannot
    hold a cancellation for ``busy_timeout``), and a ``consume`` or
    ``receive_replies`` cancelled after it took something gives it back
    (uncounted, in order), so nothing is lost to a timeout.

    *Waiting.* SQLite cannot notify, so a waiter (``consume``,
    ``receive_replies``, a subscription) is woken three ways: at once by a write
    of any broker on the same file in this process that concerns it (a trio
    event); by a watcher task polling ``PRAGMA data_version`` on the writer's
    connection — it changes whenever another connection, in any process,
    commits — only while someone waits; and by a timer at the earliest moment a
    leased or delayed message becomes visible. A wake from another process
    first peeks on the reader and takes the write lock only when there is
    something to take, so idle processes do not fight over the lock.

    *Storage.* A completed message stays in ``wf_messages`` as its completed
    record (``done_at`` set, body dropped) until purge: completing is one row
    update plus the reply, not a move between tables. Replies live in a
    ``WITHOUT ROWID`` table keyed by (channel, seq); dead letters in
    ``wf_dead``; broadcasts in ``wf_broadcasts`` with an ever-growing id, read
    by each subscriber from the id current when it subscribed and deleted after
    :data:`BROADCAST_RETENTION` seconds. Run channels and worker heartbeats
    live in ``wf_channels`` and ``wf_workers`` (see :mod:`.presence`); a
    claim settles the messages of dead run channels instead of leasing them.

    *Malformed rows.* SQLite keeps any value in any column, so a hand edit or
    a damaged file can leave a TEXT body or a negative delivery count behind.
    Each row is checked before it is trusted (:mod:`.rows`): a message
    that is not well formed goes to the dead-letter store with a reason naming
    its seq, column and value (and a dead reply to its channel, if readable), a
    malformed reply reaches its waiter as a dead reply, a malformed broadcast is
    skipped with a logged warning. No bad row makes every read of a queue fail.

    *Schema.* ``wf_schema`` holds the schema version; :data:`MIGRATIONS` moves
    a database forward one version at a time inside one transaction. A file
    written by a newer wireframe is refused with a :class:`BrokerError` naming
    both versions before anything is written to it.

    *Clock.* Leases and delays are wall-clock seconds (:func:`time.time`),
    shared by every process on the machine and meaningful across restarts.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, Final, TypeVar

import attrs
import trio

from wireframe.jobs.broker import (
    BrokerError,
    BrokerUnavailable,
    BrokerURL,
    BrokerURLError,
    DeadLetter,
    Delivery,
    LockLost,
    Message,
    QueueStats,
    Reply,
    WorkerInfo,
    count_workers,
    parse_broker_url,
    seconds_option,
)
from wireframe.jobs.brokers.sqlite import presence
from wireframe.jobs.brokers.sqlite.rows import (
    dead_letter_from_row,
    dead_letter_values,
    described,
    fetch_all,
    message_problems,
    reply_from_row,
)
from wireframe.jobs.brokers.sqlite.schema import MIGRATIONS, SCHEMA_VERSION, DatabaseFile
from wireframe.jobs.brokers.sqlite.threads import ConnectionThread, is_busy
from wireframe.jobs.brokers.sqlite.wakeups import (
    NeighbourKey,
    Signal,
    Wakeups,
    data_version,
    join_neighbours,
    leave_neighbours,
    watch,
)
from wireframe.service.background import background_tasks

__all__ = [
    "BROADCAST_RETENTION",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "SqliteBroker",
    "database_path",
    "open",
    "parse_sqlite_url",
]

T = TypeVar("T")

_log = logging.getLogger(__name__)

# The channel's highest numeric seq + 1 (`seq < ''` holds for numbers only: a
# hand-edited TEXT seq must not make every new reply collide with seq 1).
_INSERT_REPLY: Final = (
    "INSERT INTO wf_replies (channel, seq, message_id, body, dead_reason) VALUES (?1, coalesce("
    "(SELECT seq FROM wf_replies WHERE channel = ?1 AND seq < '' ORDER BY seq DESC LIMIT 1), 0)"
    " + 1, ?2, ?3, ?4)"
)

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

#: Broadcasts older than this (seconds) are deleted; a subscriber that lags
#: further behind misses them.
BROADCAST_RETENTION: Final = 60.0


def _synchronous(text: str) -> str:
    value = text.lower()
    if value not in ("normal", "full"):
        raise BrokerURLError(f"option synchronous={text!r} must be 'normal' or 'full'")
    return value


_SQLITE_OPTIONS: Final[dict[str, tuple[Callable[[str], object], object]]] = {
    "poll": (seconds_option("poll"), 0.05),
    "busy_timeout": (seconds_option("busy_timeout"), 10.0),
    "synchronous": (_synchronous, "normal"),
}


def parse_sqlite_url(url: str) -> BrokerURL:
    """Parse and check a ``sqlite://`` URL (path rules and options: see the module doc)."""
    parsed = parse_broker_url(url, _SQLITE_OPTIONS)
    if parsed.scheme != "sqlite":
        raise BrokerURLError(f"broker URL {url!r} is not a sqlite:// URL")
    if parsed.host or parsed.port is not None or parsed.username or parsed.password:
        raise BrokerURLError(
            f"broker URL {url!r}: a sqlite URL has no host; write sqlite:///relative/path.db "
            "(three slashes) or sqlite:////absolute/path.db (four slashes)"
        )
    path = parsed.path[1:] if parsed.path.startswith("/") else parsed.path
    if not path or path.endswith("/"):
        raise BrokerURLError(
            f"broker URL {url!r} names no database file; write sqlite:///relative/path.db "
            "or sqlite:////absolute/path.db"
        )
    if path == ":memory:":
        raise BrokerURLError(
            f"broker URL {url!r}: in-memory SQLite is not supported (the broker's threads and "
            "worker processes could not share it and it would not survive a restart); "
            "use memory:// for an in-process broker or a file path"
        )
    return parsed


def database_path(url: BrokerURL | str) -> Path:
    """The absolute path of the database file a sqlite URL names (relative to the cwd)."""
    parsed = parse_sqlite_url(url) if isinstance(url, str) else url
    return Path(os.path.abspath(parsed.path[1:]))


# --------------------------------------------------------------------------------
# SQL, run on the connection threads


def _lease_seq(delivery: Delivery) -> int | None:
    head, sep, _ = delivery.lease_token.partition(".")
    if not sep or not head.isdigit():
        return None
    return int(head)


def _lock_lost(
    conn: sqlite3.Connection, delivery: Delivery, seq: int | None, now: float
) -> LockLost:
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
    message_id, body, reply_to = seq_row
    conn.execute(
        "INSERT INTO wf_dead (queue, id, body, reply_to, reason, deliveries, died_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (queue, message_id, body, reply_to, reason, deliveries, now),
    )
    if reply_to:
        conn.execute(_INSERT_REPLY, (reply_to, message_id, None, reason))


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


@attrs.frozen
class _Claim:
    """What one claim transaction of ``consume`` did."""

    deliveries: list[Delivery]
    dead_channels: frozenset[str]
    next_visible: float | None  # when nothing was claimed: earliest visible_at left


@attrs.frozen
class _Peek:
    """A read-only look at a queue: is something visible, or when will it be."""

    ready: bool
    next_visible: float | None


# --------------------------------------------------------------------------------
# The broker


class SqliteBroker:
    """A :class:`~wireframe.jobs.broker.Broker` in one SQLite file (see the module doc).

    Make one with :func:`open` (or ``open_broker("sqlite:///jobs.db")``); it is
    usable only inside that ``async with``.
    """

    def __init__(self, url: BrokerURL, path: Path, *, create: bool = True) -> None:
        self.url = url
        #: The absolute path of the database file.
        self.path = path
        self._lease = url.lease
        self._max_deliveries = url.max_deliveries
        self._max_poll = float(url.options["poll"])  # type: ignore[arg-type]
        self._busy_timeout = float(url.options["busy_timeout"])  # type: ignore[arg-type]
        self._file = DatabaseFile(
            path, url, create, self._busy_timeout, str(url.options["synchronous"])
        )
        self._wake = Wakeups()
        self._neighbours: list[Wakeups] = [self._wake]
        self._neighbour_key: NeighbourKey | None = None
        self._writer: ConnectionThread | None = None
        self._reader: ConnectionThread | None = None
        self._watch_scope = trio.CancelScope()
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------

    def _notify(self, key: tuple[str, str]) -> None:
        """Wake the waiters for ``key`` of this broker and its neighbours on the file."""
        for wake in self._neighbours:
            wake.notify(key)

    async def _start(self) -> None:
        """Start the writer (which checks and migrates the file), then the reader."""
        token = trio.lowlevel.current_trio_token()
        self._writer = ConnectionThread(
            "wireframe-sqlite-writer",
            lambda: self._file.connect(writer=True),
            writer=True,
            busy_timeout=self._busy_timeout,
            token=token,
        )
        await self._writer.start()
        self._reader = ConnectionThread(
            "wireframe-sqlite-reader",
            lambda: self._file.connect(writer=False),
            writer=False,
            busy_timeout=self._busy_timeout,
            token=token,
        )
        try:
            await self._reader.start()
        except BaseException:
            await self._writer.stop()
            raise
        self._neighbour_key = (str(self.path), token)
        self._neighbours = join_neighbours(self._neighbour_key, self._wake)

    def clock(self) -> float:
        """Wall-clock seconds (:func:`time.time`): shared by processes and restarts."""
        return time.time()

    async def ping(self) -> None:
        """Return when the database answers a query."""
        if self._closed:
            raise BrokerUnavailable(f"SQLite broker {self.url} is closed")
        await self._read(lambda conn: conn.execute("SELECT 1").fetchone())

    async def aclose(self) -> None:
        """Stop the watcher, finish queued calls, close both connections, join both threads."""
        if self._closed:
            return
        self._closed = True
        self._watch_scope.cancel()
        self._wake.notify_all()
        if self._neighbour_key is not None:
            leave_neighbours(self._neighbour_key, self._wake)
            self._neighbours = [self._wake]
        with trio.CancelScope(shield=True):
            for thread in (self._reader, self._writer):
                if thread is not None:
                    await thread.stop()

    # -- calling the threads -------------------------------------------------------------

    def _translate(self, exc: sqlite3.Error) -> BrokerError:
        if isinstance(exc, sqlite3.OperationalError) and is_busy(exc):
            return BrokerUnavailable(
                f"SQLite database {str(self.path)!r} stayed locked by another connection "
                f"for more than busy_timeout={self._busy_timeout} s"
            )
        return BrokerError(f"SQLite error on {str(self.path)!r}: {exc}")

    def _thread(self, thread: ConnectionThread | None) -> ConnectionThread:
        if thread is None or self._closed:
            raise BrokerError(f"SQLite broker {self.url} is closed (use it inside open())")
        return thread

    async def _write_raw(self, fn: Callable[[sqlite3.Connection], T]) -> tuple[T, bool]:
        try:
            return await self._thread(self._writer).run(fn)
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return (await self._write_raw(fn))[0]

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return (await self._thread(self._reader).run(fn))[0]
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc

    async def _wait(self, signal: Signal, until: float | None) -> None:
        """Sleep until ``signal`` fires, or the wall clock reaches ``until``."""
        await self._wake.wait(signal, math.inf if until is None else until - time.time())

    async def _watch(self) -> None:
        """The data_version watcher (:func:`.wakeups.watch`) on the writer's connection,
        until the broker closes."""

        async def poll() -> int | None:
            try:
                return (await self._thread(self._writer).run(data_version, readonly=True))[0]
            except (sqlite3.Error, BrokerError):
                return None  # closing, or a passing lock: everyone looks again

        with self._watch_scope:
            await watch(self._wake, poll, self._max_poll)

    # -- queues ---------------------------------------------------------------------

    async def declare_queue(self, queue: str) -> None:
        """Create ``queue`` if it does not exist (idempotent)."""
        now = time.time()
        await self._write(
            lambda conn: conn.execute(
                "INSERT OR IGNORE INTO wf_queues (name, created_at) VALUES (?, ?)", (queue, now)
            )
        )

    async def delete_queue(self, queue: str) -> None:
        """Delete ``queue``, its messages, completed records and dead letters."""

        def delete(conn: sqlite3.Connection) -> None:
            for table, column in (
                ("wf_messages", "queue"),
                ("wf_dead", "queue"),
                ("wf_queues", "name"),
            ):
                conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (queue,))

        await self._write(delete)

    async def publish(self, queue: str, messages: Sequence[Message], *, delay: float = 0.0) -> None:
        """Append ``messages`` to ``queue`` in one transaction, visible after ``delay``."""
        if not delay >= 0.0:
            raise ValueError(f"publish to {queue!r}: delay={delay!r} must be >= 0")
        batch = list(messages)

        def insert(conn: sqlite3.Connection) -> None:
            now = time.time()
            conn.execute(
                "INSERT OR IGNORE INTO wf_queues (name, created_at) VALUES (?, ?)", (queue, now)
            )
            visible_at = now + delay
            conn.executemany(
                "INSERT INTO wf_messages (queue, id, body, reply_to, visible_at, deliveries)"
                " VALUES (?, ?, ?, ?, ?, 0)",
                [(queue, m.id, bytes(m.body), m.reply_to, visible_at) for m in batch],
            )

        await self._write(insert)
        if batch:
            self._notify(("q", queue))

    def _claim(self, queue: str, limit: int) -> Callable[[sqlite3.Connection], _Claim]:
        lease, max_deliveries = self._lease, self._max_deliveries

        def claim(conn: sqlite3.Connection) -> _Claim:
            now = time.time()
            expires = now + lease
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
                leased: list[tuple[str, float, int]] = []
                dead: list[int] = []
                for seq, message_id, body, reply_to, deliveries, visible_at in rows:
                    reason = message_problems(
                        seq, message_id, body, reply_to, deliveries, visible_at
                    )
                    if reason is None and deliveries >= max_deliveries:
                        reason = (
                            f"delivered {deliveries} times without completing "
                            f"(max_deliveries={max_deliveries})"
                        )
                    if reason is not None:
                        letter = dead_letter_values(
                            seq, "wf_messages", message_id, body, reply_to, deliveries
                        )
                        _post_dead(conn, queue, letter[:3], reason, letter[3], now)
                        dead.append(seq)
                        if letter[2]:
                            dead_channels.add(letter[2])
                        continue
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
                if not dead:
                    break
                conn.executemany("DELETE FROM wf_messages WHERE seq = ?", [(s,) for s in dead])
            next_visible = None
            if not out:
                next_visible = conn.execute(_EARLIEST, (queue,)).fetchone()[0]
            return _Claim(out, frozenset(dead_channels), next_visible)

        return claim

    @staticmethod
    def _peek_queue(queue: str) -> Callable[[sqlite3.Connection], _Peek]:
        def peek(conn: sqlite3.Connection) -> _Peek:
            earliest = conn.execute(_EARLIEST, (queue,)).fetchone()[0]
            return _Peek(earliest is not None and earliest <= time.time(), earliest)

        return peek

    async def _give_back(self, deliveries: list[Delivery]) -> None:
        """Undo a claim whose caller was cancelled: visible at once, not counted."""
        rows = [(seq, d.lease_token) for d in deliveries if (seq := _lease_seq(d)) is not None]

        def release(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE wf_messages SET lease_token = NULL, visible_at = 0,"
                " deliveries = max(deliveries - 1, 0) WHERE seq = ? AND lease_token = ?",
                rows,
            )

        with trio.CancelScope(shield=True):
            await self._write(release)
        if deliveries:
            self._notify(("q", deliveries[0].queue))

    async def consume(self, queue: str, limit: int) -> list[Delivery]:
        """Lease up to ``limit`` visible messages, oldest first; wait for one if none."""
        if limit < 1:
            raise ValueError(f"consume from {queue!r}: limit={limit!r} must be at least 1")
        claim = self._claim(queue, limit)
        direct = True
        while True:
            with self._wake.signal(("q", queue)) as signal:
                if direct:
                    result, cancelled = await self._write_raw(claim)
                    for channel in result.dead_channels:
                        self._notify(("c", channel))
                    if result.deliveries:
                        if cancelled:
                            await self._give_back(result.deliveries)
                            await trio.lowlevel.checkpoint()
                        return result.deliveries
                    next_visible = result.next_visible
                else:
                    peek = await self._read(self._peek_queue(queue))
                    if peek.ready:
                        direct = True
                        continue
                    next_visible = peek.next_visible
                await self._wait(signal, next_visible)
            # a local write or a lease/delay timer: claim at once; a change seen in
            # another process: peek first, without taking the write lock.
            direct = signal.local or not signal.event.is_set()

    async def complete(self, delivery: Delivery, reply: bytes | None) -> None:
        """Remove the delivery and post its reply in one transaction (LockLost if stale)."""
        reply_to = delivery.message.reply_to
        post = reply is not None and bool(reply_to)

        def finish(conn: sqlite3.Connection) -> None:
            now = time.time()
            _end_lease(conn, delivery, now, done=True)
            conn.execute("UPDATE wf_queues SET done = done + 1 WHERE name = ?", (delivery.queue,))
            if post and not presence.dead_channels(conn, (reply_to,), now):
                conn.execute(_INSERT_REPLY, (reply_to, delivery.message.id, reply, None))

        await self._write(finish)
        if post:
            self._notify(("c", reply_to))

    async def abandon(
        self, delivery: Delivery, *, delay: float = 0.0, body: bytes | None = None
    ) -> None:
        """Give the delivery back, visible after ``delay``; a new ``body`` resets its count."""
        if not delay >= 0.0:
            raise ValueError(f"abandon {delivery.message.id!r}: delay={delay!r} must be >= 0")
        seq = _lease_seq(delivery)

        def give_back(conn: sqlite3.Connection) -> None:
            now = time.time()
            visible_at = now + delay
            if body is None:
                cur = conn.execute(
                    "UPDATE wf_messages SET lease_token = NULL, visible_at = ?"
                    " WHERE seq = ? AND lease_token = ? AND visible_at > ?",
                    (visible_at, seq, delivery.lease_token, now),
                )
            else:
                cur = conn.execute(
                    "UPDATE wf_messages SET lease_token = NULL, visible_at = ?, body = ?,"
                    " deliveries = 0 WHERE seq = ? AND lease_token = ? AND visible_at > ?",
                    (visible_at, bytes(body), seq, delivery.lease_token, now),
                )
            if cur.rowcount != 1:
                raise _lock_lost(conn, delivery, seq, now)

        await self._write(give_back)
        self._notify(("q", delivery.queue))

    async def extend(self, delivery: Delivery) -> Delivery:
        """Renew the lease for ``lease`` seconds from now (same token)."""
        seq = _lease_seq(delivery)
        lease = self._lease

        def renew(conn: sqlite3.Connection) -> float:
            now = time.time()
            expires = now + lease
            cur = conn.execute(
                "UPDATE wf_messages SET visible_at = ?"
                " WHERE seq = ? AND lease_token = ? AND visible_at > ?",
                (expires, seq, delivery.lease_token, now),
            )
            if cur.rowcount != 1:
                raise _lock_lost(conn, delivery, seq, now)
            return expires

        expires = await self._write(renew)
        return attrs.evolve(delivery, lease_expires=expires)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move the delivery to the dead-letter store and post a dead reply."""
        message = delivery.message

        def bury(conn: sqlite3.Connection) -> None:
            now = time.time()
            _end_lease(conn, delivery, now, done=False)
            _post_dead(
                conn,
                delivery.queue,
                (message.id, bytes(message.body), message.reply_to),
                reason,
                delivery.deliveries,
                now,
            )

        await self._write(bury)
        if message.reply_to:
            self._notify(("c", message.reply_to))

    # -- result channels -----------------------------------------------------------------

    async def receive_replies(self, channel: str, limit: int) -> list[Reply]:
        """Take up to ``limit`` replies from ``channel`` in arrival order; wait if none."""
        if limit < 1:
            raise ValueError(f"receive_replies from {channel!r}: limit={limit!r} must be >= 1")

        def take(conn: sqlite3.Connection) -> list[Reply]:
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

        def peek(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT 1 FROM wf_replies WHERE channel = ? LIMIT 1", (channel,)
            ).fetchone()
            return row is not None

        direct = True
        while True:
            with self._wake.signal(("c", channel)) as signal:
                if direct or await self._read(peek):
                    replies, cancelled = await self._write_raw(take)
                    if replies:
                        if cancelled:
                            await self._put_back(channel, replies)
                            await trio.lowlevel.checkpoint()
                        return replies
                await self._wait(signal, None)
            direct = signal.local

    async def _put_back(self, channel: str, replies: list[Reply]) -> None:
        """Undo a take whose caller was cancelled: same replies, same order, first."""

        def restore(conn: sqlite3.Connection) -> None:
            # below the lowest numeric seq left (replies posted since, or not taken)
            row = conn.execute(
                "SELECT seq FROM wf_replies WHERE channel = ? AND seq < '' ORDER BY seq LIMIT 1",
                (channel,),
            ).fetchone()
            start = (len(replies) + 1 if row is None else row[0]) - len(replies)
            conn.executemany(
                "INSERT INTO wf_replies (channel, seq, message_id, body, dead_reason)"
                " VALUES (?, ?, ?, ?, ?)",
                [
                    (channel, start + i, r.message_id, r.body, r.dead_reason)
                    for i, r in enumerate(replies)
                ],
            )

        with trio.CancelScope(shield=True):
            await self._write(restore)
        self._notify(("c", channel))

    async def delete_channel(self, channel: str) -> None:
        """Drop ``channel``, any replies left in it and its record."""
        await self._write(lambda conn: presence.forget_channel(conn, channel))

    async def open_channel(self, channel: str, ttl: float) -> None:
        """Record ``channel`` as live for ``ttl`` seconds."""
        await self._write(lambda conn: presence.open_channel(conn, channel, ttl, time.time()))

    async def keep_channel(self, channel: str, ttl: float) -> None:
        """Keep ``channel`` live for ``ttl`` more seconds; :class:`ChannelLost` if it is not."""
        where = f"SQLite database {str(self.path)!r}"
        await self._write(
            lambda conn: presence.keep_channel(conn, channel, ttl, time.time(), where)
        )

    async def close_channel(self, channel: str) -> None:
        """Drop ``channel``'s replies and make it dead from now on."""
        await self._write(lambda conn: presence.close_channel(conn, channel, time.time()))

    # -- workers ---------------------------------------------------------------------

    async def heartbeat(self, worker: WorkerInfo, ttl: float) -> None:
        """Record ``worker`` as live for ``ttl`` seconds (``0``: remove it)."""
        await self._write(lambda conn: presence.heartbeat(conn, worker, ttl, time.time()))

    async def workers(self, queue: str | None = None) -> list[WorkerInfo]:
        """The live workers (of ``queue``, or all), sorted by queue and id."""
        return await self._read(lambda conn: presence.live_workers(conn, queue, time.time()))

    # -- broadcast ---------------------------------------------------------------------

    async def broadcast(self, topic: str, body: bytes) -> None:
        """Send ``body`` to every current subscriber of ``topic``, in this and other processes."""
        data = bytes(body)

        def send(conn: sqlite3.Connection) -> None:
            now = time.time()
            conn.execute(
                "INSERT INTO wf_broadcasts (topic, body, sent_at) VALUES (?, ?, ?)",
                (topic, data, now),
            )
            conn.execute(
                "DELETE FROM wf_broadcasts WHERE sent_at < ?"
                " OR typeof(sent_at) NOT IN ('integer', 'real')",  # hand-edited: never expires
                (now - BROADCAST_RETENTION,),
            )

        await self._write(send)
        self._notify(("b", topic))

    def subscribe(self, topic: str) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """Subscribe to ``topic``: everything broadcast after entering is received;
        the iteration ends when this broker closes."""
        return self._subscribe(topic)

    @asynccontextmanager
    async def _subscribe(self, topic: str) -> AsyncIterator[AsyncIterator[bytes]]:
        start = await self._read(
            lambda conn: int(
                conn.execute("SELECT coalesce(max(id), 0) FROM wf_broadcasts").fetchone()[0]
            )
        )
        yield _Subscription(self, topic, start)

    # -- inspection and housekeeping ---------------------------------------------------

    async def stats(self) -> list[QueueStats]:
        """Counts per known queue, sorted by name (an expired lease counts as queued)."""

        def count(conn: sqlite3.Connection) -> list[QueueStats]:
            now = time.time()
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
                QueueStats(name, queued, running, done, dead)
                for name, queued, running, done, dead in rows
            ]

        return count_workers(await self._read(count), await self.workers())

    async def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters, of ``queue`` or of every queue."""

        def fetch(conn: sqlite3.Connection) -> list[DeadLetter]:
            where, args = ("WHERE queue = ?", (queue,)) if queue is not None else ("", ())
            rows = fetch_all(
                conn,
                "SELECT seq, queue, id, body, reply_to, reason, deliveries, died_at FROM wf_dead"
                f" {where} ORDER BY seq LIMIT ?",
                (*args, limit),
            )
            return [dead_letter_from_row(*row) for row in rows]

        return await self._read(fetch)

    async def requeue_dead(self, queue: str | None = None) -> int:
        """Put dead letters back on their queues, delivery count reset; count them."""

        def requeue(conn: sqlite3.Connection) -> list[str]:
            now = time.time()
            where, args = ("WHERE queue = ?", (queue,)) if queue is not None else ("", ())
            rows = fetch_all(
                conn,
                "SELECT seq, queue, id, body, reply_to, reason, deliveries, died_at"
                f" FROM wf_dead {where} ORDER BY seq",
                args,
            )
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

        queues = await self._write(requeue)
        for name in set(queues):
            self._notify(("q", name))
        return len(queues)

    async def purge(self, queue: str | None = None) -> int:
        """Delete completed records and dead letters (of ``queue`` or all); count them."""

        def delete(conn: sqlite3.Connection) -> int:
            if queue is None:
                done = conn.execute("DELETE FROM wf_messages WHERE done_at IS NOT NULL").rowcount
                dead = conn.execute("DELETE FROM wf_dead").rowcount
                conn.execute("UPDATE wf_queues SET done = 0")
                done += presence.purge_dead_channels(conn, time.time())
            else:
                done = conn.execute(
                    "DELETE FROM wf_messages WHERE queue = ? AND done_at IS NOT NULL", (queue,)
                ).rowcount
                dead = conn.execute("DELETE FROM wf_dead WHERE queue = ?", (queue,)).rowcount
                conn.execute("UPDATE wf_queues SET done = 0 WHERE name = ?", (queue,))
            return int(done + dead)

        return await self._write(delete)


@attrs.frozen
class _Broadcasts:
    """What one read of a topic found: the last id read, the bodies, and why any
    row was skipped."""

    last_id: int
    bodies: list[bytes]
    skipped: list[str]


def _broadcasts_after(topic: str, after: int) -> Callable[[sqlite3.Connection], _Broadcasts]:
    def fetch(conn: sqlite3.Connection) -> _Broadcasts:
        rows = fetch_all(
            conn,
            "SELECT id, body FROM wf_broadcasts WHERE topic = ? AND id > ? ORDER BY id LIMIT 100",
            (topic, after),
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
        return _Broadcasts(rows[-1][0] if rows else after, bodies, skipped)

    return fetch


class _Subscription:
    """The async iterator of one subscription: bodies broadcast after it began,
    ending when the broker closes."""

    def __init__(self, broker: SqliteBroker, topic: str, after: int) -> None:
        self._broker = broker
        self._topic = topic
        self._after = after
        self._pending: list[bytes] = []

    def __aiter__(self) -> _Subscription:
        return self

    async def __anext__(self) -> bytes:
        broker, topic = self._broker, self._topic
        while not self._pending:
            if broker._closed:
                raise StopAsyncIteration  # the iteration ends when the broker closes
            with broker._wake.signal(("b", topic)) as signal:
                try:
                    found = await broker._read(_broadcasts_after(topic, self._after))
                except BrokerError:
                    if broker._closed:
                        raise StopAsyncIteration from None
                    raise
                for reason in found.skipped:
                    _log.warning("SQLite broker %s: %s", broker.url, reason)
                if found.last_id != self._after:
                    self._after = found.last_id
                    self._pending = found.bodies
                    continue  # look again at once (the loop ends if something was found)
                await broker._wait(signal, None)
        await trio.lowlevel.checkpoint()
        return self._pending.pop(0)


def open(url: str, *, create: bool = True) -> AbstractAsyncContextManager[SqliteBroker]:
    """Open the SQLite broker a ``sqlite://`` URL names; use as ``async with``.

    The URL is checked at once (:class:`BrokerURLError`); the file is opened,
    checked and migrated on entry; the broker's threads are joined on exit.
    With ``create=False`` (inspection: ``wireframe jobs ...``) a missing file,
    or one without the broker's tables, is a :class:`BrokerError` and nothing
    is created: a mistyped path must not leave an empty database behind.
    """
    parsed = parse_sqlite_url(url)
    return _open(SqliteBroker(parsed, database_path(parsed), create=create))


@asynccontextmanager
async def _open(broker: SqliteBroker) -> AsyncIterator[SqliteBroker]:
    await broker._start()
    # the block's exception leaves bare, not in the watcher nursery's group
    async with background_tasks() as nursery:
        nursery.start_soon(broker._watch)
        try:
            yield broker
        finally:
            await broker.aclose()  # stops the watcher too, so the nursery can end
