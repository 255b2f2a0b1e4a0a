"""Worker middleware: around every job, in order, seeing its outcome; a raising one fails the job."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest
import trio

import wireframe as wf
from wireframe import jobs


@attrs.frozen
class Twice(jobs.Operation[int, int], name="middleware-twice"):
    async def execute(self, x: int) -> int:
        if x < 0:
            raise ValueError(f"negative: {x}")
        return 2 * x


@attrs.frozen
class PlainTwice(jobs.Operation[int, int], name="middleware-plain-twice"):
    def execute(self, x: int) -> int:
        return 2 * x


def recorder(name: str, seen: list[tuple[object, ...]]) -> jobs.Middleware:
    @contextlib.asynccontextmanager
    async def middleware(job: jobs.JobContext) -> AsyncIterator[None]:
        seen.append((name, "enter", job.operation, job.input, job.attempt, job.queue))
        try:
            yield
        finally:
            outcome = job.outcome.value if job.outcome else None
            seen.append((name, "exit", outcome, job.result, type(job.error).__name__))

    return middleware


@contextlib.asynccontextmanager
async def explodes_on_entry(job: jobs.JobContext) -> AsyncIterator[None]:
    if job.input == 13:
        raise RuntimeError("tenant unknown")
    yield


async def serve_and_run(
    url: str,
    middleware: list[jobs.Middleware],
    submit: list[tuple[jobs.Operation[int, int], int]],
) -> list[object]:
    builder = wf.ServiceBuilder(handle_signals=False, graceful_shutdown_timeout=5)
    builder.add_layer(jobs.WorkerLayer(url, concurrency=1, middleware=middleware))
    service = builder.build()
    outcomes: list[object] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(service.run)
        async with jobs.connect(url) as rt:
            with trio.fail_after(20):
                for op, x in submit:
                    handle = await rt.submit(op, x)
                    try:
                        outcomes.append(await handle.result())
                    except jobs.JobFailed as exc:
                        outcomes.append(exc)
        service.stop()
    return outcomes


async def test_middleware_wraps_each_job_in_order_and_sees_the_outcome(tmp_path: Path) -> None:
    seen: list[tuple[object, ...]] = []
    url = f"sqlite:///{tmp_path / 'mw.db'}"
    outcomes = await serve_and_run(
        url,
        [recorder("outer", seen), recorder("inner", seen)],
        [(Twice(), 3), (Twice(), -1), (PlainTwice(), 5)],
    )
    assert outcomes[0] == 6 and outcomes[2] == 10
    assert isinstance(outcomes[1], jobs.JobFailed) and "negative: -1" in str(outcomes[1])
    assert seen[:4] == [
        ("outer", "enter", "middleware-twice", 3, 1, "default"),
        ("inner", "enter", "middleware-twice", 3, 1, "default"),
        ("inner", "exit", "completed", 6, "NoneType"),
        ("outer", "exit", "completed", 6, "NoneType"),
    ]
    assert ("inner", "exit", "failed", None, "ValueError") in seen
    assert ("outer", "exit", "completed", 10, "NoneType") in seen  # a plain def op too


async def test_a_middleware_that_raises_fails_the_job_naming_it_and_the_worker_goes_on(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'mw.db'}"
    outcomes = await serve_and_run(url, [explodes_on_entry], [(Twice(), 13), (Twice(), 4)])
    failed = outcomes[0]
    assert isinstance(failed, jobs.JobFailed)
    assert "MiddlewareError" in str(failed)
    assert "explodes_on_entry raised RuntimeError: tenant unknown" in str(failed)
    assert outcomes[1] == 8


async def test_a_middleware_raising_on_exit_is_named_too(tmp_path: Path) -> None:
    @contextlib.asynccontextmanager
    async def audit(job: jobs.JobContext) -> AsyncIterator[None]:
        yield
        raise OSError("audit log is full")

    url = f"sqlite:///{tmp_path / 'mw.db'}"
    [failed] = await serve_and_run(url, [audit], [(Twice(), 1)])
    assert isinstance(failed, jobs.JobFailed)
    assert "audit raised OSError: audit log is full" in str(failed)


def test_the_layer_keeps_middleware_as_a_tuple() -> None:
    layer = jobs.WorkerLayer("memory://", middleware=[explodes_on_entry])
    assert layer.middleware == (explodes_on_entry,)


async def test_run_through_reraises_the_job_error_unchanged() -> None:
    from wireframe.jobs.middleware import run_through

    @contextlib.asynccontextmanager
    async def passes(job: jobs.JobContext) -> AsyncIterator[None]:
        yield

    job = jobs.JobContext("j", "op", "q", 1, None, "w", {})

    async def boom() -> None:
        raise KeyError("the job's own")

    with pytest.raises(KeyError, match="the job's own"):
        await run_through([passes], job, boom)
    assert job.outcome is jobs.JobOutcome.FAILED
