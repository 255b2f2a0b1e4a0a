"""The SQLite broker's tables: what each holds, the migrations, opening a file.

*Storage.* A message is a row of ``wf_messages``. An unfinished one is either
*visible* (``lease_token`` NULL), taken in order of ``priority`` (highest
first), then ``seq`` (oldest first); or *held* until ``visible_at``
(wall-clock seconds) — by a lease (``lease_token`` the lease's token) or by a
publish or abandon delay (``lease_token`` ``''``). Each state has its own
partial index, so a claim walks visible rows only and finds the held ones
whose time has come with one range look-up, however many are delayed (a
claim makes those visible again first: see :mod:`.queues`). The visible
index puts ``limit_name`` before the order, so a claim takes the messages of
a limit only as far as the limit allows and never walks the ones it holds
back (they stay visible; ``wf_limits`` holds each limit and its token
bucket: see :mod:`.limits`). A completed message stays as its completed
record (``done_at`` set, body dropped) until purge: completing is one row
update plus the reply, not a move between tables. Replies live in a
``WITHOUT ROWID`` table keyed by (channel, seq); dead letters in ``wf_dead``;
broadcasts in ``wf_broadcasts`` with an ever-growing id; run channels and
worker heartbeats in ``wf_channels`` and ``wf_workers`` (see
:mod:`.presence`); the records of jobs submitted on their own in ``wf_jobs``
(see :mod:`.jobs`).

*Schema.* ``wf_schema`` holds the schema version; :data:`MIGRATIONS` moves a
database forward one version at a time inside one transaction, keeping every
message. A file written by a newer wireframe is refused with a
:class:`BrokerError` naming both versions before anything is written to it.
Every connection is opened here (:meth:`DatabaseFile.connect`): the writer's
also checks and migrates the file, switching it to WAL mode so that processes
share it; the reader's is ``query_only``. Processes of an older wireframe
must be stopped before a newer one migrates the file they use.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Final

import attrs

from wireframe.jobs.broker import BrokerError, BrokerUnavailable, BrokerURL
from wireframe.jobs.brokers.sqlite import durable, jobs, limits, presence
from wireframe.jobs.brokers.sqlite.threads import is_busy

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "DatabaseFile"]

#: The schema version this code writes and understands.
SCHEMA_VERSION: Final = 5

#: ``MIGRATIONS[v]`` takes a database from version ``v - 1`` to ``v``.
MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    1: (
        "CREATE TABLE wf_schema (version INTEGER NOT NULL)",
        "INSERT INTO wf_schema (version) VALUES (0)",
        # done counts completed records (kept as rows of wf_messages until purge).
        """CREATE TABLE wf_queues (
            name TEXT PRIMARY KEY,
            created_at REAL NOT NULL,
            done INTEGER NOT NULL DEFAULT 0
        ) WITHOUT ROWID""",
        # seq orders a queue (oldest first) and names the row inside lease tokens.
        # A pending message has done_at NULL; lease_token is NULL while it waits;
        # visible_at is when it may be handed out (publish delay, abandon delay, or
        # the end of its lease). Completing keeps the row as the completed record
        # (done_at set, body dropped) until purge: one row update, no second table.
        """CREATE TABLE wf_messages (
            seq INTEGER PRIMARY KEY,
            queue TEXT NOT NULL,
            id TEXT NOT NULL,
            body BLOB NOT NULL,
            reply_to TEXT NOT NULL,
            visible_at REAL NOT NULL,
            deliveries INTEGER NOT NULL DEFAULT 0,
            lease_token TEXT,
            done_at REAL
        )""",
        "CREATE INDEX wf_messages_pending ON wf_messages (queue, seq) WHERE done_at IS NULL",
        # seq orders a channel; a new reply takes the channel's max(seq) + 1.
        """CREATE TABLE wf_replies (
            channel TEXT NOT NULL,
            seq INTEGER NOT NULL,
            message_id TEXT NOT NULL,
            body BLOB,
            dead_reason TEXT,
            PRIMARY KEY (channel, seq)
        ) WITHOUT ROWID""",
        """CREATE TABLE wf_dead (
            seq INTEGER PRIMARY KEY,
            queue TEXT NOT NULL,
            id TEXT NOT NULL,
            body BLOB NOT NULL,
            reply_to TEXT NOT NULL,
            reason TEXT NOT NULL,
            deliveries INTEGER NOT NULL,
            died_at REAL NOT NULL
        )""",
        "CREATE INDEX wf_dead_by_queue ON wf_dead (queue, seq)",
        # AUTOINCREMENT: ids never go back, even after old broadcasts are deleted,
        # so "id > the last one I saw" stays right for every subscriber.
        """CREATE TABLE wf_broadcasts (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            topic TEXT NOT NULL,
            body BLOB NOT NULL,
            sent_at REAL NOT NULL
        )""",
        "CREATE INDEX wf_broadcasts_by_topic ON wf_broadcasts (topic, id)",
    ),
    2: presence.MIGRATION,  # run channels and workers
    3: (
        # priorities; and a claim that never walks delayed or leased rows
        "ALTER TABLE wf_messages ADD COLUMN priority INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE wf_dead ADD COLUMN priority INTEGER NOT NULL DEFAULT 0",
        # every unleased message is held until its visible_at: the first claim makes
        # the ones already due visible again, in their order (no clock needed here)
        "UPDATE wf_messages SET lease_token = '' WHERE done_at IS NULL AND lease_token IS NULL",
        "DROP INDEX wf_messages_pending",
        "CREATE INDEX wf_messages_visible ON wf_messages (queue, priority DESC, seq)"
        " WHERE done_at IS NULL AND lease_token IS NULL",
        "CREATE INDEX wf_messages_held ON wf_messages (queue, visible_at)"
        " WHERE done_at IS NULL AND lease_token IS NOT NULL",
        *jobs.MIGRATION,  # jobs submitted on their own, by id
        *presence.SCHEDULES,  # schedules announced by schedulers
    ),
    4: limits.MIGRATION,  # rate and concurrency limits
    5: durable.MIGRATION,  # durable orchestrations: instances, history, inbox
}


def _schema_version(conn: sqlite3.Connection) -> int:
    """The version ``wf_schema`` records; 0 for a file without the table (a new one)."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'wf_schema'"
    ).fetchone()
    if exists is None:
        return 0
    row = conn.execute("SELECT max(version) FROM wf_schema").fetchone()
    return int(row[0] or 0)


@attrs.frozen
class DatabaseFile:
    """The database file a broker opens, and how: its connections are made here.

    ``create=False`` (inspection commands) never creates the file nor the tables.
    """

    #: The absolute path of the file.
    path: Path
    #: The broker's URL, named in errors.
    url: BrokerURL
    create: bool
    #: Seconds to wait for another connection's lock while preparing the file.
    busy_timeout: float
    #: ``normal`` or ``full``.
    synchronous: str

    def connect(self, *, writer: bool) -> sqlite3.Connection:
        """Open a connection (on the thread that will own it); the writer's also
        checks and migrates the schema."""
        if not self.create and not self.path.exists():
            raise BrokerError(
                f"no SQLite database at {str(self.path)!r} ({self.url}): inspection commands "
                "never create one; check the path"
            )
        try:
            conn = sqlite3.connect(
                # mode=rw: the file must exist, even if it went away since the check
                self.path if self.create else f"{self.path.as_uri()}?mode=rw",
                # the writer's too: its first pragma may meet another process
                # setting the file up; _migrate turns it off once ready
                timeout=self.busy_timeout,
                isolation_level=None,
                check_same_thread=True,
                uri=not self.create,
            )
        except sqlite3.Error as exc:
            raise BrokerUnavailable(
                f"cannot open SQLite database {str(self.path)!r} ({self.url}): {exc}"
            ) from exc
        try:
            conn.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")
            if writer:
                self._migrate_when_free(conn)
            else:
                conn.execute("PRAGMA query_only = 1")
        except sqlite3.Error as exc:
            conn.close()
            kind = BrokerUnavailable if is_busy(exc) else BrokerError
            raise kind(
                f"cannot prepare SQLite database {str(self.path)!r} ({self.url}): {exc}"
            ) from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _check_not_newer(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise BrokerError(
                f"SQLite database {str(self.path)!r} has broker schema version {version}, "
                f"newer than version {SCHEMA_VERSION} that this wireframe understands; "
                "upgrade wireframe to use it (nothing was written to it)"
            )

    def _migrate_when_free(self, conn: sqlite3.Connection) -> None:
        """:meth:`_migrate`, retried while another connection prepares the same new file.

        SQLite does not call its busy handler in every lock state (switching a
        fresh file to WAL while another connection does the same answers
        "database is locked" at once), so retry here, up to ``busy_timeout``.
        """
        deadline = time.monotonic() + self.busy_timeout
        pause = 0.001
        while True:
            try:
                self._migrate(conn)
                return
            except sqlite3.OperationalError as exc:
                if not is_busy(exc) or time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)  # on the connection's own thread, never the trio thread
            pause = min(pause * 2, 0.05)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Refuse a newer schema before writing anything; then WAL mode and migrations."""
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            version = _schema_version(conn)
            if version == 0 and not self.create:
                raise BrokerError(
                    f"SQLite database {str(self.path)!r} ({self.url}) holds no job broker "
                    "tables: inspection commands never create them; check the path"
                )
            self._check_not_newer(version)
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise BrokerError(
                    f"SQLite database {str(self.path)!r} cannot use WAL mode (journal mode "
                    f"stays {mode!r}); the broker needs it to share the file between processes"
                )
            conn.execute("BEGIN IMMEDIATE")
            try:
                version = _schema_version(conn)
                self._check_not_newer(version)
                for target in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in MIGRATIONS[target]:
                        conn.execute(statement)
                    conn.execute("UPDATE wf_schema SET version = ?", (target,))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        finally:
            conn.execute("PRAGMA busy_timeout = 0")  # see ConnectionThread._begin_immediate
