"""The benchmark's other process: a wireframe worker, or the far end of a raw floor loop.

``bench/jobs_brokers.py`` starts this file as a real subprocess, one of:

* ``python bench/_bench_ops.py worker URL [--concurrency N]`` — one
  :class:`wireframe.jobs.Worker` (default concurrency, like ``WorkerLayer`` and
  ``wireframe worker``) serving the ``default`` queue of the broker ``URL``
  until SIGTERM/SIGINT, then a graceful stop. The operation it runs is
  :class:`Inc` (``bench.brokers-inc``), which the orchestrator imports too.
  With ``WIREFRAME_BENCH_PROFILE=path`` set, the worker runs under cProfile
  (CPU time) and writes the stats to ``path`` when it stops.
* ``python bench/_bench_ops.py redis-pop HOST PORT KEY N`` — BRPOPs N
  messages from ``KEY`` one command at a time (plain socket, RESP) and prints
  the wall-clock time of the last pop.
* ``python bench/_bench_ops.py redis-echo HOST PORT KEY N`` — N times:
  BRPOP a request from ``KEY:req`` and LPUSH it to ``KEY:rep``.
* ``python bench/_bench_ops.py sqlite-take PATH N`` — takes N rows out of
  table ``q`` of the SQLite file (a read of up to 100, then one delete
  transaction) and prints the time of the last take.

The raw floors use a minimal blocking RESP client on a plain socket
(:class:`Resp`) and the stdlib ``sqlite3``: nothing between the program and the
server but the kernel, so they bound what any client library can reach.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sqlite3
import sys
import time
from pathlib import Path

import attrs
import trio

if __package__ in (None, ""):  # run as a file: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wireframe import jobs


@attrs.frozen
class Inc(jobs.Operation[int, int], name="bench.brokers-inc"):
    """The benchmark's no-op job: an integer in, plus one out (``async``: runs on trio)."""

    async def execute(self, x: int) -> int:
        return x + 1


@attrs.frozen
class SyncInc(jobs.Operation[int, int], name="bench.brokers-sync-inc"):
    """The same as a plain ``def``, as most users write them (runs on the worker's threads)."""

    def execute(self, x: int) -> int:
        return x + 1


@attrs.frozen
class Wait2ms(jobs.Operation[int, int], name="bench.brokers-wait-2ms"):
    """An I/O-bound job: waits 2 ms (as for a database or an HTTP call), then answers."""

    async def execute(self, x: int) -> int:
        await trio.sleep(0.002)
        return x


class Resp:
    """A minimal blocking Redis client: one socket, one command at a time, RESP2 replies."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")

    def call(self, *args: bytes | str | int) -> object:
        """Send one command and return its parsed reply."""
        parts = [b"*%d\r\n" % len(args)]
        for a in args:
            b = a if isinstance(a, bytes) else str(a).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
        self.sock.sendall(b"".join(parts))
        return self._read()

    def _read(self) -> object:
        line = self.file.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            data = self.file.read(size + 2)
            return data[:-2]
        if kind == b"*":
            size = int(rest)
            return None if size < 0 else [self._read() for _ in range(size)]
        raise RuntimeError(f"redis error: {line!r}")

    def close(self) -> None:
        """Close the socket."""
        self.file.close()
        self.sock.close()


def redis_pop(host: str, port: int, key: str, n: int) -> None:
    """The consumer of the stream floor: BRPOP n messages, print the last pop's time."""
    r = Resp(host, port)
    r.call("LPUSH", f"{key}:ready", "1")
    for _ in range(n):
        if r.call("BRPOP", key, 30) is None:
            raise SystemExit(f"redis-pop: nothing on {key} within 30 s")
    print(time.time(), flush=True)
    r.close()


def redis_echo(host: str, port: int, key: str, n: int) -> None:
    """The far end of the ping-pong floor: n times BRPOP a request, LPUSH it back."""
    r = Resp(host, port)
    r.call("LPUSH", f"{key}:ready", "1")
    for _ in range(n):
        got = r.call("BRPOP", f"{key}:req", 30)
        if not isinstance(got, list):
            raise SystemExit(f"redis-echo: no request on {key}:req within 30 s")
        assert isinstance(got[1], bytes)
        r.call("LPUSH", f"{key}:rep", got[1])
    r.close()


def sqlite_connect(path: str) -> sqlite3.Connection:
    """A connection as the floor uses it: autocommit, WAL, synchronous=NORMAL."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=10.0)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def sqlite_take(path: str, n: int) -> None:
    """The consumer of the SQLite floor: select up to 100 rows (a plain read), then
    delete them in one write transaction, until n are taken (a 0.2 ms pause when
    there are none). Reading first keeps an idle consumer off the write lock."""
    conn = sqlite_connect(path)
    print("ready", flush=True)
    taken = 0
    deadline = time.monotonic() + 60
    while taken < n:
        rows = conn.execute("SELECT seq, body FROM q ORDER BY seq LIMIT 100").fetchall()
        if rows:
            conn.execute("DELETE FROM q WHERE seq <= ?", (rows[-1][0],))
            taken += len(rows)
        elif time.monotonic() > deadline:
            raise SystemExit(f"sqlite-take: only {taken}/{n} rows within 60 s")
        else:
            time.sleep(0.0002)
    print(time.time(), flush=True)
    conn.close()


async def serve_worker(url: str, concurrency: int | None) -> None:
    """Serve the default queue of ``url`` with one Worker until SIGTERM/SIGINT."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with jobs.open_broker(url) as broker, trio.open_nursery() as nursery:
            worker = (
                jobs.Worker(broker, worker_id="bench-worker")
                if concurrency is None
                else jobs.Worker(broker, worker_id="bench-worker", concurrency=concurrency)
            )
            await nursery.start(worker.serve)
            print("ready", flush=True)
            async for _ in signals:
                worker.stop()
                nursery.cancel_scope.deadline = trio.current_time() + 5
                break


def main(argv: list[str] | None = None) -> None:
    """Command line: see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="role", required=True)
    w = sub.add_parser("worker")
    w.add_argument("url")
    w.add_argument("--concurrency", type=int, default=None)
    for role in ("redis-pop", "redis-echo"):
        p = sub.add_parser(role)
        p.add_argument("host")
        p.add_argument("port", type=int)
        p.add_argument("key")
        p.add_argument("n", type=int)
    s = sub.add_parser("sqlite-take")
    s.add_argument("path")
    s.add_argument("n", type=int)
    a = ap.parse_args(argv)
    if a.role == "worker":
        profile = os.environ.get("WIREFRAME_BENCH_PROFILE")
        if profile:  # CPU-time profile of the worker, written at its graceful stop
            import cProfile

            with cProfile.Profile(time.process_time) as prof:
                trio.run(serve_worker, a.url, a.concurrency)
            prof.dump_stats(profile)
        else:
            trio.run(serve_worker, a.url, a.concurrency)
    elif a.role == "redis-pop":
        redis_pop(a.host, a.port, a.key, a.n)
    elif a.role == "redis-echo":
        redis_echo(a.host, a.port, a.key, a.n)
    else:
        sqlite_take(a.path, a.n)


if __name__ == "__main__":
    main()
