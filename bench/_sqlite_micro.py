"""Micro-benchmark of the SQLite broker: messages per second through
publish(batch) -> consume(limit) -> complete -> receive_replies in one process,
next to a raw sqlite3 insert/select/delete loop on the calling thread (the floor
any broker on SQLite pays), plus the whole runtime (map+collect of no-op jobs, a
Worker on a second broker on the same file) for reference.

Each row gives wall-clock msgs/s and msgs per CPU-second of the process (the
second is steadier on a shared machine). Run:
``python bench/_sqlite_micro.py [--messages N] [--batch B]``.
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path

import attrs
import trio

from wireframe import jobs
from wireframe.jobs.broker import Message
from wireframe.jobs.brokers import sqlite as sqlite_broker
from wireframe.jobs.worker import Worker


@attrs.frozen
class Inc(jobs.Operation[int, int], name="bench.sqlite-inc"):
    """An async no-op (plus one): runs on the worker's trio thread."""

    async def execute(self, x: int) -> int:
        return x + 1


class Meter:
    """Wall-clock and process CPU time of a block."""

    def __enter__(self) -> Meter:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def raw_floor(path: Path, n: int, batch: int) -> Meter:
    """Raw sqlite3 on the calling thread: insert a batch, select it, delete each row
    in its own transaction (what a per-message complete costs), insert replies."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("CREATE TABLE m (seq INTEGER PRIMARY KEY, q TEXT, id TEXT, body BLOB)")
    conn.execute("CREATE TABLE r (seq INTEGER PRIMARY KEY, ch TEXT, id TEXT, body BLOB)")
    with Meter() as meter:
        _raw_loop(conn, n, batch)
    conn.close()
    return meter


def _raw_loop(conn: sqlite3.Connection, n: int, batch: int) -> None:
    for base in range(0, n, batch):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO m (q, id, body) VALUES ('q', ?, ?)",
            [(str(i), b"x" * 64) for i in range(base, base + batch)],
        )
        conn.execute("COMMIT")
        rows = conn.execute("SELECT seq, id FROM m WHERE q = 'q' ORDER BY seq LIMIT ?", (batch,))
        for seq, mid in rows.fetchall():
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM m WHERE seq = ?", (seq,))
            conn.execute("INSERT INTO r (ch, id, body) VALUES ('c', ?, ?)", (mid, b"y" * 64))
            conn.execute("COMMIT")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DELETE FROM r WHERE ch = 'c'")
        conn.execute("COMMIT")


async def broker_rate(path: Path, n: int, batch: int, concurrent: bool) -> Meter:
    """The broker, one process: publish a batch, consume it, complete each (one after
    another, or all at once from a nursery), receive the replies."""
    async with sqlite_broker.open(f"sqlite:///{path}") as broker:
        with Meter() as meter:
            await _broker_loop(broker, n, batch, concurrent)
    return meter


async def _broker_loop(
    broker: sqlite_broker.SqliteBroker, n: int, batch: int, concurrent: bool
) -> None:
    for base in range(0, n, batch):
        await broker.publish(
            "q", [Message(str(i), b"x" * 64, "c") for i in range(base, base + batch)]
        )
        got: list[object] = []
        while len(got) < batch:
            deliveries = await broker.consume("q", batch - len(got))
            got.extend(deliveries)
            if concurrent:
                async with trio.open_nursery() as nursery:
                    for d in deliveries:
                        nursery.start_soon(broker.complete, d, b"y" * 64)
            else:
                for d in deliveries:
                    await broker.complete(d, b"y" * 64)
        replies = 0
        while replies < batch:
            replies += len(await broker.receive_replies("c", batch))


async def end_to_end(path: Path, n: int) -> Meter:
    """map+collect of ``n`` no-op jobs: runtime and Worker on two brokers, one file."""
    url = f"sqlite:///{path}"
    async with (
        sqlite_broker.open(url) as worker_broker,
        jobs.connect(url) as rt,
        trio.open_nursery() as nursery,
    ):
        worker = Worker(worker_broker, concurrency=256)
        await nursery.start(worker.serve)
        with Meter() as meter:
            xs = await jobs.from_iter(range(n)).map(Inc()).collect().run(rt)
        assert list(xs) == [x + 1 for x in range(n)]
        worker.stop()
    return meter


def main() -> None:
    """Print messages per second for the raw floor, the broker and the runtime."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    n, batch = args.messages, args.batch
    with tempfile.TemporaryDirectory() as tmp:
        rows = [
            ("raw sqlite3, a transaction per complete", raw_floor(Path(tmp) / "raw.db", n, batch)),
            (
                "broker, completes one after another",
                trio.run(broker_rate, Path(tmp) / "seq.db", n, batch, False),
            ),
            (
                "broker, completes concurrent (group commit)",
                trio.run(broker_rate, Path(tmp) / "conc.db", n, batch, True),
            ),
            (
                "runtime + Worker, map+collect no-op jobs",
                trio.run(end_to_end, Path(tmp) / "e2e.db", n),
            ),
        ]
    print(f"SQLite broker, {n:,} messages, batch {batch}, sqlite {sqlite3.sqlite_version}")
    print(f"{'row':<46} {'msgs/s':>10} {'per CPU s':>10}")
    for name, meter in rows:
        print(f"{name:<46} {n / meter.wall:>10,.0f} {n / meter.cpu:>10,.0f}")


if __name__ == "__main__":
    main()
