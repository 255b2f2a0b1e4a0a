"""``background_tasks``: a nursery whose block's exception, or one task's, leaves bare."""

from __future__ import annotations

import pytest
import trio

from wireframe.service.background import background_tasks


async def test_the_block_s_exception_leaves_as_raised_and_cancels_the_tasks() -> None:
    cancelled = trio.Event()

    async def helper() -> None:
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    raised = KeyError("k")
    with pytest.raises(KeyError) as info:
        async with background_tasks() as nursery:
            nursery.start_soon(helper)
            await trio.lowlevel.checkpoint()
            raise raised
    assert info.value is raised
    assert cancelled.is_set()


async def test_a_lone_failing_task_leaves_bare_and_cancels_the_block() -> None:
    block_cancelled = False

    async def helper() -> None:
        raise ValueError("helper broke")

    with pytest.raises(ValueError, match="helper broke"):
        async with background_tasks() as nursery:
            nursery.start_soon(helper)
            try:
                await trio.sleep_forever()
            except trio.Cancelled:
                block_cancelled = True
                raise
    assert block_cancelled


async def test_two_genuine_failures_at_once_stay_a_group() -> None:
    async def helper() -> None:
        try:
            await trio.sleep_forever()
        finally:
            raise ValueError("helper broke on the way out")

    with pytest.raises(ExceptionGroup) as info:
        async with background_tasks() as nursery:
            nursery.start_soon(helper)
            await trio.lowlevel.checkpoint()
            raise KeyError("block broke")
    assert [type(e) for e in info.value.exceptions] == [KeyError, ValueError]


async def test_a_cancel_from_outside_ends_it_quietly() -> None:
    with trio.CancelScope() as scope:
        async with background_tasks() as nursery:
            nursery.start_soon(trio.sleep_forever)
            scope.cancel()
            await trio.sleep_forever()
    assert scope.cancelled_caught


async def test_a_normal_end_waits_for_the_tasks() -> None:
    stop = trio.Event()
    done: list[str] = []

    async def helper() -> None:
        await stop.wait()
        await trio.lowlevel.checkpoint()
        done.append("helper")

    async with background_tasks() as nursery:
        nursery.start_soon(helper)
        stop.set()
    assert done == ["helper"]
