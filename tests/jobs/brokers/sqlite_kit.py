"""What SQLite broker tests share: a receive cancelled just after its take, a claim's cost."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable

import pytest
import trio

from wireframe.jobs.brokers.sqlite import SqliteBroker


async def cancel_receive_after_its_take(
    broker: SqliteBroker, channel: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Start ``receive_replies(channel, 2)``, let its take commit on the writer thread,
    then cancel it before it returns: the broker must give what it took back."""
    writer = broker._writer
    assert writer is not None
    started, release = threading.Event(), threading.Event()
    real_run = writer.run

    async def run_blocking(fn: Callable[[sqlite3.Connection], object], **kw: bool) -> object:
        def blocking(conn: sqlite3.Connection) -> object:
            result = fn(conn)
            started.set()
            release.wait(5)
            return result

        return await real_run(blocking, **kw)

    monkeypatch.setattr(writer, "run", run_blocking)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(broker.receive_replies, channel, 2)
        await trio.to_thread.run_sync(started.wait, 5)
        nursery.cancel_scope.cancel()  # after the take: it must give both back
        release.set()
    monkeypatch.undo()


def claim_cost(conn: sqlite3.Connection, claim: Callable[[sqlite3.Connection], object]) -> int:
    """How many SQLite VM instructions (in tens) one claim transaction runs (rolled back)."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    conn.set_progress_handler(count, 10)
    conn.execute("BEGIN IMMEDIATE")
    try:
        claim(conn)
    finally:
        conn.execute("ROLLBACK")
        conn.set_progress_handler(None, 0)
    return steps
