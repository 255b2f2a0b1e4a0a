"""Micro-benchmark of the Redis broker alone, beside a raw LPUSH/BRPOP floor.

Run: ``python bench/_redis_micro.py [N]`` with Redis at WIREFRAME_TEST_REDIS_URL
(default redis://127.0.0.1:6379/0). Prints messages per second for
publish -> consume -> complete -> receive_replies with batches, the single-message
round-trip latency (p50/p99), the same two figures for bare LPUSH/BRPOP, and the
whole runtime (map+collect of no-op jobs, one job at a time) with one Worker.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
import uuid

import attrs
import coredis
import trio

from wireframe import jobs
from wireframe.jobs.broker import Message, parse_broker_url
from wireframe.jobs.brokers import redis as redis_broker
from wireframe.jobs.worker import Worker

URL = os.environ.get("WIREFRAME_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


async def broker_throughput(n: int, batch: int = 500, limit: int = 100) -> float:
    """Messages per second through the whole broker cycle, one worker."""
    prefix = f"wf-bench-{uuid.uuid4().hex}:"
    async with redis_broker.open(f"{URL}?prefix={prefix}") as broker:
        await broker.declare_queue("q")
        start = time.perf_counter()

        async def producer() -> None:
            for i in range(0, n, batch):
                msgs = [Message(f"m{j}", b"x" * 64, "ch") for j in range(i, min(n, i + batch))]
                await broker.publish("q", msgs)

        async def worker(cancel: trio.CancelScope) -> None:
            with cancel:
                while True:
                    got = await broker.consume("q", limit)
                    async with trio.open_nursery() as nursery:
                        for d in got:
                            nursery.start_soon(broker.complete, d, b"result")

        received = 0
        cancel = trio.CancelScope()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(producer)
            nursery.start_soon(worker, cancel)
            while received < n:
                received += len(await broker.receive_replies("ch", 1000))
            cancel.cancel()
        elapsed = time.perf_counter() - start
        await broker.delete_queue("q")
        await broker.delete_channel("ch")
    return n / elapsed


async def broker_latency(rounds: int) -> list[float]:
    """Seconds per publish -> consume -> complete -> receive of one message."""
    prefix = f"wf-bench-{uuid.uuid4().hex}:"
    out = []
    async with redis_broker.open(f"{URL}?prefix={prefix}") as broker:
        await broker.declare_queue("q")

        async def worker() -> None:
            while True:
                for d in await broker.consume("q", 10):
                    await broker.complete(d, b"r")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker)
            await trio.sleep(0.05)
            for i in range(rounds):
                t = time.perf_counter()
                await broker.publish("q", [Message(f"m{i}", b"x", "ch")])
                await broker.receive_replies("ch", 10)
                out.append(time.perf_counter() - t)
            nursery.cancel_scope.cancel()
        await broker.delete_queue("q")
        await broker.delete_channel("ch")
    return out


async def raw_floor(n: int, rounds: int) -> tuple[float, list[float]]:
    """LPUSH (pipelined batches) / BLMPOP throughput and LPUSH+BRPOP latency."""
    parsed = parse_broker_url(URL)
    key = f"wf-bench-{uuid.uuid4().hex}:list"
    client = coredis.Redis(host=parsed.host, port=parsed.port or 6379, decode_responses=False)
    async with client:
        start = time.perf_counter()

        async def producer() -> None:
            for i in range(0, n, 500):
                await client.lpush(key, [b"x" * 64] * min(500, n - i))

        got = 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(producer)
            while got < n:
                r = await client.blmpop([key], 1, coredis.PureToken.RIGHT, count=1000)
                got += len(r[1]) if r else 0
        rate = n / (time.perf_counter() - start)
        lat = []
        for _ in range(rounds):
            t = time.perf_counter()
            await client.lpush(key, [b"x"])
            await client.brpop([key], timeout=1)
            lat.append(time.perf_counter() - t)
        await client.delete([key])
    return rate, lat


def _ms(xs: list[float], q: float) -> str:
    xs = sorted(xs)
    return f"{xs[min(len(xs) - 1, int(q * len(xs)))] * 1000:.3f} ms"


async def main(n: int) -> None:
    rate, lat = await raw_floor(n, 500)
    print(
        f"raw LPUSH/BLMPOP: {rate:,.0f} msgs/s; LPUSH+BRPOP p50 {_ms(lat, 0.5)} p99 {_ms(lat, 0.99)}"
    )
    rate = await broker_throughput(n)
    print(f"broker publish->consume->complete->receive: {rate:,.0f} msgs/s")
    lat = await broker_latency(500)
    print(
        f"broker single-message round trip: p50 {_ms(lat, 0.5)} p99 {_ms(lat, 0.99)} "
        f"(mean {statistics.mean(lat) * 1000:.3f} ms)"
    )
    rate, lat = await end_to_end(n, 300)
    print(f"runtime+worker map/collect: {rate:,.0f} jobs/s")
    print(f"runtime+worker one job (literal.then): p50 {_ms(lat, 0.5)} p99 {_ms(lat, 0.99)}")


async def _delete_prefix(prefix: str) -> None:
    parsed = parse_broker_url(URL)
    client = coredis.Redis(host=parsed.host, port=parsed.port or 6379, decode_responses=False)
    async with client:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(keys)


@attrs.frozen
class Inc(jobs.Operation[int, int], name="bench.redis-inc"):
    """An async no-op (plus one): runs on the worker's trio thread."""

    async def execute(self, x: int) -> int:
        return x + 1


async def end_to_end(n: int, rounds: int) -> tuple[float, list[float]]:
    """Jobs/s of map+collect and one-job latency: runtime and a Worker on two brokers."""
    prefix = f"wf-bench-{uuid.uuid4().hex}:"
    url = f"{URL}?prefix={prefix}"
    async with (
        redis_broker.open(url) as worker_broker,
        jobs.connect(url) as rt,
        trio.open_nursery() as nursery,
    ):
        worker = Worker(worker_broker, concurrency=256)
        await nursery.start(worker.serve)
        t = time.perf_counter()
        xs = await jobs.from_iter(range(n)).map(Inc()).collect().run(rt)
        rate = n / (time.perf_counter() - t)
        assert list(xs) == [x + 1 for x in range(n)]
        lat = []
        for i in range(rounds):
            t = time.perf_counter()
            await jobs.literal(i).then(Inc()).run(rt)
            lat.append(time.perf_counter() - t)
        worker.stop()
    await _delete_prefix(prefix)
    return rate, lat


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
