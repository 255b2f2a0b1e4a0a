"""Worker and orchestrator processes killed or frozen mid-run, on SQLite and on Redis.

* SIGKILL of worker processes during a run (three times, each replaced by a
  fresh ``wireframe worker``): the run completes exactly, no reply twice.
* SIGKILL of the orchestrator process mid-run, then the same script run again:
  the re-run completes exactly, no reply twice, the queue drains.
* SIGSTOP of a worker with jobs in flight, past its lease, then SIGCONT: its
  jobs ran elsewhere meanwhile, its stale completions are dropped (``LockLost``),
  no reply reaches the run twice, and the resumed worker serves again.

The worker that dies or freezes is one of two ``wireframe worker`` processes;
every case ends with the queue drained and a roll call of the live workers.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from chaos_harness import (
    LEASE,
    Scene,
    gated,
    open_runtime,
    open_scene,
    signal_and_wait,
    start_run,
    wait_drained,
)
from chaos_ops import Work, render

from wireframe import jobs

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

KINDS = ["sqlite", "redis"]


def work(scene: Scene, pause: float, tag: str = "") -> Work:
    """The logging operation of this scene."""
    return Work(log=str(scene.log.path), done_log=str(scene.done.path), pause=pause, tag=tag)


@pytest.mark.parametrize("kind", KINDS)
async def test_sigkilled_workers_lose_nothing(kind: str, tmp_path: Path) -> None:
    n, kills = 300, 3
    rng = random.Random(8)
    killed = trio.Condition()
    count = 0

    def released(kills_so_far: int) -> int:
        """How many inputs the source hands out after that many kills (all after the last)."""
        return (kills_so_far + 1) * n // (kills + 1)

    async def source() -> AsyncIterator[int]:
        # the run cannot end before the last kill, nor run dry before the next one
        for i in range(n):
            async with killed:
                while i >= released(count):
                    await killed.wait()
            yield i

    async def killer(scene: Scene) -> None:
        """Kill the busier worker while the last 10-40 released inputs still run; replace it."""
        nonlocal count
        for j in range(kills):
            before = Counter(scene.log.by_pid)
            at = released(j) - rng.randint(10, 40)
            await scene.log.wait_until(lambda log, at=at: log.total >= at)
            victim = max(
                scene.workers.children,
                key=lambda c, before=before: scene.log.by_pid[c.pid] - before[c.pid],
            )
            await scene.workers.kill(victim)
            async with killed:
                count += 1
                killed.notify_all()
            await scene.workers.start(1)

    with trio.fail_after(90):
        async with open_scene(tmp_path, kind) as scene, open_runtime(scene.url) as rt:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(killer, scene)
                op = work(scene, pause=0.02)
                values = await jobs.from_iter(source()).map(op).collect().run(rt)
            stats = await wait_drained(rt.broker)
            dead = await rt.broker.dead_letters()
            await scene.workers.roll_call(rt, tmp_path)
            duplicates = rt.duplicates

    assert count == kills
    assert values == [render(i) for i in range(n)]
    assert duplicates == 0
    assert dead == []
    assert [s.dead for s in stats] == [0] * len(stats)
    scene.log.poll()
    assert sorted(scene.log.by_index) == list(range(n)), "some input never ran"


@pytest.mark.parametrize("kind", KINDS)
async def test_sigkilled_orchestrator_reruns_to_completion(kind: str, tmp_path: Path) -> None:
    n = 300
    out = tmp_path / "result.json"

    def argv(tag: str) -> list[str]:
        return [scene.url, str(n), str(scene.log.path), str(out), tag]

    with trio.fail_after(90):
        async with open_scene(tmp_path, kind) as scene:
            first = await scene.procs.start_python(
                "chaos_orchestrator.py", *argv("killed"), name="orchestrator"
            )
            await scene.log.wait_until(lambda log: log.by_tag["killed"] >= 60)
            await scene.procs.kill(first)
            assert not out.exists()
            again = await scene.procs.start_python(
                "chaos_orchestrator.py", *argv("rerun"), name="orchestrator", expect_exit=True
            )
            code = await again.process.wait()
            assert code == 0, f"the re-run failed:\n{again.output_tail()}"
            async with open_runtime(scene.url) as rt:
                stats = await wait_drained(rt.broker)  # the killed run's jobs end too
                dead = await rt.broker.dead_letters()
                await scene.workers.roll_call(rt, tmp_path)

    result = json.loads(out.read_text())
    assert result["values"] == [render(i) for i in range(n)]
    assert result["duplicates"] == 0
    assert dead == []
    assert [s.dead for s in stats] == [0] * len(stats)


def sqlite_write_lock_free(db: Path) -> bool:
    """True unless some connection holds the database's write lock right now."""
    conn = sqlite3.connect(db, timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()


async def freeze_with_jobs_in_flight(scene: Scene, pid: int, kind: str) -> set[int]:
    """SIGSTOP worker ``pid`` at a moment it runs jobs; the inputs of those jobs.

    On SQLite a worker frozen inside a write transaction would hold the
    database's one write lock and stop everyone (a SQLite fact, not the case under
    test): such a moment is skipped, as is one where the worker runs nothing.
    """
    while True:
        await signal_and_wait(pid, signal.SIGSTOP, {"T"})
        scene.log.poll()
        scene.done.poll()
        started = {i for i, pids in scene.log.pids_of.items() if pid in pids}
        ended = {i for i, pids in scene.done.pids_of.items() if pid in pids}
        in_flight = started - ended
        if in_flight and (
            kind == "redis"
            or await trio.to_thread.run_sync(sqlite_write_lock_free, scene.tmp / "jobs.db")
        ):
            return in_flight
        await signal_and_wait(pid, signal.SIGCONT, {"S", "R"})
        await trio.sleep(0.01)  # let it run on a little before the next try


@pytest.mark.parametrize("kind", KINDS)
async def test_sigstopped_worker_past_its_lease_loses_nothing(kind: str, tmp_path: Path) -> None:
    n = 80
    with trio.fail_after(90):
        async with open_scene(tmp_path, kind) as scene, open_runtime(scene.url) as rt:
            frozen, _ = scene.workers.children
            gate = trio.Event()  # the second half waits until the frozen worker is back
            op = work(scene, pause=0.15)
            async with trio.open_nursery() as nursery:
                outcome = start_run(
                    nursery, jobs.from_iter(gated(n, n // 2, gate)).map(op).collect().run, rt
                )
                await scene.log.wait_until(lambda log: log.by_pid[frozen.pid] >= 4)
                in_flight = await freeze_with_jobs_in_flight(scene, frozen.pid, kind)

                # its leases run out and the other worker runs those jobs to the end
                def ran_elsewhere(done: object) -> bool:
                    return all(
                        any(p != frozen.pid for p in scene.done.pids_of[i]) for i in in_flight
                    )

                with trio.fail_after(5 * LEASE + 5):
                    await scene.done.wait_until(ran_elsewhere)
                await signal_and_wait(frozen.pid, signal.SIGCONT, {"S", "R"})
                scene.log.poll()
                seen = scene.log.by_pid[frozen.pid]
                gate.set()
                # the resumed worker takes new jobs: it serves again
                await scene.log.wait_until(lambda log: log.by_pid[frozen.pid] > seen)
            values = outcome.result()
            stats = await wait_drained(rt.broker)
            dead = await rt.broker.dead_letters()
            await scene.workers.roll_call(rt, tmp_path)
            duplicates = rt.duplicates

    assert values == [render(i) for i in range(n)]
    assert duplicates == 0, f"{duplicates} replies reached the run twice"
    assert dead == []
    assert [s.dead for s in stats] == [0] * len(stats)
