"""Service lifecycle overhead against a bare trio nursery doing the same work.

A service of N trivial tasks (half of them gated on 10 preconditions) is
started, and we measure the time from ``run()`` to every task running, the
time from the stop to ``run()`` returning (also with the garbage collector
off, to tell collector pauses from framework work), and peak traced memory. Beside it,
in the same process, a bare nursery does the same: N tasks, half waiting for
10 "precondition" tasks, all parked on one event. The ratios are what matter:
the target is within 2x of the bare nursery for both times.

Usage: ``python bench/service_lifecycle.py [N ...]`` (default 1000 10000).
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable

import attrs
import trio
from rich.console import Console
from rich.table import Table

import wireframe as wf

PRECONDITIONS = 10
REPEATS = 7


@attrs.define
class Counter:
    target: int
    running: int = 0
    all_running: trio.Event = attrs.field(factory=trio.Event)

    def started(self) -> None:
        self.running += 1
        if self.running == self.target:
            self.all_running.set()


@attrs.define
class _Parked:
    """A trivial task body: count itself running, then park until the stop."""

    id: str
    counter: Counter

    async def run(self, stop: wf.StopReceiver) -> None:
        self.counter.started()
        await stop.wait()


@attrs.define
class Trivial(_Parked, wf.Task):
    """Gated on the preconditions."""


@attrs.define
class Free(_Parked, wf.UnconstrainedTask):
    """Starts at once."""


@attrs.define
class Ready(wf.Precondition):
    id: str

    async def run(self, stop: wf.StopReceiver) -> None:
        await trio.lowlevel.checkpoint()


@attrs.frozen
class BenchOut:
    tasks: list[wf.Task]


@attrs.frozen
class BenchLayer(wf.WiringLayer[None, BenchOut]):
    tasks: list[wf.Task]
    name = "bench"

    async def wire(self, input: None) -> BenchOut:
        return BenchOut(self.tasks)


async def wireframe_run(n: int) -> tuple[float, float]:
    counter = Counter(n)
    tasks: list[wf.Task] = [Ready(f"pre-{i}") for i in range(PRECONDITIONS)]  # type: ignore[misc]
    tasks += [Trivial(f"gated-{i}", counter) for i in range(n // 2)]
    tasks += [Free(f"free-{i}", counter) for i in range(n - n // 2)]  # type: ignore[misc]
    builder = wf.ServiceBuilder(handle_signals=False).add_layer(BenchLayer(tasks))
    service = builder.build()
    async with trio.open_nursery() as nursery:
        t0 = time.perf_counter()
        nursery.start_soon(service.run)
        await counter.all_running.wait()
        t1 = time.perf_counter()
        service.stop()
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1


async def bare_run(n: int) -> tuple[float, float]:
    counter = Counter(n)
    stop = trio.Event()
    barrier = trio.Event()
    remaining = PRECONDITIONS

    async def pre() -> None:
        nonlocal remaining
        await trio.lowlevel.checkpoint()
        remaining -= 1
        if remaining == 0:
            barrier.set()

    async def gated() -> None:
        await barrier.wait()
        counter.started()
        await stop.wait()

    async def free() -> None:
        counter.started()
        await stop.wait()

    async with trio.open_nursery() as outer:
        t0 = time.perf_counter()

        async def body() -> None:
            async with trio.open_nursery() as nursery:
                for _ in range(PRECONDITIONS):
                    nursery.start_soon(pre)
                for _ in range(n // 2):
                    nursery.start_soon(gated)
                for _ in range(n - n // 2):
                    nursery.start_soon(free)

        outer.start_soon(body)
        await counter.all_running.wait()
        t1 = time.perf_counter()
        stop.set()
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def peak_mib(fn: Callable[[int], Awaitable[tuple[float, float]]], n: int) -> float:
    gc.collect()
    tracemalloc.start()
    trio.run(fn, n)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def measure(n: int) -> dict[str, tuple[float, float, float, float]]:
    """Median start and stop times, stop time with the garbage collector off, and peak
    memory; the contenders interleaved per repeat so a busy machine hits both alike."""
    contenders = {"bare nursery": bare_run, "wireframe": wireframe_run}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
    quiet: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(REPEATS):
        for name, fn in contenders.items():
            gc.collect()
            times[name].append(trio.run(fn, n))
            gc.collect()
            gc.disable()
            try:
                quiet[name].append(trio.run(fn, n)[1])
            finally:
                gc.enable()
    return {
        name: (
            statistics.median(t[0] for t in times[name]),
            statistics.median(t[1] for t in times[name]),
            statistics.median(quiet[name]),
            peak_mib(contenders[name], n),
        )
        for name in contenders
    }


def main(sizes: list[int]) -> None:
    table = Table(title=f"service lifecycle vs bare trio nursery (median of {REPEATS})")
    columns = ("N", "what", "run -> all running", "stop -> returned", "stop, GC off", "memory")
    for col in columns:
        table.add_column(col, justify="right")
    for n in sizes:
        results = measure(n)
        b, w = results["bare nursery"], results["wireframe"]
        for label, r in (("bare nursery", b), ("wireframe", w)):
            ms = [f"{x * 1e3:.1f} ms" for x in r[:3]]
            table.add_row(str(n), label, *ms, f"{r[3]:.1f} MiB")
        ratios = [f"{wx / bx:.2f}x" for wx, bx in zip(w, b, strict=True)]
        table.add_row(
            str(n),
            "[bold]ratio[/bold]",
            *(f"[bold]{r}[/bold]" for r in ratios[:2]),
            *ratios[2:],
            end_section=True,
        )
    Console().print(table)
    print(
        "target: within 2x of the bare nursery for both times. 'stop, GC off' repeats the\n"
        "stop with the garbage collector disabled: the gap between the two stop columns is\n"
        "collector work (one full collection of the heap costs tens of ms at N=10,000)."
    )


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1000, 10000])
