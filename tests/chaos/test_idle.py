"""An idle worker outlives every backoff cap, then still runs a job (issue #8, fault 1).

A worker with nothing to do polls its broker with a growing pause; that pause
must stop growing at the ``poll`` option and the worker must idle for days. The
URL's ``poll`` is set tiny here, so thousands of idle polls pass in a second or
two instead of the hours a default worker would need. The polls are counted
on observable state, not assumed from elapsed time: for SQLite the worker
process's voluntary context switches (each idle poll sleeps at least once: about
two per poll, measured), for Redis the server's count of blocking reads (one per
idle poll; the server runs at ``hz 500`` so that a blocked read's 1 ms timeout
ends within milliseconds, not at the default 100 ms tick).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from chaos_harness import context_switches, open_runtime, open_scene, redis_count
from chaos_ops import Work, render

from wireframe import jobs

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

#: Idle polls the worker must survive: the SQLite backoff overflowed after ~1,034.
IDLE_POLLS = 2000


async def test_idle_sqlite_worker_outlives_its_backoff_cap(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with open_scene(tmp_path, "sqlite", workers=1, poll=0.0001) as scene:
            (worker,) = scene.workers.children
            base = context_switches(worker.pid)
            while context_switches(worker.pid) - base < 2 * IDLE_POLLS:
                await trio.sleep(0.05)  # the worker idles meanwhile: that is the test
            async with open_runtime(scene.url) as rt:
                assert await jobs.literal(7).then(Work()).run(rt) == render(7)
                await scene.workers.roll_call(rt, tmp_path)


async def test_idle_redis_worker_outlives_its_backoff_cap(tmp_path: Path) -> None:
    with trio.fail_after(60):
        redis_args = ["--hz", "500"]  # a blocked read's 1 ms timeout ends in ~2 ms, not 100
        async with open_scene(
            tmp_path, "redis", workers=1, redis_args=redis_args, poll=0.001
        ) as scene:
            assert scene.redis is not None
            port = scene.redis.port
            base = await redis_count(port, "commandstats", "cmdstat_xreadgroup", "calls")
            while (
                await redis_count(port, "commandstats", "cmdstat_xreadgroup", "calls") - base
                < IDLE_POLLS
            ):
                await trio.sleep(0.05)  # the worker idles meanwhile: that is the test
            async with open_runtime(scene.url) as rt:
                assert await jobs.literal(7).then(Work()).run(rt) == render(7)
                await scene.workers.roll_call(rt, tmp_path)
