"""Benchmark: each dashboard page's time with a full store (issue 14's target: <= 200 ms).

The store: ``--jobs`` tracked jobs (default 100,000; a tenth of them finished),
``--dead`` dead letters (10,000) and ``--instances`` orchestration instances
(10,000), written through the broker's own roles (submit, consume + complete or
dead-letter, ``durable.Client.start``). Then ``wireframe.web.app`` is served by
Hypercorn on trio and each page is fetched ``--repeat`` times over loopback
HTTP; the table shows the median and the worst, in ms (round trips measured at
the client: the server's time plus a loopback hop). Runs on SQLite, and on
Redis when ``--redis URL`` answers (under a fresh key prefix, deleted after).

Usage: ``python bench/dashboard.py [--jobs 100000] [--dead 10000] [--instances 10000]
[--repeat 7] [--redis redis://127.0.0.1:6379/0] [--no-redis]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).parents[1]))

from wireframe import durable
from wireframe.jobs.broker import Broker, Message, open_broker
from wireframe.web import app, serve

TARGET_MS = 200.0


@durable.orchestrator(name="bench.dashboard.flow")
async def flow(ctx: durable.Context, n: int) -> int:
    return n


async def _many(n: int, fn: object, width: int = 64) -> None:
    """Run ``fn(i)`` for i in range(n), ``width`` at a time (a broker's group commit likes company)."""
    counter = iter(range(n))

    async def lane() -> None:
        for i in counter:
            await fn(i)  # type: ignore[operator]

    async with trio.open_nursery() as nursery:
        for _ in range(width):
            nursery.start_soon(lane)


async def fill(broker: Broker, jobs: int, dead: int, instances: int) -> dict[str, str]:
    """Write the store; the ids the detail pages will show."""
    started = time.perf_counter()

    async def submit(i: int) -> None:
        op = "bench.op.even" if i % 2 == 0 else "bench.op.odd"
        await broker.submit("bench", Message(f"job-{i:06d}", b"\x93x"), operation=op, key=None)

    await _many(jobs, submit)
    finished = 0
    while finished < jobs // 10:  # a tenth finish
        for d in await broker.consume("bench", min(500, jobs // 10 - finished)):
            await broker.complete(d, b"\x92\x00\xa2ok")
            finished += 1
    await broker.publish(
        "bench-dead", [Message(f"dead-{i:06d}", b"not a job") for i in range(dead)]
    )
    killed = 0
    while killed < dead:
        batch = await broker.consume("bench-dead", min(500, dead - killed))
        for d in batch:
            await broker.dead_letter(d, "job body is not msgpack (bench)")
        killed += len(batch)
    client = durable.Client(broker)

    async def start(i: int) -> None:
        await client.start(flow, i, instance_id=f"flow-{i:06d}")

    await _many(instances, start)
    print(f"  filled in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return {"job": f"job-{jobs - 1:06d}", "instance": f"flow-{instances - 1:06d}"}


def _get(url: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as response:
        response.read()
        assert response.status == 200, (url, response.status)
    return (time.perf_counter() - started) * 1000


async def measure(url: str, ids: dict[str, str], repeat: int) -> list[tuple[str, float, float]]:
    pages = [
        "/",
        "/jobs",
        "/jobs?page=200",
        "/jobs?status=done",
        "/jobs?operation=bench.op.odd&status=queued",
        f"/jobs/{ids['job']}",
        "/dead",
        "/dead?page=100",
        "/flows",
        "/flows?status=pending&page=20",
        "/flows?name=bench.dashboard.flow",
        f"/flows/{ids['instance']}",
        "/schedules",
    ]
    application = app(url, sample_every=3600)
    rows = []
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(
            lambda task_status: serve(
                application, host="127.0.0.1", port=0, task_status=task_status
            )
        )
        base = bound[0]
        for path in pages:
            await trio.to_thread.run_sync(_get, base + path)  # warm
            times = [await trio.to_thread.run_sync(_get, base + path) for _ in range(repeat)]
            rows.append((path, statistics.median(times), max(times)))
        nursery.cancel_scope.cancel()
    return rows


async def run(url: str, args: argparse.Namespace) -> list[tuple[str, float, float]]:
    async with open_broker(url) as broker:
        ids = await fill(broker, args.jobs, args.dead, args.instances)
    return await measure(url, ids, args.repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--dead", type=int, default=10_000)
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--no-redis", action="store_true")
    args = parser.parse_args()
    results: dict[str, list[tuple[str, float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        print("sqlite: filling", file=sys.stderr)
        results["sqlite"] = trio.run(run, f"sqlite:///{tmp}/jobs.db", args)
    if not args.no_redis:
        prefix = f"wf-bench-dashboard-{uuid.uuid4().hex[:8]}:"
        url = f"{args.redis}?prefix={prefix}"
        try:
            print("redis: filling", file=sys.stderr)
            results["redis"] = trio.run(run, url, args)
        except Exception as exc:  # Redis not there: SQLite's table stands alone
            print(f"redis skipped: {type(exc).__name__}: {exc}", file=sys.stderr)
        finally:
            trio.run(_drop_prefix, args.redis, prefix)
    print(
        f"\ndashboard pages with {args.jobs:,} jobs, {args.dead:,} dead letters, "
        f"{args.instances:,} instances (ms: median / worst of {args.repeat}; target "
        f"<= {TARGET_MS:.0f})"
    )
    brokers = list(results)
    print("| page | " + " | ".join(brokers) + " |")
    print("|---|" + "---|" * len(brokers))
    for k, (path, *_rest) in enumerate(results[brokers[0]]):
        cells = []
        for b in brokers:
            _, median, worst = results[b][k]
            flag = "" if median <= TARGET_MS else " ✗"
            cells.append(f"{median:.1f} / {worst:.1f}{flag}")
        print(f"| `{path}` | " + " | ".join(cells) + " |")


async def _drop_prefix(server: str, prefix: str) -> None:
    """Delete the benchmark's keys (a scan of its prefix)."""
    import coredis

    client = coredis.Redis.from_url(server)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=5000)]
        for i in range(0, len(keys), 1000):
            await client.delete(keys[i : i + 1000])
    except Exception:
        pass


if __name__ == "__main__":
    main()
