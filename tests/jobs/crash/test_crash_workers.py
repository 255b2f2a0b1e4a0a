"""Worker processes SIGKILLed at random points lose no job and duplicate no result.

For each durable broker (SQLite, Redis) the test process is the orchestrator:
it runs ``from_iter(range(1000)).map(Work).fold(Concat)`` — 1,000 map jobs and
999 combine jobs, with an associative, non-commutative monoid — while two
worker *processes* execute them. A killer SIGKILLs a worker at a random point
(after k more executions, k random in 1..40, the worker that ran most of them —
so it holds leases on jobs mid-run) and starts a replacement, 40 times. The
workers are forked from a warm zygote process (``crash_worker.py --zygote``), so
a replacement serves within milliseconds and the test stays short. The lease is
1 s, so a dead worker's jobs come back quickly; ``max_deliveries`` is 50.

So that the run cannot end before :data:`KILLS` kills, the source is gated:
input ``i`` is handed to the map only after ``(i + 1) * KILLS // N`` kills. (After
each kill some 50 released inputs have not run yet — and the runtime publishes
a waiting source's items within 5 ms — so the killer's k <= 40 executions always
come and the two waits never block each other.)

Proven: the fold equals the local computation (a lost, doubled or reordered
value would change the string); afterwards no job is queued or leased and none
is dead; the execution log shows at-least-once execution (every input ran, some
more than once) while every result counted exactly once.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path

import pytest
import trio
from crash_harness import ExecutionLog, Zygote, open_processes
from crash_ops import Concat, Work, expected_fold

from wireframe import jobs

N = 1000
KILLS = 20
WORKERS = 2
CONCURRENCY = 8
#: The killer stops here, so the run's length stays bounded.
MAX_KILLS = 40


class KillCount:
    """How many workers were killed so far, with a wait for a count."""

    def __init__(self) -> None:
        self.value = 0
        self._changed = trio.Event()

    def bump(self) -> None:
        """One more kill."""
        self.value += 1
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, n: int) -> None:
        """Return once at least ``n`` kills happened."""
        while self.value < n:
            await self._changed.wait()


async def kill_workers(
    zygote: Zygote, log: ExecutionLog, kills: KillCount, rng: random.Random
) -> None:
    """After k more executions (k random in 1..40), SIGKILL the worker that ran the
    most of them and fork a replacement; stop after :data:`MAX_KILLS`."""
    while kills.value < MAX_KILLS:
        k = rng.randint(1, 40)
        log.poll()
        base_total = log.total
        base = Counter(log.by_pid)
        await log.wait_until(lambda log, b=base_total, k=k: log.total - b >= k)
        zygote.check_alive()
        victim = max(zygote.alive, key=lambda pid: log.by_pid[pid] - base[pid])
        zygote.kill(victim)
        kills.bump()
        await zygote.fork()


@pytest.mark.slow
async def test_sigkilled_workers_lose_nothing_and_duplicate_nothing(
    crash_url: str, tmp_path: Path
) -> None:
    log_path = tmp_path / "executions.log"
    log = ExecutionLog(log_path)
    kills = KillCount()
    rng = random.Random(20)
    started = time.monotonic()

    async def gated() -> object:
        for i in range(N):
            await kills.wait_for((i + 1) * KILLS // N)
            yield i

    with trio.fail_after(90):
        async with open_processes(tmp_path) as procs:
            zygote = Zygote(procs, crash_url, CONCURRENCY)
            await zygote.start()
            for _ in range(WORKERS):
                await zygote.fork()
            async with jobs.connect(crash_url) as rt:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(kill_workers, zygote, log, kills, rng)
                    work = Work(log=str(log_path), pause=0.005)
                    result = await jobs.from_iter(gated()).map(work).fold(Concat()).run(rt)
                    nursery.cancel_scope.cancel()
                stats = await rt.broker.stats()
                dead = await rt.broker.dead_letters()
            zygote.check_alive()
            killed = zygote.kills

    assert result == expected_fold(N)
    assert killed >= KILLS
    assert [(s.queued, s.running, s.dead) for s in stats] == [(0, 0, 0)] * len(stats)
    assert dead == []
    log.poll()
    assert sorted(log.by_index) == list(range(N)), "some input never ran"
    reruns = sum(1 for c in log.by_index.values() if c > 1)
    assert log.total >= N and reruns > 0, "no job ran twice: the kills hit nothing"
    print(
        f"{crash_url.split(':')[0]}: {killed} worker kills, {log.total} executions of {N} jobs "
        f"({reruns} ran more than once), {time.monotonic() - started:.1f} s"
    )
