"""Where operations run (trio, thread, process), queues, statistics and the default URL."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import attrs
import pytest
import trio

from wireframe import jobs
from wireframe.jobs.operations import spec_of

PROBE: dict[str, int] = {"thread_cancelled": 0}


@attrs.frozen
class Pid(jobs.Operation[int, int], cpu_bound=True):
    """CPU-bound: runs in a trio-parallel worker process."""

    def execute(self, x: int) -> int:
        return os.getpid()


@attrs.frozen
class Where(jobs.Operation[int, str]):
    def execute(self, x: int) -> str:
        return "trio" if _on_trio() else "thread"


@attrs.frozen
class InlineWhere(jobs.Operation[int, str], executor="inline"):
    def execute(self, x: int) -> str:
        return "trio" if _on_trio() else "thread"


def _on_trio() -> bool:
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True


def test_executor_is_chosen_by_the_class() -> None:
    assert spec_of(Pid).executor == "process"
    assert spec_of(Where).executor == "thread"
    assert spec_of(InlineWhere).executor == "inline"
    assert spec_of(Upper).executor == "async"


def test_an_unknown_executor_is_refused_where_the_class_is_defined() -> None:
    with pytest.raises(jobs.OperationError, match=r"executor='procss'.*'thread', 'process'"):

        class Typo(jobs.Operation[int, int], executor="procss"):  # type: ignore[arg-type]
            def execute(self, x: int) -> int:
                return x

    assert "Typo" not in jobs.registered_operations()


async def test_sync_ops_run_in_a_thread_or_inline() -> None:
    async with jobs.connect(f"memory://exec-{uuid.uuid4().hex[:8]}?workers=1") as rt:
        assert await jobs.literal(0).then(Where()).run(rt) == "thread"
        assert await jobs.literal(0).then(InlineWhere()).run(rt) == "trio"


@pytest.mark.slow
async def test_cpu_bound_ops_run_in_another_process() -> None:
    async with jobs.connect(f"memory://exec-{uuid.uuid4().hex[:8]}?workers=1") as rt:
        pids = await jobs.from_iter(range(2)).map(Pid()).collect().run(rt, timeout=60)
    assert os.getpid() not in pids


CPU_SCRIPT = """
import attrs
import trio

from wireframe import jobs


@attrs.frozen
class Heavy(jobs.Operation[int, int], cpu_bound=True):
    def execute(self, x: int) -> int:
        return x * 2


async def main() -> None:
    async with jobs.connect("memory://?workers=1") as rt:
        print(await jobs.literal(3).then(Heavy()).run(rt, timeout=60))


{call}
"""


@pytest.mark.slow
@pytest.mark.parametrize("guarded", [False, True])
def test_a_cpu_bound_op_in_a_script_without_a_main_guard_says_why_it_fails(
    tmp_path: Path, guarded: bool
) -> None:
    """The process pool re-imports the main module: unguarded, it runs trio.run(main) again
    and the pool's process dies; the job's error says so and how to fix it."""
    call = 'if __name__ == "__main__":\n    trio.run(main)' if guarded else "trio.run(main)"
    (tmp_path / "heavy.py").write_text(CPU_SCRIPT.format(call=call))
    env = {**os.environ, "PYTHONPATH": str(Path(jobs.__file__).parents[2])}  # this wireframe
    done = subprocess.run(
        [sys.executable, "heavy.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    if guarded:
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "6"
        return
    assert done.returncode == 1
    out = done.stderr
    assert "the process running cpu_bound operation 'Heavy' died" in out
    assert f"re-import the main module ({tmp_path / 'heavy.py'})" in out
    assert 'guard that code with `if __name__ == "__main__":`' in out
    assert "move the operation into a module of its own" in out


@attrs.frozen
class BlockingInline(jobs.Operation[float, float], executor="inline"):
    """Holds the trio thread (time.sleep): what executor="inline" must not be used for."""

    def execute(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds


async def test_an_inline_op_that_blocks_the_loop_is_warned_about_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="wireframe.jobs.worker")
    async with jobs.connect(f"memory://exec-{uuid.uuid4().hex[:8]}?workers=1") as rt:
        got = await jobs.from_iter([0.15, 0.15]).map(BlockingInline()).collect().run(rt)
        assert got == [0.15, 0.15]
    (warning,) = [r.getMessage() for r in caplog.records if "ran inline" in r.getMessage()]
    assert "operation 'BlockingInline' ran inline on worker emulated-0 for 0." in warning
    assert "blocking the trio loop" in warning and "Ctrl-C" in warning
    assert 'give it executor="thread"' in warning


@attrs.frozen
class Spin(jobs.Operation[int, int]):
    """A sync op that notices an abort through trio.from_thread.check_cancelled()."""

    def execute(self, x: int) -> int:
        try:
            while True:
                trio.from_thread.check_cancelled()
                time.sleep(0.005)
        except trio.Cancelled:
            PROBE["thread_cancelled"] += 1
            raise


async def test_a_thread_op_is_cancelled_by_the_directive_timeout() -> None:
    async with jobs.connect(f"memory://exec-{uuid.uuid4().hex[:8]}?workers=1") as rt:
        with pytest.raises(trio.TooSlowError):
            await jobs.literal(1).then(Spin()).run(rt, timeout=0.2)
        with trio.fail_after(5):
            while PROBE["thread_cancelled"] == 0:
                await trio.sleep(0.01)


@attrs.frozen
class Upper(jobs.Operation[str, str]):
    async def execute(self, x: str) -> str:
        await trio.lowlevel.checkpoint()
        return x.upper()


async def test_queues_route_to_their_own_worker_pools() -> None:
    async with jobs.open_broker(f"memory://exec-{uuid.uuid4().hex[:8]}") as broker:
        rt = jobs.Runtime(broker)
        images = jobs.Worker(broker, queue="images", concurrency=2)
        default = jobs.Worker(broker, concurrency=2)
        async with trio.open_nursery() as nursery:
            await nursery.start(images.serve)
            await nursery.start(default.serve)
            assert await jobs.from_iter(["a", "b"]).map(Upper()).collect().run(
                rt, queue="images"
            ) == ["A", "B"]
            assert await jobs.literal("c").then(Upper()).run(rt) == "C"
            images.stop()
            default.stop()
        assert (images.statistics().done, default.statistics().done) == (2, 1)


async def test_runtime_stats_and_worker_statistics() -> None:
    async with jobs.open_broker(f"memory://exec-{uuid.uuid4().hex[:8]}") as broker:
        rt = jobs.Runtime(broker)
        worker = jobs.Worker(broker, concurrency=4)
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            await jobs.from_iter("abc").map(Upper()).collect().run(rt)
            stats = await rt.stats()
            worker.stop()
    (queue,) = stats.queues
    assert (queue.queue, queue.done, queue.queued, queue.running) == ("default", 3, 0, 0)
    assert (stats.runtime.jobs_sent, stats.runtime.results) == (3, 3)
    assert stats.runtime.runs_started == 1 and stats.runtime.runs_active == 0
    assert stats.results_per_second > 0
    counts = worker.statistics()
    assert (counts.done, counts.running, counts.failed, counts.peak_running) == (3, 0, 0, 3)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        counts.done = 0  # type: ignore[misc]  # a snapshot: nobody writes the worker's counts


async def test_connect_defaults_to_an_sqlite_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    async with jobs.connect(workers=1) as rt:
        assert rt.url.scheme == "sqlite"
        assert await jobs.literal("x").then(Upper()).run(rt, timeout=30) == "X"
    assert (tmp_path / "wireframe-jobs.db").exists()


@attrs.frozen
class Jitter(jobs.Operation[int, int]):
    async def execute(self, x: int) -> int:
        await trio.sleep((x % 7) * 0.003)
        return x


async def test_jobs_finishing_while_leases_are_renewed_are_not_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The lease keeper renews one lease at a time: a job that finishes meanwhile is no loss."""
    async with jobs.open_broker(f"sqlite:///{tmp_path}/jobs.db?lease=2") as broker:
        rt = jobs.Runtime(broker)
        worker = jobs.Worker(broker, concurrency=64, renew_every=0.01)
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            out = await jobs.from_iter(range(600)).map(Jitter()).collect().run(rt)
            worker.stop()
    assert out == list(range(600))
    counts = worker.statistics()
    assert (counts.lost, counts.cancelled) == (0, 0), counts
    assert "job cancelled" not in caplog.text
