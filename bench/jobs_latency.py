"""Benchmark: one job submitted while a big batch runs (issue 11, "a single job during a batch").

For SQLite and Redis, with ONE worker process of default concurrency
(``bench/_bench_ops.py worker URL``), every row measured in this one run:

* **batch alone** — ``from_iter(range(N)).map(SyncInc()).collect()`` (a plain
  ``def`` no-op): jobs/s.
* **batch + probes** — the same batch while a probe job is submitted every
  10 ms from the same runtime (``Runtime.submit`` then ``result()``, one at a
  time): the batch's jobs/s as a ratio of alone, and the probes' round trip
  p50/p99.
* **probes at priority 1** — the same, the probes submitted with
  ``priority=1``: they go ahead of the batch's queued jobs.
* **window = bound** — the same, with a run's window fixed at its
  ``max_in_flight`` (1024), as before runs sized their windows from the
  workers' slots (``wireframe.jobs.runtime.WINDOW_PER_SLOT`` patched in this
  process only).

Targets: probe p50 <= 10 ms and p99 <= 30 ms, batch throughput within 10% of
alone.

Usage: ``python bench/jobs_latency.py [--n 50000] [--brokers sqlite,redis]
[--redis URL]``; Redis runs under its own key prefix, removed afterwards.
"""

from __future__ import annotations

import argparse
import os
import subprocess
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

from _bench_ops import SyncInc  # noqa: E402
from jobs_brokers import _spawn, _stop, pct, redis_cleanup  # noqa: E402

from wireframe import jobs  # noqa: E402
from wireframe.jobs import runtime as runtime_module  # noqa: E402

PROBE_EVERY = 0.010


@attrs.frozen
class Row:
    broker: str
    case: str
    rate: float
    probes: list[float]  # round trips, ms


async def _warm(rt: jobs.Runtime, proc: subprocess.Popen[str]) -> None:
    with trio.fail_after(60):
        while True:
            with trio.move_on_after(5):
                await jobs.literal(0).then(SyncInc()).run(rt)
                return
            if proc.poll() is not None:
                raise RuntimeError(f"worker process exited with {proc.returncode}")


async def _batch(rt: jobs.Runtime, n: int) -> float:
    t = time.perf_counter()
    out = await jobs.from_iter(range(n)).map(SyncInc()).collect().run(rt)
    rate = n / (time.perf_counter() - t)
    if out[-1] != n:
        raise AssertionError("map+collect returned wrong results")
    return rate


async def _probe_while(rt: jobs.Runtime, done: trio.Event, lat: list[float], priority: int) -> None:
    i = 0
    while not done.is_set():
        t = time.perf_counter()
        handle = await rt.submit(SyncInc(), i, priority=priority)
        if await handle.result(timeout=60) != i + 1:
            raise AssertionError("a probe returned a wrong result")
        lat.append((time.perf_counter() - t) * 1000)
        i += 1
        await trio.sleep(max(0.0, PROBE_EVERY - (time.perf_counter() - t)))


async def _measure(url: str, n: int, proc: subprocess.Popen[str], name: str) -> list[Row]:
    rows = []
    async with jobs.connect(url) as rt:
        await _warm(rt, proc)
        await jobs.from_iter(range(500)).map(SyncInc()).collect().run(rt)  # warm, windows seen
        rows.append(Row(name, "batch alone", await _batch(rt, n), []))
        cases = (
            ("batch + probes", None, 0),
            ("  probes at priority 1", None, 1),
            ("  window = bound (before)", 10**6, 0),
        )
        for case, per_slot, priority in cases:
            saved = runtime_module.WINDOW_PER_SLOT
            if per_slot is not None:
                runtime_module.WINDOW_PER_SLOT = per_slot
            try:
                lat: list[float] = []
                done = trio.Event()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_probe_while, rt, done, lat, priority)
                    rate = await _batch(rt, n)
                    done.set()
            finally:
                runtime_module.WINDOW_PER_SLOT = saved
            rows.append(Row(name, case, rate, lat))
    return rows


def measure(url: str, n: int, name: str) -> list[Row]:
    """Rows for ``url`` with one worker subprocess."""
    proc = _spawn("worker", url)
    try:
        return trio.run(_measure, url, n, proc, name)
    finally:
        _stop(proc)


def table(rows: list[Row], n: int) -> Table:
    t = Table(title=f"one job during a {n:,}-job batch (plain def no-op, 1 worker process)")
    for col in ("broker", "case", "batch jobs/s", "vs alone", "probes", "p50", "p99"):
        t.add_column(col, justify="right" if col not in ("broker", "case") else "left")
    alone = {r.broker: r.rate for r in rows if r.case == "batch alone"}
    for r in rows:
        p50 = f"{pct(r.probes, 50):.1f} ms" if r.probes else ""
        p99 = f"{pct(r.probes, 99):.1f} ms" if r.probes else ""
        ratio = f"{r.rate / alone[r.broker]:.2f}x"
        t.add_row(r.broker, r.case, f"{r.rate:,.0f}", ratio, str(len(r.probes)), p50, p99)
    return t


def main(argv: list[str] | None = None) -> None:
    """Command line: see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--brokers", default="sqlite,redis")
    ap.add_argument(
        "--redis",
        default=os.environ.get("WIREFRAME_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
    )
    a = ap.parse_args(argv)
    rows: list[Row] = []
    console = Console()
    for broker in a.brokers.split(","):
        console.print(f"measuring {broker} ...")
        if broker == "sqlite":
            with tempfile.TemporaryDirectory(prefix="wf-bench-latency-") as tmp:
                rows += measure(f"sqlite:///{tmp}/jobs.db", a.n, "sqlite")
        elif broker == "redis":
            prefix = f"wf-bench-{uuid.uuid4().hex[:12]}:"
            sep = "&" if "?" in a.redis else "?"
            host_port = a.redis.split("//", 1)[1].split("/", 1)[0]
            host, _, port = host_port.partition(":")
            db = int((a.redis.split("//", 1)[1].split("/", 1)[1:] or ["0"])[0].split("?")[0] or 0)
            try:
                rows += measure(f"{a.redis}{sep}prefix={prefix}", a.n, "redis")
            finally:
                redis_cleanup(host, int(port or 6379), db, prefix)
        else:
            raise SystemExit(f"unknown broker {broker!r}: sqlite or redis")
    console.print(table(rows, a.n))
    console.print(
        "targets: probe p50 <= 10 ms, p99 <= 30 ms; batch with probes within 10% of alone"
    )


if __name__ == "__main__":
    main()
