"""Benchmark: I/O-bound jobs (2 ms waits) against the ceiling the worker's slots and CPU allow.

ONE worker process on Redis (``bench/_bench_ops.py worker URL``), every row
measured in this one run: ``map(Wait2ms())`` over N inputs, each job an
``async def`` that waits 2 ms, at the worker's default concurrency and at 16
(the default before). A worker with ``c`` slots can finish at most ``c / 2 ms``
such jobs a second (the slot ceiling); its CPU allows at most ``1 / (CPU per
job)`` (the CPU ceiling, from /proc). The ratio is jobs/s over the lower of
the two. Target (issue 11): >= 80% of that ceiling with default settings.

Usage: ``python bench/jobs_io.py [--n 20000] [--redis URL]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
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

from _bench_ops import Wait2ms  # noqa: E402
from jobs_brokers import _spawn, _stop, proc_cpu, redis_cleanup  # noqa: E402

from wireframe import jobs  # noqa: E402
from wireframe.jobs.broker import parse_broker_url  # noqa: E402
from wireframe.jobs.worker import DEFAULT_CONCURRENCY  # noqa: E402

WAIT = 0.002


@attrs.frozen
class Row:
    concurrency: int
    rate: float
    worker_cpu_us: float

    @property
    def ceiling(self) -> float:
        """The lower of the slot ceiling and the CPU ceiling, jobs/s."""
        return min(self.concurrency / WAIT, 1e6 / self.worker_cpu_us)


async def _measure(url: str, n: int, proc: subprocess.Popen[str], concurrency: int) -> Row:
    async with jobs.connect(url) as rt:
        with trio.fail_after(60):
            while proc.poll() is None:
                with trio.move_on_after(5):
                    await jobs.literal(0).then(Wait2ms()).run(rt)
                    break
        await jobs.from_iter(range(1000)).map(Wait2ms()).collect().run(rt)  # warm
        w0 = proc_cpu(proc.pid) or 0.0
        t = time.perf_counter()
        await jobs.from_iter(range(n)).map(Wait2ms()).collect().run(rt)
        rate = n / (time.perf_counter() - t)
        w1 = proc_cpu(proc.pid) or 0.0
    return Row(concurrency, rate, max(w1 - w0, 1e-9) / n * 1e6)


def measure(redis_url: str, n: int, concurrency: int) -> Row:
    """One row: a fresh worker process of ``concurrency`` slots under a fresh key prefix."""
    parsed = parse_broker_url(redis_url)
    prefix = f"wf-bench-{uuid.uuid4().hex[:12]}:"
    sep = "&" if "?" in redis_url else "?"
    url = f"{redis_url}{sep}prefix={prefix}"
    proc = _spawn("worker", url, "--concurrency", str(concurrency))
    try:
        return trio.run(_measure, url, n, proc, concurrency)
    finally:
        _stop(proc)
        db = int(parsed.path.strip("/") or 0)
        redis_cleanup(parsed.host or "127.0.0.1", parsed.port or 6379, db, prefix)


def main(argv: list[str] | None = None) -> None:
    """Command line: see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument(
        "--redis",
        default=os.environ.get("WIREFRAME_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
    )
    a = ap.parse_args(argv)
    rows = [measure(a.redis, a.n, c) for c in (DEFAULT_CONCURRENCY, 16)]
    t = Table(title=f"{a.n:,} I/O-bound jobs (2 ms waits), Redis, one worker process")
    for col in ("concurrency", "jobs/s", "worker CPU us/job", "slot ceiling", "CPU ceiling"):
        t.add_column(col, justify="right")
    t.add_column("of the ceiling", justify="right")
    for r in rows:
        label = f"{r.concurrency}" + (" (default)" if r.concurrency == DEFAULT_CONCURRENCY else "")
        t.add_row(
            label,
            f"{r.rate:,.0f}",
            f"{r.worker_cpu_us:.0f}",
            f"{r.concurrency / WAIT:,.0f}",
            f"{1e6 / r.worker_cpu_us:,.0f}",
            f"{r.rate / r.ceiling:.0%}",
        )
    Console().print(t)
    print("target: >= 80% of the ceiling with default settings")


if __name__ == "__main__":
    main()
