"""The SQLite broker's grouped calls: what queued up together runs together, and
each caller still gets its own outcome.

Concurrent reads share one read transaction and one wake-up of the trio thread;
concurrent submits share one write transaction, each in a savepoint of its own
(see ``threads.py``). These tests queue calls behind a blocked thread so that
they are certain to run as one group.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
import trio

from wireframe.jobs.broker import Message, RecordStatus, open_broker
from wireframe.jobs.brokers.sqlite import SqliteBroker


async def _hold(broker: SqliteBroker, which: str, release: threading.Event) -> None:
    """Occupy the broker's ``which`` thread until ``release`` is set."""
    started = threading.Event()

    def block(conn: sqlite3.Connection) -> None:
        started.set()
        release.wait(10)

    if which == "reader":
        await broker._read(block)
    else:
        await broker._write(block)
    assert started.is_set()


async def test_reads_queued_together_each_get_their_own_outcome(tmp_path: Path) -> None:
    async with open_broker(f"sqlite:///{tmp_path}/jobs.db") as broker:
        assert isinstance(broker, SqliteBroker)
        release = threading.Event()
        got: dict[int, object] = {}

        async def read(i: int) -> None:
            def fn(conn: sqlite3.Connection) -> int:
                if i == 7:
                    raise ValueError("seven fails alone")
                return int(conn.execute("SELECT ?", (i,)).fetchone()[0])

            try:
                got[i] = await broker._read(fn)
            except ValueError as exc:
                got[i] = exc

        async with trio.open_nursery() as nursery:
            nursery.start_soon(_hold, broker, "reader", release)
            await trio.sleep(0.05)  # the reader is blocked: what follows queues up
            for i in range(20):
                nursery.start_soon(read, i)
            await trio.sleep(0.05)
            release.set()
        assert isinstance(got.pop(7), ValueError)
        assert got == {i: i for i in range(20) if i != 7}
        assert await broker._read(lambda conn: conn.in_transaction) is True
        assert await broker._read(lambda conn: 1) == 1, "the reader still serves"


@pytest.mark.parametrize("n", [1, 3])
async def test_a_cancelled_read_in_a_group_is_dropped(tmp_path: Path, n: int) -> None:
    async with open_broker(f"sqlite:///{tmp_path}/jobs.db") as broker:
        assert isinstance(broker, SqliteBroker)
        release = threading.Event()
        ran: list[int] = []

        async def read(i: int, cancel_after: float | None) -> None:
            def fn(conn: sqlite3.Connection) -> int:
                ran.append(i)
                return i

            with trio.CancelScope() as scope:
                if cancel_after is not None:
                    scope.deadline = trio.current_time() + cancel_after
                await broker._read(fn)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(_hold, broker, "reader", release)
            await trio.sleep(0.05)
            for i in range(n):
                nursery.start_soon(read, i, None)
            nursery.start_soon(read, 99, 0.01)
            await trio.sleep(0.05)
            release.set()
        assert sorted(ran) == list(range(n)), "a read cancelled before it ran never runs"


async def test_submits_committed_together_each_succeed_or_fail_alone(tmp_path: Path) -> None:
    """Submits queued behind a busy writer go in one transaction; a duplicate key gets
    the live job, a value SQLite cannot store fails that submit alone."""
    async with open_broker(f"sqlite:///{tmp_path}/jobs.db") as broker:
        assert isinstance(broker, SqliteBroker)
        release = threading.Event()
        got: dict[str, object] = {}

        async def submit(job_id: str, key: str | None = None, priority: int = 0) -> None:
            message = Message(job_id, b"body", priority=priority)
            try:
                record, new = await broker.submit("q", message, key=key)
                got[job_id] = (record.id, new)
            except OverflowError as exc:
                got[job_id] = exc

        async with trio.open_nursery() as nursery:
            nursery.start_soon(_hold, broker, "writer", release)
            await trio.sleep(0.05)  # the writer is busy: the submits queue up together
            for i in range(5):
                nursery.start_soon(submit, f"plain-{i}")
            nursery.start_soon(submit, "keyed-1", "invoice-17")
            nursery.start_soon(submit, "too-big", None, 2**70)
            await trio.sleep(0.02)
            nursery.start_soon(submit, "keyed-2", "invoice-17")
            await trio.sleep(0.05)
            release.set()
        assert isinstance(got.pop("too-big"), OverflowError)
        assert got.pop("keyed-2") == ("keyed-1", False), "the live job holding the key"
        assert got == {
            **{f"plain-{i}": (f"plain-{i}", True) for i in range(5)},
            "keyed-1": ("keyed-1", True),
        }
        assert await broker.job("too-big") is None, "the failed submit left nothing"
        [stats] = await broker.stats()
        assert stats.queued == 6
        for job_id in [*(f"plain-{i}" for i in range(5)), "keyed-1"]:
            record = await broker.job(job_id)
            assert record is not None and record.status is RecordStatus.QUEUED
