"""Benchmark: jobs submitted on their own (``Runtime.submit``) and their results awaited.

Every row is measured in this one run (issue 10, "Performance"):

* **wireframe <broker>** — N no-op jobs (``Inc``: an int in, plus one out),
  each submitted individually with ``rt.submit`` from C concurrent tasks that
  each await their job's ``result()``; ONE worker process
  (``bench/_bench_ops.py worker URL``) started and warmed up first. jobs/s =
  N / wall time from the first submit to the last result. Then single-job
  round trips (``submit`` then ``result()``, one at a time): p50/p99. On Redis,
  the Redis commands per job of the concurrent run (``INFO commandstats``,
  every client: submitter, worker). ``memory://`` is the in-process reference
  (an emulated worker: no process boundary).
* **peers** — the medians the peers' harness recorded (``shared/peers-bench``,
  RESULTS.md: one worker process, N jobs enqueued one call at a time, results
  stored); with ``--peers``, measured now on the same machine.

Targets (issue 10): Redis >= 2x saq's and >= 2x dramatiq's jobs/s, <= 8 Redis
commands per job, p50 <= 1 ms on a quiet machine; SQLite >= 5,000 jobs/s.

Usage: ``python bench/jobs_submit.py [N] [--n 10000] [--concurrency 64]
[--rtt 1000] [--brokers memory,sqlite,redis] [--redis URL] [--peers]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import attrs
import trio
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import _peers  # noqa: E402
from _bench_ops import Inc  # noqa: E402
from jobs_brokers import _spawn, _stop, redis_cleanup  # noqa: E402

from wireframe import jobs  # noqa: E402
from wireframe.jobs.broker import parse_broker_url  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/0"


@attrs.frozen
class Row:
    """One broker's figures."""

    name: str
    rate: float
    p50: float
    p99: float
    commands: float | None  # Redis commands per job, where measured
    by_name: dict[str, float] = attrs.field(factory=dict)  # commands per job, by name


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _commands(url: str) -> dict[str, int]:
    """Every command Redis has run so far, by name (``INFO commandstats``; a script's
    own calls count under their names, as ``EVALSHA`` itself does)."""
    import coredis

    parsed = parse_broker_url(url, {"prefix": (str, "")})
    async with coredis.Redis(host=parsed.host, port=parsed.port or 6379) as client:
        info = await client.info("commandstats")
    return {k[8:]: int(v["calls"]) for k, v in info.items() if k.startswith("cmdstat_")}


async def _measure(url: str, n: int, concurrency: int, rtt: int, emulated: bool) -> Row:
    extra = {"workers": 1, "worker_concurrency": 64} if emulated else {}
    async with jobs.connect(url, **extra) as rt:  # type: ignore[arg-type]
        with trio.fail_after(60):  # the worker is up and warm
            for i in range(200):
                await (await rt.submit(Inc(), i)).result()
        redis = url.startswith("redis")
        before = await _commands(url) if redis else {}
        todo = iter(range(n))

        async def client() -> None:
            for i in todo:
                got = await (await rt.submit(Inc(), i)).result(timeout=60)
                if got != i + 1:
                    raise AssertionError(f"job {i} returned {got!r}")

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(client)
        rate = n / (time.perf_counter() - start)
        after = await _commands(url) if redis else {}
        by_name = {k: (v - before.get(k, 0)) / n for k, v in after.items() if v > before.get(k, 0)}
        by_name.pop("info", None)
        commands = sum(by_name.values()) if redis else None
        lat = []
        for i in range(rtt):
            t = time.perf_counter()
            await (await rt.submit(Inc(), i)).result(timeout=60)
            lat.append((time.perf_counter() - t) * 1000)
        await rt.broker.purge()
    name = url.split(":", 1)[0]
    return Row(f"wireframe {name}://", rate, pct(lat, 0.5), pct(lat, 0.99), commands, by_name)


def measure(url: str, n: int, concurrency: int, rtt: int) -> Row:
    """One broker's row, with one worker process (emulated, in-process, for memory://)."""
    if url.startswith("memory"):
        return trio.run(_measure, url, n, concurrency, rtt, True)
    proc = _spawn("worker", url)
    try:
        return trio.run(_measure, url, n, concurrency, rtt, False)
    finally:
        _stop(proc)


def table(rows: list[Row], peers: list[_peers.PeerRow]) -> Table:
    """The rows, with each wireframe row's ratio to saq and dramatiq."""
    by = {p.spec: p.jobs_per_s for p in peers}
    t = Table(title="jobs submitted on their own: submit + result()")
    for col in ("row", "jobs/s", "p50 ms", "p99 ms", "Redis cmds/job", "x saq", "x dramatiq"):
        t.add_column(col, justify="left" if col == "row" else "right")
    for r in rows:
        ratios = [
            f"{r.rate / v:.2f}" if v else "-"
            for v in (by.get("saq:default"), by.get("dramatiq:p1"))
        ]
        cmds = "-" if r.commands is None else f"{r.commands:.1f}"
        t.add_row(r.name, f"{r.rate:,.0f}", f"{r.p50:.3f}", f"{r.p99:.3f}", cmds, *ratios)
    for p in peers:
        rate = "-" if p.jobs_per_s is None else f"{p.jobs_per_s:,.0f}"
        p50 = "-" if p.p50_ms is None else f"{p.p50_ms:.3f}"
        p99 = "-" if p.p99_ms is None else f"{p.p99_ms:.3f}"
        t.add_row(f"{p.spec} ({p.note})", rate, p50, p99, "-", "", "")
    return t


def main(argv: list[str] | None = None) -> None:
    """Command line: see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("count", nargs="?", type=int, default=None, help="N (as --n)")
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--rtt", type=int, default=1000)
    ap.add_argument("--brokers", default="memory,sqlite,redis")
    ap.add_argument("--redis", default=REDIS_URL)
    ap.add_argument("--peers", action="store_true")
    a = ap.parse_args(argv)
    n = a.count or a.n
    say = Console(stderr=True).print
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for broker in a.brokers.split(","):
            if broker == "memory":
                url = f"memory://submit-{uuid.uuid4().hex[:8]}"
            elif broker == "sqlite":
                url = f"sqlite:///{tmp}/submit.db"
            else:
                prefix = f"wf-bench-{uuid.uuid4().hex[:8]}:"
                url = f"{a.redis}?prefix={prefix}"
            say(f"measuring {broker} ...")
            try:
                rows.append(measure(url, n, a.concurrency, min(a.rtt, n)))
            finally:
                if broker == "redis":
                    p = parse_broker_url(a.redis)
                    redis_cleanup(p.host, p.port or 6379, 0, prefix)
    peers = list(_peers.REFERENCE)
    if a.peers:
        with _peers.private_redis():
            peers = _peers.measure(n, min(a.rtt, 1000))
    Console(width=160).print(table(rows, peers))
    for r in rows:
        if r.by_name:
            parts = sorted(r.by_name.items(), key=lambda kv: -kv[1])
            say(f"{r.name} commands/job: " + ", ".join(f"{k} {v:.2f}" for k, v in parts))
    if rows:
        say(f"median of rows: {statistics.median(r.rate for r in rows):,.0f} jobs/s")


if __name__ == "__main__":
    main()
