"""Micro-benchmark of the memory broker alone: publish -> consume -> complete -> replies.

Not part of ``nox -s bench`` (leading underscore). Pushes N messages through
``publish`` (batches) -> ``consume(limit=100)`` by W consumer tasks ->
``complete`` -> ``receive_replies`` on one trio thread and prints messages/s.
"""

from __future__ import annotations

import sys
import time

import trio

from wireframe.jobs.broker import Message
from wireframe.jobs.brokers.memory import open as open_memory


async def run(total: int, batch: int, consumers: int) -> tuple[float, float]:
    """Push ``total`` messages through; messages per wall second and per CPU second."""
    async with open_memory("memory://micro-bench") as broker:
        await broker.declare_queue("jobs")
        got = 0
        done = trio.Event()
        started = time.perf_counter()
        cpu_started = time.process_time()

        async def publisher() -> None:
            for start in range(0, total, batch):
                await broker.publish(
                    "jobs",
                    [Message(f"m{i}", b"x" * 32, "results") for i in range(start, start + batch)],
                )

        async def consumer() -> None:
            while True:
                for delivery in await broker.consume("jobs", 100):
                    await broker.complete(delivery, b"result")

        async def receiver() -> None:
            nonlocal got
            while got < total:
                got += len(await broker.receive_replies("results", 1000))
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receiver)
            for _ in range(consumers):
                nursery.start_soon(consumer)
            nursery.start_soon(publisher)
            await done.wait()
            nursery.cancel_scope.cancel()
        return (
            total / (time.perf_counter() - started),
            total / (time.process_time() - cpu_started),
        )


def main() -> None:
    """Run the benchmark a few times and print the rates."""
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    for consumers in (1, 4):
        rates = [trio.run(run, total, 100, consumers) for _ in range(3)]
        wall = max(r[0] for r in rates)
        cpu = max(r[1] for r in rates)
        print(
            f"{total} msgs, {consumers} consumers: best {wall:,.0f} msgs/s wall, "
            f"{cpu:,.0f} msgs/CPU-s"
        )


if __name__ == "__main__":
    main()
