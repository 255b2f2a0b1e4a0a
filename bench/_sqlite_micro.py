"""Micro-benchmark of the SQLite broker alone: messages per second through
publish(batch) -> consume(limit) -> complete -> receive_replies in one process,
next to a raw sqlite3 insert/select/delete loop (the floor any broker on SQLite
pays). Run: ``python bench/_sqlite_micro.py [--messages N] [--batch B]``.
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path

import trio

from wireframe.jobs.broker import Message
from wireframe.jobs.brokers import sqlite as sqlite_broker


def raw_floor(path: Path, n: int, batch: int) -> float:
    """Raw sqlite3 on the calling thread: insert a batch, select it, delete each row
    in its own transaction (what a per-message complete costs), insert replies."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("CREATE TABLE m (seq INTEGER PRIMARY KEY, q TEXT, id TEXT, body BLOB)")
    conn.execute("CREATE TABLE r (seq INTEGER PRIMARY KEY, ch TEXT, id TEXT, body BLOB)")
    start = time.perf_counter()
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
    elapsed = time.perf_counter() - start
    conn.close()
    return n / elapsed


async def broker_rate(path: Path, n: int, batch: int, concurrent: bool) -> float:
    """The broker, one process: publish a batch, consume it, complete each (one after
    another, or all at once from a nursery), receive the replies."""
    async with sqlite_broker.open(f"sqlite:///{path}") as broker:
        start = time.perf_counter()
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
        elapsed = time.perf_counter() - start
    return n / elapsed


def main() -> None:
    """Print messages per second for the raw floor and the broker."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        floor = raw_floor(Path(tmp) / "raw.db", args.messages, args.batch)
        seq = trio.run(broker_rate, Path(tmp) / "seq.db", args.messages, args.batch, False)
        conc = trio.run(broker_rate, Path(tmp) / "conc.db", args.messages, args.batch, True)
    print(f"raw sqlite3, one transaction per complete : {floor:10,.0f} msgs/s")
    print(f"broker, complete one after another        : {seq:10,.0f} msgs/s")
    print(f"broker, completes concurrent (group commit): {conc:10,.0f} msgs/s")


if __name__ == "__main__":
    main()
