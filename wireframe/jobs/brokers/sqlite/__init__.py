"""The SQLite broker: ``sqlite:///path/to/jobs.db``, the embedded, durable default.

One database file holds every queue, lease, result channel, dead letter,
broadcast and the records of jobs submitted on their own, so several worker
processes on one machine can share it and a restart loses nothing: queued,
delayed and leased-but-unfinished messages are still there (a lease that ran
out, by the wall clock, makes its message visible again), replies not yet
taken wait in their channel, a job's state and result stay readable by id
from any process (``Runtime.handle``) for ``result_ttl``, completed records
stay until :meth:`SqliteBroker.purge`. Within a queue a higher ``priority``
is consumed first, equal ones oldest first; a claim never walks the delayed
or leased messages, however many wait, nor those a rate or concurrency limit
holds back (limits hold across every process on the file).

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
    ``lease`` (seconds, default 30), ``max_deliveries`` (default 5) and
    ``result_ttl`` (seconds a finished job's record is kept, default 86400; the
    submitter's value holds for its jobs) as on every broker; ``poll`` — the
    longest pause, in seconds, between two looks for another process's writes
    while something waits (default 0.05; it looks every 1 ms for 10 ms after
    any change, then doubles the pause while idle);
    ``busy_timeout`` — how long, in seconds, to wait for another process's write
    lock before :class:`~wireframe.jobs.broker.BrokerUnavailable` (default 10);
    ``synchronous`` — ``normal`` (default: safe against a killed process, a power
    cut may lose the last transactions) or ``full`` (fsync every commit).

Design, one module per idea
    * :mod:`.broker` — :class:`SqliteBroker`, which joins the parts below, and
      its clock (``open(url, clock=...)`` lets tests move time forward).
    * :mod:`.threads` — two threads, a writer and a reader, each owning one
      connection; the writer group-commits.
    * :mod:`.wakeups` — how waiters are woken: at once by a write in this
      process, by a ``data_version`` watcher for other processes' writes (for
      jobs awaited by id: one read finds which finished), by a timer for
      leases and delays.
    * :mod:`.schema` — the tables, the migrations, opening a file.
    * The transactions of each role: :mod:`.queues` (the work queue: visible
      and held messages, leases, priorities), :mod:`.limits` (rate and
      concurrency limits: what a claim may hand out, when more may go),
      :mod:`.jobs` (jobs kept by id:
      records, dedup keys, abort, expiry), :mod:`.channels` (replies),
      :mod:`.presence` (live run channels and workers), :mod:`.broadcasts`,
      :mod:`.admin` (counts, dead letters, purge).
    * :mod:`.rows` — checking rows a hand edit or a damaged file may have
      broken: a bad row is dead-lettered or skipped with its reason, never
      trusted.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Final

from wireframe.jobs.broker import (
    BrokerURL,
    BrokerURLError,
    mask_password,
    parse_broker_url,
    seconds_option,
)
from wireframe.jobs.brokers.sqlite.broadcasts import BROADCAST_RETENTION
from wireframe.jobs.brokers.sqlite.broker import Clock, SqliteBroker
from wireframe.jobs.brokers.sqlite.schema import MIGRATIONS, SCHEMA_VERSION
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
        raise BrokerURLError(f"broker URL {mask_password(url)!r} is not a sqlite:// URL")
    if parsed.host or parsed.port is not None or parsed.username or parsed.password:
        raise BrokerURLError(
            f"broker URL {mask_password(url)!r}: a sqlite URL has no host; write sqlite:///relative/path.db "
            "(three slashes) or sqlite:////absolute/path.db (four slashes)"
        )
    path = parsed.path[1:] if parsed.path.startswith("/") else parsed.path
    if not path or path.endswith("/"):
        raise BrokerURLError(
            f"broker URL {mask_password(url)!r} names no database file; write sqlite:///relative/path.db "
            "or sqlite:////absolute/path.db"
        )
    if path == ":memory:":
        raise BrokerURLError(
            f"broker URL {mask_password(url)!r}: in-memory SQLite is not supported (the broker's threads and "
            "worker processes could not share it and it would not survive a restart); "
            "use memory:// for an in-process broker or a file path"
        )
    return parsed


def database_path(url: BrokerURL | str) -> Path:
    """The absolute path of the database file a sqlite URL names (relative to the cwd)."""
    parsed = parse_sqlite_url(url) if isinstance(url, str) else url
    return Path(os.path.abspath(parsed.path[1:]))


def open(
    url: str, *, create: bool = True, clock: Clock = time.time
) -> AbstractAsyncContextManager[SqliteBroker]:
    """Open the SQLite broker a ``sqlite://`` URL names; use as ``async with``.

    The URL is checked at once (:class:`BrokerURLError`); the file is opened,
    checked and migrated on entry; the broker's threads are joined on exit.
    With ``create=False`` (inspection: ``wireframe jobs ...``) a missing file,
    or one without the broker's tables, is a :class:`BrokerError` and nothing
    is created: a mistyped path must not leave an empty database behind.

    ``clock`` is what the broker reads the time from (wall-clock seconds,
    called on its threads). It is for tests: one that returns
    ``time.time() + offset`` lets a test run a lease out by moving the offset
    instead of sleeping. Every broker on one file must agree on the time, so
    anything else than :func:`time.time` belongs in tests only. (Not trio's
    ``MockClock`` with autojump: it jumps while a task waits for the broker's
    threads, firing timeouts in the middle of a call.)
    """
    parsed = parse_sqlite_url(url)
    return _open(SqliteBroker(parsed, database_path(parsed), create=create, clock=clock))


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
