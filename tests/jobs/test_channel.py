"""The coordinated result channel: it ends exactly when closed and every job has its reply."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from wireframe import jobs
from wireframe.jobs.channel import ResultChannel


@pytest.fixture
async def broker() -> AsyncIterator[jobs.Broker]:
    async with jobs.open_broker(f"memory://channel-{uuid.uuid4().hex[:8]}") as b:
        yield b


async def answer(broker: jobs.Broker, channel: str, ids: list[str]) -> None:
    """Run messages ``ids`` through the queue so their replies land on ``channel``."""
    await broker.publish("q", [jobs.Message(i, b"", channel) for i in ids])
    for d in await broker.consume("q", len(ids)):
        await broker.complete(d, d.message.id.encode())


async def drain(ch: ResultChannel) -> list[str]:
    got: list[str] = []
    while (batch := await ch.receive()) is not None:
        got += [reply.message_id for reply, _ in batch]
    return got


async def test_zero_jobs_ends_at_once(broker: jobs.Broker) -> None:
    ch = ResultChannel(broker, "c0")
    ch.close()
    with trio.fail_after(1):
        assert await ch.receive() is None


async def test_close_while_waiting_with_nothing_pending(broker: jobs.Broker) -> None:
    ch = ResultChannel(broker, "c1")
    async with trio.open_nursery() as nursery:
        got: list[list[str]] = []

        async def receiver() -> None:
            got.append(await drain(ch))

        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()  # the receiver waits for a reply
        ch.close()
    assert got == [[]]


async def test_close_before_results(broker: jobs.Broker) -> None:
    ch = ResultChannel(broker, "c2")
    ch.expect([("a", 0), ("b", 1)])
    ch.close()
    await answer(broker, "c2", ["a", "b"])
    with trio.fail_after(1):
        assert sorted(await drain(ch)) == ["a", "b"]


async def test_results_after_close_and_tags(broker: jobs.Broker) -> None:
    ch = ResultChannel(broker, "c3")
    ch.expect([("a", "tag-a"), ("b", "tag-b")])
    await answer(broker, "c3", ["a"])
    batch = await ch.receive()
    assert batch is not None and [(r.message_id, t) for r, t in batch] == [("a", "tag-a")]
    ch.close()
    assert not ch.done
    await answer(broker, "c3", ["b"])
    with trio.fail_after(1):
        assert await drain(ch) == ["b"]
    assert ch.done
    with pytest.raises(RuntimeError, match="closed"):
        ch.expect([("c", 0)])


async def test_duplicate_reply_is_ignored(broker: jobs.Broker) -> None:
    ch = ResultChannel(broker, "c4")
    ch.expect([("a", 0), ("b", 1)])
    await answer(broker, "c4", ["a"])
    await answer(broker, "c4", ["a"])  # at-least-once: the same job answered twice
    await answer(broker, "c4", ["b"])
    ch.close()
    with trio.fail_after(1):
        assert await drain(ch) == ["a", "b"]
    assert ch.duplicates == 1
