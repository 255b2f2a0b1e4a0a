"""The SQLite broker's orchestration store: instances, histories and inboxes in the same file.

Three tables (schema version 5): ``wf_instances`` (one row per instance, with
its lease), ``wf_history`` (the append-only events, by instance and sequence
number) and ``wf_inbox`` (events not applied yet, each visible from a time).
An activity's reply is not copied anywhere: the job's completion posts it to
the reply channel named after the instance (``wf_replies``, in the same
transaction as the completion, as for any job), and a turn reads the
instance's inbox rows *and* those replies, and its commit deletes both — so a
completion lands in the inbox atomically, and is consumed atomically with the
turn that applied it.

Taking work reads only what is due and not leased, and at most what it can
take: instances with activity replies first (reply rows in the range of inbox
channels, so instances in flight finish before new ones start), then visible
inbox rows by ``(visible_at, instance_id)``, each joined to its row by key;
finished instances are never scanned, and a backlog of thousands of pending
starts costs a take nothing. A commit runs in one write transaction (the
writer thread's group commit) fenced on the lease token and its expiry
(``TurnLost`` and a rollback of that turn's savepoint otherwise).
"""

from __future__ import annotations

import math
import sqlite3
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

import attrs

from wireframe.durable.codec import (
    EventCodecError,
    decode_event,
    decode_value,
    encode_event,
    encode_value,
)
from wireframe.durable.history import (
    Event,
)
from wireframe.durable.store import (
    INBOX_PREFIX,
    KEPT_ON_RESTART,
    Commit,
    Instance,
    InstanceExists,
    Status,
    TurnLost,
    UnknownInstance,
    WorkItem,
    child_exists,
    reply_event,
)
from wireframe.jobs.broker import Message, Reply
from wireframe.jobs.brokers.sqlite import queues

if TYPE_CHECKING:
    from wireframe.jobs.brokers.sqlite.wakeups import Signal, Wakeups

T = TypeVar("T")

__all__ = ["MIGRATION", "SqliteOrchestrationStore"]

#: The schema migration that adds orchestrations (version 5).
MIGRATION: Final = (
    """CREATE TABLE wf_instances (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        status TEXT NOT NULL,
        input BLOB,
        output BLOB,
        error TEXT,
        custom_status BLOB,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        parent_id TEXT,
        version TEXT,
        generation INTEGER NOT NULL DEFAULT 0,
        revision INTEGER NOT NULL DEFAULT 0,
        lease_token TEXT,
        lease_expires REAL NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX wf_instances_updated ON wf_instances (status, updated_at)",
    "CREATE INDEX wf_instances_parent ON wf_instances (parent_id) WHERE parent_id IS NOT NULL",
    """CREATE TABLE wf_history (
        instance_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        event BLOB NOT NULL,
        PRIMARY KEY (instance_id, seq)
    ) WITHOUT ROWID""",
    """CREATE TABLE wf_inbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        instance_id TEXT NOT NULL,
        visible_at REAL NOT NULL,
        event BLOB NOT NULL
    )""",
    "CREATE INDEX wf_inbox_due ON wf_inbox (visible_at, instance_id)",
    "CREATE INDEX wf_inbox_instance ON wf_inbox (instance_id, seq)",
)

_INBOX_END: Final = INBOX_PREFIX[:-1] + chr(ord(INBOX_PREFIX[-1]) + 1)
_COLUMNS: Final = (
    "id, name, status, input, output, error, custom_status, created_at, updated_at,"
    " parent_id, version, generation, revision"
)


def _instance(row: Any) -> Instance:
    iid = row[0]
    return Instance(
        iid,
        row[1],
        Status(row[2]),
        decode_value(row[3], f"input of {iid!r}"),
        decode_value(row[4], f"output of {iid!r}"),
        row[5],
        decode_value(row[6], f"custom status of {iid!r}"),
        row[7],
        row[8],
        row[9],
        row[10],
        row[11],
        row[12],
    )


def _get(conn: sqlite3.Connection, iid: str) -> Instance | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM wf_instances WHERE id = ?", (iid,)).fetchone()
    return None if row is None else _instance(row)


def _insert(conn: sqlite3.Connection, inst: Instance, now: float) -> None:
    conn.execute(
        f"INSERT INTO wf_instances ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            inst.id, inst.name, inst.status.value, encode_value(inst.input),
            encode_value(inst.output), inst.error, encode_value(inst.custom_status), now, now,
            inst.parent_id, inst.version, inst.generation, inst.revision,
        ),
    )  # fmt: skip


def _put(conn: sqlite3.Connection, iid: str, event: Event, visible_at: float) -> None:
    conn.execute(
        "INSERT INTO wf_inbox (instance_id, visible_at, event) VALUES (?, ?, ?)",
        (iid, visible_at, encode_event(event)),
    )


def _drop(conn: sqlite3.Connection, iid: str) -> None:
    for table, column in (("wf_history", "instance_id"), ("wf_inbox", "instance_id")):
        conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (iid,))
    conn.execute("DELETE FROM wf_replies WHERE channel = ?", (INBOX_PREFIX + iid,))
    conn.execute("DELETE FROM wf_instances WHERE id = ?", (iid,))


def create(
    conn: sqlite3.Connection,
    inst: Instance,
    first: Event,
    visible_at: float,
    replace: bool,
    now: float,
) -> None:
    """Insert an instance and its first inbox event (see ``create_instance``)."""
    known = _get(conn, inst.id)
    if known is not None:
        if not (replace and known.status.finished):
            raise InstanceExists(f"an instance with id {inst.id!r} exists ({known.status.value})")
        _drop(conn, inst.id)  # a replacement goes on from the old run (see the protocol)
        inst = attrs.evolve(inst, revision=known.revision + 1, generation=known.generation + 1)
    _insert(conn, inst, now)
    _put(conn, inst.id, first, visible_at)


@attrs.frozen
class Taken:
    """What ``take`` leased, or when to look again."""

    items: list[WorkItem]
    next_due: float | None


#: Instances not leased with activity replies waiting: their inbox channels, in order.
#: (CROSS JOIN keeps the replies the outer loop: the instances table is never scanned.)
_REPLIED: Final = (
    "SELECT DISTINCT r.channel FROM wf_replies r CROSS JOIN wf_instances i"
    " ON i.id = substr(r.channel, ?1) WHERE r.channel >= ?2 AND r.channel < ?3"
    " AND i.lease_expires <= ?4 LIMIT ?5"
)
#: Instances not leased with visible inbox events, soonest visible first (one row an event).
_VISIBLE: Final = (
    "SELECT b.instance_id FROM wf_inbox b CROSS JOIN wf_instances i ON i.id = b.instance_id"
    " WHERE b.visible_at <= ?1 AND i.lease_expires <= ?1 ORDER BY b.visible_at LIMIT ?2"
)
#: When the soonest lease (or hold) of an instance with due work ends.
_LEASED_DUE: Final = (
    "SELECT min(lease_expires) FROM wf_instances WHERE lease_expires > ?1 AND id IN"
    " (SELECT instance_id FROM wf_inbox WHERE visible_at <= ?1"
    " UNION SELECT substr(channel, ?2) FROM wf_replies WHERE channel >= ?3 AND channel < ?4)"
)


def take(conn: sqlite3.Connection, limit: int, lease: float, now: float) -> Taken:
    """Lease up to ``limit`` instances with due inbox events or activity replies.

    Reads only what is due and not leased, at most what it can take: instances
    with activity replies first (those in flight finish before new ones start),
    then by when their inbox events became visible. An instance it looks at and
    cannot take (finished, or only a gone run's replies) loses what made it due,
    so looking again makes progress.
    """
    start = len(INBOX_PREFIX) + 1
    items: list[WorkItem] = []
    looked: set[str] = set()
    while len(items) < limit:
        want = limit - len(items)
        due = [
            channel[start - 1 :]
            for (channel,) in conn.execute(
                _REPLIED, (start, INBOX_PREFIX, _INBOX_END, now, want)
            ).fetchall()
        ]
        if len(due) < want:
            due += [iid for (iid,) in conn.execute(_VISIBLE, (now, 4 * want)).fetchall()]
        fresh = [iid for iid in dict.fromkeys(due) if iid not in looked]
        if not fresh:
            break
        for iid in fresh:
            looked.add(iid)
            item = _take_one(conn, iid, lease, now)
            if item is not None:
                items.append(item)
                if len(items) == limit:
                    break
    next_due: float | None = None
    if not items:
        (leased,) = conn.execute(_LEASED_DUE, (now, start, INBOX_PREFIX, _INBOX_END)).fetchone()
        (soonest,) = conn.execute(
            "SELECT min(visible_at) FROM wf_inbox WHERE visible_at > ?", (now,)
        ).fetchone()
        times = [t for t in (leased, soonest) if t is not None]
        next_due = min(times) if times else None
    return Taken(items, next_due)


def _take_one(conn: sqlite3.Connection, iid: str, lease: float, now: float) -> WorkItem | None:
    """Lease instance ``iid`` (due, not leased) for a turn; None when it has no turn to take."""
    row = conn.execute(f"SELECT {_COLUMNS} FROM wf_instances WHERE id = ?", (iid,)).fetchone()
    if row is None:
        return None
    if Status(row[2]).finished:  # nothing more happens to it: drop what came
        _clear_inbox(conn, iid)
        return None
    try:
        inst = _instance(row)
    except EventCodecError as exc:  # a damaged value in the row: fail it by name
        inst, broken = Instance(iid, str(row[1]), Status.RUNNING), str(exc)
        token = uuid.uuid4().hex
        conn.execute(
            "UPDATE wf_instances SET lease_token = ?, lease_expires = ? WHERE id = ?",
            (token, now + lease, iid),
        )
        return WorkItem(inst, [], [], token, ((), None), broken=broken)
    item = _lease(conn, inst, lease, now)
    if not item.inbox and item.broken is None:  # only a gone run's replies: no turn
        _, last_reply = item.taken
        conn.execute(
            "UPDATE wf_instances SET lease_token = NULL, lease_expires = 0 WHERE id = ?",
            (iid,),
        )
        conn.execute(
            "DELETE FROM wf_replies WHERE channel = ? AND seq <= ?",
            (INBOX_PREFIX + iid, last_reply),
        )
        return None
    return item


def _lease(conn: sqlite3.Connection, inst: Instance, lease: float, now: float) -> WorkItem:
    token = uuid.uuid4().hex
    conn.execute(
        "UPDATE wf_instances SET lease_token = ?, lease_expires = ? WHERE id = ?",
        (token, now + lease, inst.id),
    )
    try:
        return _read_work(conn, inst, token, now)
    except EventCodecError as exc:  # the worker fails it, saying why
        return WorkItem(inst, [], [], token, ((), None), broken=str(exc))


def _read_work(conn: sqlite3.Connection, inst: Instance, token: str, now: float) -> WorkItem:
    history = [
        decode_event(data, f"history event {seq} of {inst.id!r}")
        for seq, data in conn.execute(
            "SELECT seq, event FROM wf_history WHERE instance_id = ? ORDER BY seq", (inst.id,)
        )
    ]
    inbox: list[Event] = []
    inbox_seqs = []
    for seq, data in conn.execute(
        "SELECT seq, event FROM wf_inbox WHERE instance_id = ? AND visible_at <= ? ORDER BY"
        " visible_at, seq",
        (inst.id, now),
    ):
        inbox.append(decode_event(data, f"inbox event {seq} of {inst.id!r}"))
        inbox_seqs.append(seq)
    channel = INBOX_PREFIX + inst.id
    last_reply = None
    for seq, message_id, body, dead in conn.execute(
        "SELECT seq, message_id, body, dead_reason FROM wf_replies WHERE channel = ? ORDER BY seq",
        (channel,),
    ):
        last_reply = seq
        event = reply_event(inst.id, inst.generation, Reply(message_id, body, dead))
        if event is not None:
            inbox.append(event)
    return WorkItem(inst, history, inbox, token, (tuple(inbox_seqs), last_reply))


def _check_lease(conn: sqlite3.Connection, item: WorkItem, now: float, what: str) -> int:
    """The instance's generation if ``item``'s turn still holds its lease; else ``TurnLost``."""
    row = conn.execute(
        "SELECT generation, lease_token, lease_expires FROM wf_instances WHERE id = ?",
        (item.instance.id,),
    ).fetchone()
    if row is None or row[1] != item.lease_token or row[2] <= now:
        raise TurnLost(item.instance.id, what)
    return int(row[0])


def commit_turn(conn: sqlite3.Connection, item: WorkItem, c: Commit, now: float) -> list[str]:
    """Apply a turn (see ``OrchestrationStore.commit``); the queues it published to."""
    generation = _check_lease(conn, item, now, "the commit")
    iid = item.instance.id
    inbox_seqs, last_reply = item.taken
    conn.executemany("DELETE FROM wf_inbox WHERE seq = ?", [(s,) for s in inbox_seqs])
    if last_reply is not None:
        conn.execute(
            "DELETE FROM wf_replies WHERE channel = ? AND seq <= ?",
            (INBOX_PREFIX + iid, last_reply),
        )
    if c.restart:
        conn.execute("DELETE FROM wf_history WHERE instance_id = ?", (iid,))
        _drop_stale_inbox(conn, iid)
        generation += 1
    (last,) = conn.execute(
        "SELECT max(seq) FROM wf_history WHERE instance_id = ?", (iid,)
    ).fetchone()
    start = (last or 0) + 1
    conn.executemany(
        "INSERT INTO wf_history (instance_id, seq, event) VALUES (?, ?, ?)",
        [(iid, start + i, encode_event(e)) for i, e in enumerate(c.appended)],
    )
    by_queue: dict[str, list[Message]] = {}
    for queue, message in c.activities:
        by_queue.setdefault(queue, []).append(message)
    for queue, messages in by_queue.items():
        queues.publish(conn, queue, messages, now, 0.0)
    for visible_at, event in c.timers:
        _put(conn, iid, event, visible_at)
    for other, event in c.sends:
        row = conn.execute("SELECT status FROM wf_instances WHERE id = ?", (other,)).fetchone()
        if row is not None and not Status(row[0]).finished:
            _put(conn, other, event, now)
    for child, first in c.children:
        if _get(conn, child.id) is not None:  # taken by another instance: the child fails
            _put(conn, iid, child_exists(child, first), now)
            continue
        _insert(conn, child, now)
        _put(conn, child.id, first, now)
    for event in c.carryover:
        _put(conn, iid, event, -math.inf)
    if c.status.finished:  # its last turn: what it left (timers, events) never runs
        _clear_inbox(conn, iid)
    conn.execute(
        "UPDATE wf_instances SET status = ?, output = ?, error = ?, custom_status = ?,"
        " updated_at = ?, generation = ?, revision = revision + 1, lease_token = NULL,"
        " lease_expires = 0 WHERE id = ?",
        (
            c.status.value, encode_value(c.output), c.error, encode_value(c.custom_status),
            now, generation, iid,
        ),
    )  # fmt: skip
    return list(by_queue)


def _clear_inbox(conn: sqlite3.Connection, iid: str) -> None:
    conn.execute("DELETE FROM wf_inbox WHERE instance_id = ?", (iid,))
    conn.execute("DELETE FROM wf_replies WHERE channel = ?", (INBOX_PREFIX + iid,))


def _drop_stale_inbox(conn: sqlite3.Connection, iid: str) -> None:
    """A continue-as-new keeps raised events and control events; the rest was the old run's."""
    for seq, data in conn.execute(
        "SELECT seq, event FROM wf_inbox WHERE instance_id = ?", (iid,)
    ).fetchall():
        try:
            kept = isinstance(decode_event(data, f"inbox event {seq} of {iid!r}"), KEPT_ON_RESTART)
        except EventCodecError:
            kept = False  # a damaged row: nothing the next run could read either
        if not kept:
            conn.execute("DELETE FROM wf_inbox WHERE seq = ?", (seq,))
    conn.execute("DELETE FROM wf_replies WHERE channel = ?", (INBOX_PREFIX + iid,))


class _BrokerParts(Protocol):
    """What the store uses of the broker it is mixed into."""

    _clock: Callable[[], float]
    _wake: Wakeups

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...
    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...
    def _notify(self, key: tuple[str, str]) -> None: ...
    async def _wait(self, signal: Signal, until: float | None) -> None: ...


class SqliteOrchestrationStore(_BrokerParts):
    """The :class:`~wireframe.durable.store.OrchestrationStore` role of a SQLite broker.

    A mixin of :class:`~wireframe.jobs.brokers.sqlite.SqliteBroker`, using its
    connection threads, clock and wake-ups; every change wakes the waiters for
    the key ``("o", "")`` (taking work) and ``("i", id)`` (a change of one instance).
    """

    async def create_instance(
        self, instance: Instance, first: Event, *, visible_at: float, replace: bool
    ) -> None:
        """Create ``instance`` with ``first`` in its inbox (see the protocol)."""
        clock = self._clock
        await self._write(lambda conn: create(conn, instance, first, visible_at, replace, clock()))
        self._notify(("o", ""))
        self._notify(("i", instance.id))

    async def take_work(self, limit: int, lease: float) -> list[WorkItem]:
        """Lease up to ``limit`` instances with visible inbox events; block until one."""
        clock = self._clock
        while True:
            with self._wake.signal(("o", "")) as signal:
                taken = await self._write(lambda conn: take(conn, limit, lease, clock()))
                if taken.items:
                    return taken.items
                await self._wait(signal, taken.next_due)

    async def commit(self, item: WorkItem, commit: Commit) -> None:
        """Apply a turn atomically; ``TurnLost`` (writing nothing) if the lease is gone."""
        clock = self._clock
        published = await self._write(lambda conn: commit_turn(conn, item, commit, clock()))
        for queue in published:
            self._notify(("q", queue))
        for iid in {iid for iid, _ in commit.sends} | {c.id for c, _ in commit.children}:
            self._notify(("i", iid))
        self._notify(("o", ""))
        self._notify(("i", item.instance.id))

    async def release(self, item: WorkItem, delay: float) -> None:
        """Give the instance back without a turn; its events show again after ``delay``."""
        clock = self._clock

        def release(conn: sqlite3.Connection) -> None:
            now = clock()
            _check_lease(conn, item, now, "the release")
            conn.execute(
                "UPDATE wf_instances SET lease_token = NULL, lease_expires = ? WHERE id = ?",
                (now + delay if delay > 0 else 0, item.instance.id),
            )

        await self._write(release)
        self._notify(("o", ""))

    async def extend_work(self, item: WorkItem, lease: float) -> None:
        """Renew the lease of a long turn; ``TurnLost`` if it is gone."""
        clock = self._clock

        def extend(conn: sqlite3.Connection) -> None:
            now = clock()
            _check_lease(conn, item, now, "renewing the lease")
            conn.execute(
                "UPDATE wf_instances SET lease_expires = ? WHERE id = ?",
                (now + lease, item.instance.id),
            )

        await self._write(extend)

    async def send_event(self, instance_id: str, event: Event) -> None:
        """Put ``event`` in the instance's inbox (dropped if it finished); :class:`UnknownInstance` if none."""
        clock = self._clock

        def send(conn: sqlite3.Connection) -> None:
            row = conn.execute(
                "SELECT status FROM wf_instances WHERE id = ?", (instance_id,)
            ).fetchone()
            if row is None:
                raise UnknownInstance(f"no orchestration instance has id {instance_id!r}")
            if not Status(row[0]).finished:  # a finished instance takes no more turns
                _put(conn, instance_id, event, clock())

        await self._write(send)
        self._notify(("o", ""))

    async def instance(self, instance_id: str) -> Instance | None:
        """The instance's row, or None."""
        return await self._read(lambda conn: _get(conn, instance_id))

    async def history(self, instance_id: str) -> list[Event]:
        """The instance's history, in order (empty for an unknown id)."""

        def read(conn: sqlite3.Connection) -> list[Event]:
            rows = conn.execute(
                "SELECT seq, event FROM wf_history WHERE instance_id = ? ORDER BY seq",
                (instance_id,),
            ).fetchall()
            return [decode_event(d, f"history event {s} of {instance_id!r}") for s, d in rows]

        return await self._read(read)

    async def instances(self, status: Status | None, limit: int) -> list[Instance]:
        """Instances (of one status, or all), most recently updated first."""
        where, args = ("WHERE status = ?", (status.value,)) if status is not None else ("", ())
        sql = f"SELECT {_COLUMNS} FROM wf_instances {where} ORDER BY updated_at DESC, id LIMIT ?"
        rows = await self._read(lambda conn: conn.execute(sql, (*args, limit)).fetchall())
        return [_instance(r) for r in rows]

    async def wait_changed(self, instance_id: str, revision: int) -> Instance:
        """The instance once its revision is past ``revision`` (blocks)."""
        while True:
            with self._wake.signal(("i", instance_id)) as signal:
                inst = await self._read(lambda conn: _get(conn, instance_id))
                if inst is None:
                    raise UnknownInstance(f"no orchestration instance has id {instance_id!r}")
                if inst.revision > revision:
                    return inst
                await self._wait(signal, None)

    async def purge_instance(self, instance_id: str) -> bool:
        """Remove a finished instance with its history; False if there is none."""

        def purge(conn: sqlite3.Connection) -> bool:
            inst = _get(conn, instance_id)
            if inst is None or not inst.status.finished:
                return False
            _drop(conn, instance_id)
            return True

        done = await self._write(purge)
        self._notify(("i", instance_id))
        return done
