"""Benchmark: no-op jobs through map+collect on ``memory://?workers=4``, against a trio floor.

Rows, all measured in this one run:

* **floor** — a bare trio memory-channel ping-pong (two tasks, two unbuffered
  channels), N round trips: the cost of moving one message there and back
  inside trio, nothing else.
* **async no-op, collect** — ``from_iter(range(N)).map(Inc()).collect()`` where
  ``Inc.execute`` is ``async def`` (runs on trio, no thread hop).
* **async no-op, stream** — the same through ``Map.stream``; per-job latency is
  from the moment the source yields the item to the moment its result arrives
  (it includes queueing behind the in-flight window, i.e. latency under load).
* **one job at a time** — ``literal(x).then(Inc())`` awaited in sequence:
  unloaded round-trip latency.
* **sync no-op (thread)** — ``SyncInc.execute`` is a plain ``def``: each job
  runs on the worker's job threads (:mod:`wireframe.jobs.threads`; N/5 jobs).

Usage: ``python bench/jobs_memory.py [N]`` (or env ``WIREFRAME_BENCH_N``);
default N = 100,000. Targets (issue 3): >= 30,000 jobs/s end to end, within 10x
of the floor.
"""

from __future__ import annotations

import os
import sys
import time

import attrs
import trio

from wireframe import jobs


@attrs.frozen
class Inc(jobs.Operation[int, int], name="bench.inc"):
    """An async no-op (plus one): runs on the worker's trio thread."""

    async def execute(self, x: int) -> int:
        return x + 1


@attrs.frozen
class SyncInc(jobs.Operation[int, int], name="bench.sync-inc"):
    """A sync no-op (plus one): runs in a worker thread."""

    def execute(self, x: int) -> int:
        return x + 1


async def floor(n: int) -> float:
    """Seconds for n ping-pong round trips over unbuffered trio memory channels."""
    a_send, a_recv = trio.open_memory_channel[int](0)
    b_send, b_recv = trio.open_memory_channel[int](0)

    async def echo() -> None:
        async for m in a_recv:
            await b_send.send(m + 1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(echo)
        t0 = time.perf_counter()
        for i in range(n):
            await a_send.send(i)
            assert await b_recv.receive() == i + 1
        elapsed = time.perf_counter() - t0
        await a_send.aclose()
    return elapsed


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) of values, in microseconds."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))] * 1e6


async def bench(n: int) -> list[tuple[str, int, float, str, str]]:
    rows: list[tuple[str, int, float, str, str]] = []
    dt = await floor(n)
    rows.append(("floor: trio channel ping-pong", n, n / dt, f"{dt / n * 1e6:.1f}", "-"))
    floor_rate = n / dt

    async with jobs.connect("memory://bench?workers=4") as rt:
        t0 = time.perf_counter()
        out = await jobs.from_iter(range(n)).map(Inc()).collect().run(rt)
        dt = time.perf_counter() - t0
        assert out[-1] == n and len(out) == n
        rows.append(("async no-op, map+collect", n, n / dt, "-", "-"))
        collect_rate = n / dt

        fed: list[float] = [0.0] * n
        lat: list[float] = []

        def source():  # type: ignore[no-untyped-def]
            clock = time.perf_counter
            for i in range(n):
                fed[i] = clock()
                yield i

        t0 = time.perf_counter()
        async with jobs.from_iter(source()).map(Inc()).stream(rt) as results:
            async for item in results:
                lat.append(time.perf_counter() - fed[item.index])
        dt = time.perf_counter() - t0
        rows.append(
            ("async no-op, map stream", n, n / dt, f"{pct(lat, 50):.0f}", f"{pct(lat, 99):.0f}")
        )

        k = min(n, 2000)
        one: list[float] = []
        t0 = time.perf_counter()
        for i in range(k):
            t = time.perf_counter()
            await jobs.literal(i).then(Inc()).run(rt)
            one.append(time.perf_counter() - t)
        dt = time.perf_counter() - t0
        rows.append(
            ("one job at a time (then)", k, k / dt, f"{pct(one, 50):.0f}", f"{pct(one, 99):.0f}")
        )

        m = max(n // 5, 1)
        t0 = time.perf_counter()
        out = await jobs.from_iter(range(m)).map(SyncInc()).collect().run(rt)
        dt = time.perf_counter() - t0
        sync_rate = m / dt
        rows.append(("sync no-op (thread), map+collect", m, sync_rate, "-", "-"))

    print(f"\nwireframe jobs on memory://?workers=4 — trio {trio.__version__}, N={n:,}\n")
    header = f"{'row':<36} {'jobs':>9} {'per s':>11} {'p50 us':>9} {'p99 us':>9}"
    print(header)
    print("-" * len(header))
    for name, count, rate, p50, p99 in rows:
        print(f"{name:<36} {count:>9,} {rate:>11,.0f} {p50:>9} {p99:>9}")
    ratio = floor_rate / collect_rate
    print(
        f"\nmap+collect: {collect_rate:,.0f} jobs/s, {ratio:.1f}x the floor's time per message "
        f"(target: >= 30,000 jobs/s and within 10x) -> "
        f"{'OK' if collect_rate >= 30_000 and ratio <= 10 else 'BELOW TARGET'}"
    )
    sync_ratio = floor_rate / sync_rate
    print(
        f"plain def map+collect: {sync_rate:,.0f} jobs/s, {sync_ratio:.1f}x the floor's time "
        f"(issue 11 target: >= 30,000 jobs/s and within 4x) -> "
        f"{'OK' if sync_rate >= 30_000 and sync_ratio <= 4 else 'BELOW TARGET'}"
    )
    return rows


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ.get("WIREFRAME_BENCH_N", 100_000))
    trio.run(bench, n)


if __name__ == "__main__":
    main()
