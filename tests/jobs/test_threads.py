"""The worker's job threads: plain def calls handed over and back in batches."""

from __future__ import annotations

import contextvars
import inspect
import threading
import time

import pytest
import trio

from wireframe.jobs.threads import JobThreads, open_job_threads

_where: contextvars.ContextVar[str] = contextvars.ContextVar("_where", default="unset")


def _pool_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("wireframe-job-")]


async def test_results_and_exceptions_come_back_and_threads_end_with_the_block() -> None:
    async with open_job_threads(4) as pool:
        results: dict[int, int] = {}

        async def one(i: int) -> None:
            results[i] = await pool.run(lambda: i * 2)

        async with trio.open_nursery() as nursery:
            for i in range(200):
                nursery.start_soon(one, i)
        assert results == {i: i * 2 for i in range(200)}
        with pytest.raises(ZeroDivisionError):
            await pool.run(lambda: 1 / 0)
        assert 1 <= pool.started <= 4
        assert all(t.ident != threading.get_ident() for t in _pool_threads())
    assert _pool_threads() == [], "a job thread outlived its pool"


async def test_a_blocking_job_does_not_hold_back_quick_ones_while_a_thread_is_free() -> None:
    release = threading.Event()
    async with open_job_threads(2) as pool, trio.open_nursery() as nursery:
        nursery.start_soon(pool.run, lambda: release.wait(10))
        await trio.sleep(0.05)
        with trio.fail_after(5):
            assert await pool.run(lambda: "quick") == "quick"
        release.set()


async def test_a_job_cancelled_before_it_starts_never_runs() -> None:
    release = threading.Event()
    ran: list[str] = []
    async with open_job_threads(1) as pool:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pool.run, lambda: release.wait(10))
            await trio.sleep(0.05)
            with trio.move_on_after(0.05) as scope:
                await pool.run(lambda: ran.append("queued"))
            assert scope.cancelled_caught
            release.set()
        assert await pool.run(lambda: "after") == "after"
    assert ran == []


async def test_a_running_job_is_waited_for_and_may_notice_the_cancel() -> None:
    started = threading.Event()
    seen: list[str] = []

    def cooperative() -> None:
        started.set()
        for _ in range(1000):
            try:
                trio.from_thread.check_cancelled()
            except trio.Cancelled:
                seen.append("cancelled")
                raise
            time.sleep(0.005)

    async with open_job_threads(2) as pool:
        with trio.move_on_after(5) as outer:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pool.run, cooperative)
                await trio.to_thread.run_sync(started.wait)
                nursery.cancel_scope.cancel()
        assert not outer.cancelled_caught
    assert seen == ["cancelled"]


async def test_a_job_can_call_back_into_trio_and_sees_the_callers_context() -> None:
    _where.set("caller")
    async with open_job_threads(2) as pool:
        got = await pool.run(lambda: (_where.get(), trio.from_thread.run_sync(lambda: 42)))
    assert got == ("caller", 42)


async def test_the_pool_refuses_nonsense_and_runs_after_close_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1 thread"):
        JobThreads(0, trio.lowlevel.current_trio_token())
    async with open_job_threads(1) as pool:
        pass
    with pytest.raises(RuntimeError, match="closed"):
        await pool.run(lambda: None)


def test_trio_still_keeps_its_thread_data_where_the_pool_fills_it() -> None:
    """The pool fills trio's private per-thread data (see threads._trio_thread_data):
    if this fails after a trio upgrade, follow trio.to_thread.run_sync's new code."""
    from trio import _threads

    assert isinstance(_threads.PARENT_TASK_DATA, threading.local)
    filled = inspect.getsource(_threads.to_thread_run_sync)
    for name in ("token", "abandon_on_cancel", "cancel_register", "task_register"):
        assert f"PARENT_TASK_DATA.{name} = " in filled, name
