"""SQLite: a process opening the database while another one holds its lock waits, not fails.

Found by the worker-kill test: worker processes forked at the same moment as
the orchestrator opened a fresh file got ``database is locked`` from the first
pragma of their writer connection (opened with no busy timeout) and died.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import trio

from wireframe.jobs import open_broker


async def test_open_waits_for_another_connections_lock(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("CREATE TABLE elsewhere (x)")
        other.execute("BEGIN EXCLUSIVE")  # what another process holds while it sets the file up
        opened = trio.Event()

        async def open_it() -> None:
            async with open_broker(f"sqlite:///{path}?busy_timeout=5") as broker:
                opened.set()
                await broker.ping()

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(open_it)
                await trio.sleep(0.2)  # real time: the lock is held by a real connection
                assert not opened.is_set()
                other.execute("COMMIT")
    finally:
        other.close()
    assert opened.is_set()
