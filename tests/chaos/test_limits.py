"""Limits hold across worker processes: three ``wireframe worker`` processes on one broker.

A ``concurrency_limit=2`` operation never runs more than two jobs at once in
all three workers together (each could run four), and a ``rate_limit="10/s"``
one starts a burst of ten and then ten a second. A worker whose queue is held
back by a limit sleeps: its CPU time while it waits is measured, not assumed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
from chaos_harness import open_runtime, open_scene
from chaos_ops import TenPerSecond, TwoAtOnce

from wireframe import jobs

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

KINDS = ["sqlite", "redis"]


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The most of ``spans`` (start, end) that overlap at one instant."""
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds process ``pid`` has used."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("kind", KINDS)
async def test_a_concurrency_limit_holds_across_worker_processes(kind: str, tmp_path: Path) -> None:
    log = tmp_path / "spans.log"
    with trio.fail_after(60):
        async with open_scene(tmp_path, kind, workers=3) as scene, open_runtime(scene.url) as rt:
            op = TwoAtOnce(str(log), pause=0.1)
            assert await jobs.from_iter(range(24)).map(op).collect().run(rt) == list(range(24))
    spans = [
        (float(a), float(b)) for _, a, b in (line.split() for line in log.read_text().splitlines())
    ]
    assert len(spans) == 24
    assert most_at_once(spans) == 2, f"{most_at_once(spans)} ran at once under a limit of 2"


@pytest.mark.parametrize("kind", KINDS)
async def test_a_rate_limit_holds_across_worker_processes(kind: str, tmp_path: Path) -> None:
    log = tmp_path / "starts.log"
    with trio.fail_after(60):
        async with open_scene(tmp_path, kind, workers=3) as scene, open_runtime(scene.url) as rt:
            op = TenPerSecond(str(log))
            assert await jobs.from_iter(range(30)).map(op).collect().run(rt) == list(range(30))
    starts = sorted(float(line.split()[1]) for line in log.read_text().splitlines())
    assert len(starts) == 30
    # a burst of ten, then twenty more at ten a second: two seconds at least
    assert starts[-1] - starts[0] >= 1.9, (
        f"30 jobs at 10/s started within {starts[-1] - starts[0]:.2f} s"
    )
    for i in range(10, 30):  # never more than 10 + 10/s * elapsed started so far
        allowed = 10 + 10 * (starts[i] - starts[0]) + 1.0  # a token of slack for clocks
        assert i + 1 <= allowed, f"job {i + 1} started {starts[i] - starts[0]:.2f} s in"


@pytest.mark.parametrize("kind", KINDS)
async def test_a_worker_held_back_by_a_limit_sleeps(kind: str, tmp_path: Path) -> None:
    log = tmp_path / "spans.log"
    with trio.fail_after(60):
        async with open_scene(tmp_path, kind, workers=2) as scene, open_runtime(scene.url) as rt:
            handles = [await rt.submit(TwoAtOnce(str(log), pause=4.0), i) for i in range(6)]
            await trio.sleep(1.0)  # two run, four are held back
            pids = scene.workers.pids
            before = {pid: cpu_seconds(pid) for pid in pids}
            await trio.sleep(2.0)
            used = {pid: cpu_seconds(pid) - before[pid] for pid in pids}
            stats = {s.queue: s for s in await rt.broker.stats()}["default"]
            assert (stats.running, stats.held) == (2, 4), stats
            for h in handles:
                await h.abort()
    assert all(seconds < 0.2 for seconds in used.values()), (
        f"held-back workers used {used} CPU s in 2 s"
    )
