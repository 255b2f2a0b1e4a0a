"""distributed: an orchestrator service on Redis, and ``wireframe worker`` processes doing the work.

The orchestrator is an ordinary service: a ``JobRuntimeLayer`` gives the job
``Runtime`` and ``PrimesLayer`` gives a Task that maps :class:`CountPrimes`
over ranges of numbers, folds the counts with :class:`Add` (on the workers
too), prints the total and returns — which stops the service. It runs no
worker itself: any number of worker processes, on any machines that reach
the same Redis, pick the jobs up. ``jobs.track`` reports the run's progress,
which ``wireframe run``'s live view draws as a bar (completed/total jobs, rate,
elapsed, ETA).

Run it (Redis at 127.0.0.1:6379)::

    # one terminal per worker, as many as you like, on any machine:
    wireframe worker --broker redis://127.0.0.1:6379/0 --import examples/distributed.py
    # then the orchestrator:
    wireframe run examples/distributed.py

``DISTRIBUTED_BROKER`` sets the broker URL (default ``redis://127.0.0.1:6379/0``);
``DISTRIBUTED_BROKER='memory://?workers=4'`` runs everything in one process.
``DISTRIBUTED_LIMIT`` (default 200000) and ``DISTRIBUTED_CHUNK`` (default 5000)
set the numbers counted and how many one job takes.
"""

from __future__ import annotations

import math
import os

import attrs

import wireframe as wf
from wireframe import jobs

DEFAULT_BROKER = "redis://127.0.0.1:6379/0"


def is_prime(n: int) -> bool:
    """Trial division: fine for the sizes of a demo."""
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    return all(n % d for d in range(3, math.isqrt(n) + 1, 2))


@attrs.frozen
class CountPrimes(jobs.Operation[tuple[int, int], int], name="distributed.count-primes"):
    """How many primes lie in ``[start, stop)``; runs in a worker thread."""

    def execute(self, bounds: tuple[int, int]) -> int:
        start, stop = bounds
        return sum(1 for n in range(start, stop) if is_prime(n))


@attrs.frozen
class Add(jobs.Monoid[int], name="distributed.add"):
    """Integer addition, the fold's combine."""

    def empty(self) -> int:
        return 0

    def combine(self, a: int, b: int) -> int:
        return a + b


@attrs.define
class CountPrimesTask(wf.Task):
    """Maps CountPrimes over chunks, folds with Add, prints the total, returns (stopping the run)."""

    runtime: jobs.Runtime
    limit: int
    chunk: int
    id = "count-primes"

    async def run(self, stop: wf.StopReceiver) -> None:
        chunks = [(a, min(a + self.chunk, self.limit)) for a in range(0, self.limit, self.chunk)]
        with stop.cancel_on_stop():  # Ctrl-C aborts the jobs still queued or running
            async with jobs.track(self.runtime, "primes"):  # a bar in the live view
                total = (
                    await jobs.from_iter(chunks)
                    .map(CountPrimes())
                    .fold(Add())
                    .run(self.runtime, timeout=300)
                )
            print(f"primes below {self.limit}: {total}", flush=True)


@attrs.frozen
class PrimesIn:
    runtime: jobs.Runtime


@attrs.frozen
class PrimesOut:
    task: CountPrimesTask


@attrs.frozen
class PrimesLayer(wf.WiringLayer[PrimesIn, PrimesOut]):
    """Takes the job runtime, gives the counting task."""

    limit: int = 200_000
    chunk: int = 5_000
    name = "primes"

    async def wire(self, input: PrimesIn) -> PrimesOut:
        return PrimesOut(CountPrimesTask(input.runtime, self.limit, self.chunk))


def make_builder() -> wf.ServiceBuilder:
    """The orchestrator: the job runtime on the broker, and the counting task."""
    env = os.environ
    return (
        wf.ServiceBuilder(graceful_shutdown_timeout=10.0)
        .add_layer(jobs.JobRuntimeLayer(env.get("DISTRIBUTED_BROKER", DEFAULT_BROKER)))
        .add_layer(
            PrimesLayer(
                int(env.get("DISTRIBUTED_LIMIT", "200000")),
                int(env.get("DISTRIBUTED_CHUNK", "5000")),
            )
        )
    )


#: For ``wireframe run examples/distributed.py``.
builder = make_builder()
