"""The SQLite store's take: it reads what is due and not leased, never the whole backlog."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from wireframe import durable, jobs
from wireframe.jobs.brokers.sqlite import durable as sqlite_durable


@durable.orchestrator(name="sqlite-take-waits")
async def waits(ctx: durable.Context, x: int) -> int:
    return int(await ctx.wait_for_event("go"))


def _take_cost(path: Path) -> int:
    """SQLite VM instructions (in tens) of one take of one instance (rolled back)."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.set_progress_handler(count, 10)
        conn.execute("BEGIN IMMEDIATE")
        taken = sqlite_durable.take(conn, 1, 30.0, time.time())
        conn.execute("ROLLBACK")
    finally:
        conn.close()
    assert len(taken.items) == 1
    return steps


async def test_a_take_costs_the_same_behind_thousands_of_due_instances(tmp_path: Path) -> None:
    """3,000 more instances waiting to start: taking one costs what it did without them."""
    path = tmp_path / "jobs.db"
    async with jobs.open_broker(f"sqlite:///{path}") as broker:
        client = durable.Client(broker)
        await client.start(waits, 0)
        alone = _take_cost(path)
        for i in range(3000):
            await client.start(waits, i)
        crowded = _take_cost(path)
    assert crowded < alone + 100, (alone, crowded)  # reading 3,000 due ids: 3,000+


def test_the_take_queries_search_indexes_and_never_scan_instances(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "plan.db")
    try:
        for statement in sqlite_durable.MIGRATION:
            conn.execute(statement)
        conn.execute(
            "CREATE TABLE wf_replies (channel TEXT NOT NULL, seq INTEGER NOT NULL,"
            " message_id TEXT NOT NULL, body BLOB, dead_reason TEXT,"
            " PRIMARY KEY (channel, seq)) WITHOUT ROWID"
        )
        for sql in (sqlite_durable._REPLIED, sqlite_durable._VISIBLE):
            args = (1,) * (5 if "?5" in sql else 2)
            plan = " / ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", args))
            assert "SCAN" not in plan and "TEMP B-TREE" not in plan, plan
            assert plan.startswith("SEARCH r USING PRIMARY KEY") or plan.startswith(
                "SEARCH b USING COVERING INDEX wf_inbox_due"
            ), plan
    finally:
        conn.close()
