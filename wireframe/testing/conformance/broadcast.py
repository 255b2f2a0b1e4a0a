"""The broadcast conformance: a broadcast reaches every subscriber of its topic, and no other."""

from __future__ import annotations

import trio

from wireframe.jobs.broker import Broker
from wireframe.testing import UrlFactory
from wireframe.testing.conformance.base import (
    ConformanceBase,
)

__all__ = ["BroadcastConformance"]


class BroadcastConformance(ConformanceBase):
    """The broadcast role: topics every subscriber hears."""

    async def test_broadcast_reaches_every_subscriber(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        url = make_url()
        async with self.open(url) as a, self.open(url) as b:
            await a.broadcast("abort", b"before anyone listens")
            received: dict[str, list[bytes]] = {"a1": [], "a2": [], "b": [], "other": []}
            done = {key: trio.Event() for key in received}

            async def listen(
                broker: Broker,
                topic: str,
                key: str,
                *,
                task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
            ) -> None:
                async with broker.subscribe(topic) as bodies:
                    task_status.started()
                    async for body in bodies:
                        received[key].append(body)
                        if len(received[key]) == 2:
                            done[key].set()

            async with trio.open_nursery() as nursery:
                await nursery.start(listen, a, "abort", "a1")
                await nursery.start(listen, a, "abort", "a2")
                await nursery.start(listen, b, "abort", "b")
                await nursery.start(listen, b, "other", "other")
                await a.broadcast("abort", b"one")
                await b.broadcast("abort", b"two")
                with trio.fail_after(self.patience):
                    for key in ("a1", "a2", "b"):
                        await done[key].wait()
                nursery.cancel_scope.cancel()
            for key in ("a1", "a2", "b"):
                assert sorted(received[key]) == [b"one", b"two"], (key, received)
            assert received["other"] == [], "a topic's broadcast reached another topic"
