"""Orchestrations survive their workers dying: SIGKILLs while 50 five-step chains run.

Three ``wireframe worker`` processes import :mod:`chaos_durable_ops` (so each
runs the activity and the orchestrator); one of them is SIGKILLed and replaced
twenty times while 50 instances run, on SQLite and on Redis. Every instance must complete with the
exact output, none may be left behind, and each activity's result must be in
its instance's history once, whatever ran twice.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
import trio
from chaos_durable_ops import STEPS, ChainInput, chain
from chaos_harness import HERE, READY, open_scene, wireframe_argv
from procs import Child

from wireframe import durable, jobs
from wireframe.durable import history as h

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

INSTANCES, KILLS, WORKERS = 50, 20, 3
OPS = HERE / "chaos_durable_ops.py"


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_sigkilled_workers_leave_no_orchestration_behind(kind: str, tmp_path: Path) -> None:
    rng = random.Random(12)
    log = tmp_path / "steps.log"
    async with open_scene(tmp_path, kind, workers=0) as scene:
        argv = [*wireframe_argv(), "worker", "--broker", scene.url, "--import", str(OPS)]
        argv += ["--concurrency", "4", "--plain"]

        async def start_worker() -> None:
            child = await scene.procs.start(argv, name="worker", ready_marker=READY)
            await child.ready.wait()
            alive.append(child)

        alive: list[Child] = []
        for _ in range(WORKERS):
            await start_worker()
        async with jobs.open_broker(scene.url) as broker:
            client = durable.Client(broker)
            ids = [
                await client.start(chain, ChainInput(i * 100, str(log)), instance_id=f"chain-{i}")
                for i in range(INSTANCES)
            ]
            busy = []  # per kill: how many instances were unfinished when it struck
            for _ in range(KILLS):
                await trio.sleep(rng.uniform(0.05, 0.3))
                running = await client.list(durable.Status.RUNNING, INSTANCES)
                busy.append(len(running) + len(await client.list(durable.Status.PENDING, 99)))
                victim = alive.pop(rng.randrange(len(alive)))
                await scene.procs.kill(victim)
                await start_worker()
            finished = [await client.wait_completed(iid, timeout=180) for iid in ids]
            histories = [await client.history(iid) for iid in ids]
        for child in alive:
            assert child.running, child.output_tail()
    for i, (inst, history) in enumerate(zip(finished, histories, strict=True)):
        assert inst.status is durable.Status.COMPLETED, (inst.id, inst.error)
        assert inst.output == i * 100 + STEPS, inst
        completed = Counter(e.action for e in history if isinstance(e, h.TaskCompleted))
        assert len(completed) == STEPS and set(completed.values()) == {1}, (inst.id, completed)
    assert sum(1 for b in busy if b) >= KILLS * 3 // 4, f"most kills struck idle workers: {busy}"
    ran = Counter(line.split()[0] for line in log.read_text().splitlines())
    assert len(ran) == INSTANCES * STEPS, "every step ran at least once"
