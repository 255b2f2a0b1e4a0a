"""Benchmark: what telemetry costs the job path, and how fast ``/readyz`` answers.

Issue 13's targets: with telemetry not installed or not configured, the memory
and Redis job benchmarks within 3% of before it existed; configured with an SDK
exporting to an in-memory exporter, within 25%. ``/readyz`` in <= 5 ms with
1,000 tasks.

Rows (each a fresh subprocess; the modes alternate and repeat, medians shown):

* **before** — the same measurement on the commit before issue 13 (``--before
  REV``, default the first parent of the commit that added telemetry), checked
  out with ``git worktree`` into a temporary directory: "today's" figures.
* **off** — this tree, nothing installed (the hooks' ``is None`` checks).
* **on** — this tree with :class:`wireframe.telemetry.Telemetry` installed: an
  SDK ``TracerProvider`` with a ``SimpleSpanProcessor`` into an
  ``InMemorySpanExporter``, an SDK ``MeterProvider`` with an
  ``InMemoryMetricReader`` (a span and five metric updates per job).

The job measurement: N no-op jobs (``async def`` and plain ``def``) submitted
one by one with ``Runtime.submit`` from 64 concurrent tasks, each awaiting its
result, with one in-process ``Worker`` (so the worker's side is instrumented
too) on ``memory://`` and on Redis.

Usage: ``python bench/telemetry.py [--n 3000] [--repeat 3] [--redis URL]
[--before REV]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import attrs
import trio

import wireframe as wf

ROOT = Path(__file__).resolve().parents[1]


def measure(url: str, n: int, kind: str, telemetry: bool) -> float:
    """Jobs/s for n submitted no-op jobs through one in-process worker (run in a subprocess)."""
    import attrs
    import trio

    from wireframe import jobs
    from wireframe.jobs.broker import open_broker
    from wireframe.jobs.worker import Worker

    if telemetry:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        from wireframe.telemetry import instrument

        tracer = TracerProvider()
        tracer.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
        instrument(tracer_provider=tracer, meter_provider=MeterProvider([InMemoryMetricReader()]))

    @attrs.frozen
    class AsyncNoop(jobs.Operation[int, int], name="bench.telemetry.async"):
        async def execute(self, x: int) -> int:
            return x

    @attrs.frozen
    class DefNoop(jobs.Operation[int, int], name="bench.telemetry.def"):
        def execute(self, x: int) -> int:
            return x

    op: jobs.Operation[int, int] = AsyncNoop() if kind == "async" else DefNoop()

    async def main() -> float:
        async with open_broker(url) as broker, trio.open_nursery() as nursery:
            worker = Worker(broker, concurrency=64)
            await nursery.start(worker.serve)
            async with jobs.connect(url) as rt:
                todo = iter(range(n))

                async def submitter() -> None:
                    for x in todo:
                        handle = await rt.submit(op, x)
                        await handle.result()

                for warm in range(200):  # warm up: connections, scripts, caches
                    await (await rt.submit(op, warm)).result()
                started = time.perf_counter()
                async with trio.open_nursery() as clients:
                    for _ in range(64):
                        clients.start_soon(submitter)
                seconds = time.perf_counter() - started
            worker.stop()
            return n / seconds

    return trio.run(main)


def run_mode(tree: Path, url: str, n: int, kind: str, telemetry: bool) -> float:
    """:func:`measure` in a subprocess importing wireframe from ``tree``."""
    code = (
        "import sys, json; sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[2]);"
        "import telemetry as b;"
        "print(json.dumps(b.measure(sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6] == '1')))"
    )
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent), str(tree), url, str(n), kind,
         "1" if telemetry else "0"],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"measurement failed ({tree}, {url}): {done.stderr[-2000:]}")
    return float(json.loads(done.stdout.strip().splitlines()[-1]))


@attrs.frozen
class _Many:
    tasks: list[wf.Task]


@attrs.frozen
class _ManyLayer(wf.WiringLayer[None, _Many]):
    count: int
    name = "many"

    async def wire(self, input: None) -> _Many:
        made = []
        for i in range(self.count):

            @wf.task(kind=wf.TaskKind.TASK, id=f"t{i}")
            async def waits(stop: wf.StopReceiver) -> None:
                await stop.wait()

            made.append(waits)
        return _Many(made)


@attrs.frozen
class _EndpointIn:
    endpoint: wf.HealthEndpoint


@attrs.frozen
class _Probe(wf.WiringLayer[_EndpointIn, None]):
    found: list[int]
    name = "probe"

    async def wire(self, input: _EndpointIn) -> None:
        self.found.append(input.endpoint.port)


def readyz_latency(tasks: int = 1000, requests: int = 300) -> tuple[float, float]:
    """p50 and p99 milliseconds of GET /readyz with ``tasks`` running tasks (keep-alive)."""
    found: list[int] = []

    async def main() -> list[float]:
        builder = wf.ServiceBuilder(handle_signals=False)
        builder.add_layer(_ManyLayer(tasks)).add_layer(wf.HealthLayer(port=0))
        service = builder.add_layer(_Probe(found)).build()
        times: list[float] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(service.run)
            while service.phase != "running" or not found:
                await trio.sleep(0.01)
            stream = await trio.open_tcp_stream("127.0.0.1", found[0])
            request = b"GET /readyz HTTP/1.1\r\nhost: b\r\n\r\n"
            for _ in range(requests):
                started = time.perf_counter()
                await stream.send_all(request)
                data = b""
                while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
                    data += await stream.receive_some(65536)
                times.append((time.perf_counter() - started) * 1000)
                assert data.startswith(b"HTTP/1.1 200"), data[:200]
            await stream.aclose()
            service.stop()
        return times

    times = sorted(trio.run(main))
    return statistics.median(times), times[int(len(times) * 0.99) - 1]


def hook_cost_us(rounds: int = 200_000) -> float:
    """Microseconds per job that the hooks cost with nothing installed.

    What a job's path runs of them: the submit's context, the worker's two
    ``listener is None`` checks and the job's log record below its level.
    """
    from wireframe.jobs import instrument
    from wireframe.jobs.joblog import log_job_end

    assert instrument.listener is None
    started = time.perf_counter()
    for _ in range(rounds):
        with instrument.submitting("op", "q", "id") as metadata:
            assert metadata is None
        if instrument.listener is not None:
            raise AssertionError
        if instrument.listener is not None:
            raise AssertionError
        log_job_end(
            job_id="id", operation="op", queue="q", attempt=1, worker="w", outcome="completed"
        )
    return (time.perf_counter() - started) / rounds * 1e6


def before_tree(rev: str) -> Path:
    """A worktree of ``rev`` in a temporary directory (removed at exit by the caller)."""
    path = Path(tempfile.mkdtemp(prefix="wf-before-"))
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(path), rev],
        check=True, capture_output=True,
    )  # fmt: skip
    return path


def main() -> None:
    """Print both tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--redis", default=os.environ.get("WIREFRAME_BENCH_REDIS", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument("--before", default="9ec86fa", help="the commit before issue 13")
    args, _ = parser.parse_known_args()
    before = before_tree(args.before)
    offs: dict[tuple[str, str], float] = {}
    try:
        print(
            f"telemetry overhead: {args.n} submitted no-op jobs, 64 clients, one in-process worker"
        )
        print(
            f"{'broker':8} {'op':6} {'before':>9} {'off':>9} {'on':>9} {'off/before':>11} {'on/off':>8}"
        )
        for name, url in (
            ("memory", "memory://bench-telemetry"),
            ("redis", f"{args.redis}?prefix=wf-bench-telemetry:"),
        ):
            for kind in ("async", "def"):
                rates: dict[str, list[float]] = {"before": [], "off": [], "on": []}
                for _ in range(args.repeat):
                    rates["before"].append(run_mode(before, url, args.n, kind, False))
                    rates["off"].append(run_mode(ROOT, url, args.n, kind, False))
                    rates["on"].append(run_mode(ROOT, url, args.n, kind, True))
                b, off, on = (statistics.median(rates[m]) for m in ("before", "off", "on"))
                offs[(name, kind)] = off
                print(
                    f"{name:8} {kind:6} {b:9.0f} {off:9.0f} {on:9.0f} {off / b:11.2f} {on / off:8.2f}"
                )
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)], check=False
        )
    cost = hook_cost_us()
    off = offs[("memory", "async")]
    print(
        f"hooks with nothing installed: {cost:.2f} us per job "
        f"(a memory async no-op job takes {1e6 / off:.0f} us here: {cost * off / 1e4:.2f}%)"
    )
    p50, p99 = readyz_latency()
    print(f"GET /readyz with 1,000 tasks: p50 {p50:.2f} ms, p99 {p99:.2f} ms (target <= 5 ms)")


if __name__ == "__main__":
    main()
