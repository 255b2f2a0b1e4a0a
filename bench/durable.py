"""Benchmark: durable orchestrations — throughput, replay and fan-out cost.

Every row measured in this one run:

* **throughput** — N instances of a 5-activity sequence (the workload Microsoft
  publishes for its Durable Task Scheduler) on a broker with ONE ``wireframe
  worker`` process (job worker and orchestration worker), started in this
  process by 16 tasks at once and awaited to the end: instances/s and work items/s (turns +
  activities: each instance is 6 turns and 5 activities).
* **replay** — :func:`~wireframe.durable.replay.run_turn` over a 10,000-event
  history (an instance 3,333 activities deep), in this process.
* **fan-out** — the turn that applies n completions of a fan-out of n
  activities, at n = 1,000 and 10,000: its time should grow linearly (10x),
  not quadratically (100x).

Targets on the 2-core machine (issue 12): >= 300 instances/s (>= 3,300 work
items/s); replay of 10,000 events <= 50 ms; fan-out turn cost linear.

Usage: ``python bench/durable.py [--n 2000] [--brokers sqlite,redis]`` (Redis at
127.0.0.1:6379 under a key prefix of the run's own, removed afterwards).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import trio
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _durable_ops import STEPS, Inc, sequence  # noqa: E402
from jobs_brokers import redis_cleanup  # noqa: E402

from wireframe import durable, jobs  # noqa: E402
from wireframe.durable import history as h  # noqa: E402
from wireframe.durable.registry import spec_named  # noqa: E402
from wireframe.durable.replay import run_turn  # noqa: E402
from wireframe.jobs.codec import JobResult, encode_result  # noqa: E402

OPS = str(HERE / "_durable_ops.py")
REDIS = "redis://127.0.0.1:6379/0"
#: Tasks starting the instances at once (a service's request handlers would).
STARTERS = 16


def _worker(url: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "wireframe", "worker", "--broker", url, "--import", OPS]
    return subprocess.Popen(
        [*cmd, "--plain"], cwd=HERE.parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


async def _throughput(url: str, n: int) -> float:
    async with jobs.open_broker(url) as broker:
        client = durable.Client(broker)
        with trio.fail_after(60):  # the worker is up: one instance through
            await client.wait_completed(await client.start(sequence, 0), timeout=60)
        t = time.perf_counter()
        ids: list[str] = [""] * n

        async def starter(first: int) -> None:  # many callers at once, as web handlers are
            for i in range(first, n, STARTERS):
                ids[i] = await client.start(sequence, i)

        async with trio.open_nursery() as nursery:
            for first in range(STARTERS):
                nursery.start_soon(starter, first)
        for i, iid in enumerate(ids):
            inst = await client.wait_completed(iid, timeout=600)
            if inst.output != i + STEPS:
                raise AssertionError(f"{iid}: {inst.status.value} {inst.output!r} {inst.error}")
        return n / (time.perf_counter() - t)


def throughput(url: str, n: int) -> float:
    """Instances/s of ``n`` sequences with one worker process."""
    proc = _worker(url)
    try:
        return trio.run(_throughput, url, n)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _history(steps: int) -> list[h.Event]:
    """The history of :func:`sequence`-like code ``steps`` activities deep."""
    spec = spec_named("bench.durable-sequence")
    first = run_turn(spec, "b", [], [h.ExecutionStarted(spec.name, 0)], 0.0)
    body = next(e for e in first.events if isinstance(e, h.TaskScheduled)).body
    events: list[h.Event] = [h.OrchestratorStarted(0.0), h.ExecutionStarted(spec.name, 0)]
    for action in range(1, steps + 1):
        events.append(h.TaskScheduled(action, Inc.op_name, body))
        events.append(h.OrchestratorStarted(float(action)))
        events.append(h.TaskCompleted(action, encode_result(JobResult(value=action))))
    return events


def replay_ms(events: int) -> float:
    """Milliseconds :func:`run_turn` takes over a history of about ``events`` events."""
    history = _history(events // 3)
    loop = spec_named("bench.durable-loop")
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        run_turn(loop, "b", history, [], 1e9)
        best = min(best, time.perf_counter() - t)
    return best * 1e3


@durable.orchestrator(name="bench.durable-loop")
async def loop(ctx: durable.Context, x: int) -> int:
    """Activities one after another, forever (replayed, never finished)."""
    while True:
        x = await ctx.call(Inc(), x)


def fan_turn_ms(n: int) -> float:
    """Milliseconds (best of 3) of the turn that applies all ``n`` completions of a fan-out of ``n``."""
    spec = spec_named("bench.durable-fan")
    first = run_turn(spec, "f", [], [h.ExecutionStarted(spec.name, n)], 0.0)
    done = [h.TaskCompleted(a, encode_result(JobResult(value=a))) for a in range(1, n + 1)]
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        turn = run_turn(spec, "f", first.events, done, 1.0)
        best = min(best, time.perf_counter() - t)
        if turn.status != "completed":
            raise AssertionError(turn)
    return best * 1e3


def main(argv: list[str] | None = None) -> None:
    """Command line: see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--brokers", default="sqlite,redis")
    a = ap.parse_args(argv)
    console = Console()
    table = Table(title="durable orchestrations (one worker process, 2 cores)")
    for col in ("what", "figure", "target"):
        table.add_column(col, justify="right" if col != "what" else "left")
    for broker in a.brokers.split(","):
        console.print(f"throughput on {broker} ...")
        if broker == "redis":
            prefix = f"wf-bench-{uuid.uuid4().hex[:12]}:"
            try:
                rate = throughput(f"{REDIS}?prefix={prefix}", a.n)
            finally:
                redis_cleanup("127.0.0.1", 6379, 0, prefix)
        else:
            with tempfile.TemporaryDirectory(prefix="wf-bench-durable-") as tmp:
                rate = throughput(f"sqlite:///{tmp}/jobs.db", a.n)
        table.add_row(
            f"{broker}: {a.n:,} x 5-activity sequence", f"{rate:,.0f} instances/s", ">= 300"
        )
        table.add_row(
            f"{broker}: work items (turns + activities)", f"{rate * 11:,.0f} /s", ">= 3,300"
        )
    table.add_row("replay of a 10,000-event history", f"{replay_ms(10_000):.1f} ms", "<= 50 ms")
    small, big = fan_turn_ms(1_000), fan_turn_ms(10_000)
    table.add_row("fan-out turn, 1,000 completions", f"{small:.1f} ms", "")
    table.add_row("fan-out turn, 10,000 completions", f"{big:.1f} ms ({big / small:.1f}x)", "~10x")
    console.print(table)


if __name__ == "__main__":
    main()
