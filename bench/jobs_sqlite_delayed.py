"""Benchmark: a SQLite queue with 20,000 delayed messages at its head, against the same queue empty.

Delayed messages (a retry's backoff, a ``delay=``) wait beside the visible
ones; a claim must not walk them. Rows, all in this one run, each pair on a
fresh file:

* **claim** — the claim transaction of ``consume`` (``SqliteBroker._claim``, run
  on the writer thread) on a queue with nothing visible: µs per claim.
* **map+collect** — N no-op jobs through a ``Worker`` on a second broker on
  the same file, in this process: jobs/s, and process CPU µs per job.

Target (issue 11): with 20,000 delayed messages, claim <= 2x and map+collect
>= 80% of the empty queue's figures.

Usage: ``python bench/jobs_sqlite_delayed.py [--n 5000] [--delayed 20000]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import trio
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _bench_ops import Inc  # noqa: E402

from wireframe import jobs  # noqa: E402
from wireframe.jobs.broker import Message  # noqa: E402

CLAIMS = 300


async def _measure(url: str, delayed: int, n: int) -> tuple[float, float, float]:
    async with jobs.open_broker(url) as broker, jobs.open_broker(url) as worker_broker:
        if delayed:
            for start in range(0, delayed, 1000):
                batch = [Message(f"d{i}", b"x") for i in range(start, start + 1000)]
                await broker.publish("default", batch, delay=3600)
        claim = broker._claim("default", 10)  # type: ignore[attr-defined]
        t = time.perf_counter()
        for _ in range(CLAIMS):
            await broker._write(claim)  # type: ignore[attr-defined]
        claim_us = (time.perf_counter() - t) / CLAIMS * 1e6
        rt = jobs.Runtime(broker)
        async with trio.open_nursery() as nursery:
            worker = jobs.Worker(worker_broker)
            await nursery.start(worker.serve)
            await jobs.from_iter(range(200)).map(Inc()).collect().run(rt)
            c, t = time.process_time(), time.perf_counter()
            await jobs.from_iter(range(n)).map(Inc()).collect().run(rt)
            rate = n / (time.perf_counter() - t)
            cpu = (time.process_time() - c) / n * 1e6
            worker.stop()
    return claim_us, rate, cpu


def measure(delayed: int, n: int) -> tuple[float, float, float]:
    """(claim µs, map+collect jobs/s, CPU µs per job) on a fresh file with ``delayed`` rows."""
    with tempfile.TemporaryDirectory(prefix="wf-bench-delayed-") as tmp:
        return trio.run(_measure, f"sqlite:///{tmp}/jobs.db", delayed, n)


def main(argv: list[str] | None = None) -> None:
    """Command line: see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--delayed", type=int, default=20_000)
    a = ap.parse_args(argv)
    empty = measure(0, a.n)
    full = measure(a.delayed, a.n)
    table = Table(title=f"SQLite: {a.delayed:,} delayed messages at the head vs none")
    for col in ("queue", "claim (nothing visible)", "map+collect", "CPU per job"):
        table.add_column(col, justify="right")
    for label, (claim, rate, cpu) in (("empty", empty), (f"{a.delayed:,} delayed", full)):
        table.add_row(label, f"{claim:.0f} µs", f"{rate:,.0f} jobs/s", f"{cpu:.0f} µs")
    table.add_row(
        "ratio",
        f"{full[0] / empty[0]:.2f}x (<= 2x)",
        f"{full[1] / empty[1]:.0%} (>= 80%)",
        f"{full[2] / empty[2]:.2f}x",
    )
    Console().print(table)


if __name__ == "__main__":
    main()
