"""The reply channels' conformance: each reply taken once, and run channels that die with their run.

What :class:`~wireframe.jobs.broker.ReplyChannels` promises: replies kept in
arrival order until one receiver takes each, and a run channel that, once
closed or not kept alive, drops its late replies and settles its jobs.
"""

from __future__ import annotations

import pytest
import trio

from wireframe.jobs.broker import Broker, ChannelLost, Reply
from wireframe.testing import UrlFactory
from wireframe.testing.conformance.base import (
    ConformanceBase,
    ids_of,
    make_messages,
)

__all__ = ["ReplyChannelConformance"]


class ReplyChannelConformance(ConformanceBase):
    """The reply channels role: replies, and the liveness of run channels."""

    # -- result channels --------------------------------------------------------------
    async def test_replies_are_kept_until_taken_in_arrival_order(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as broker:
            await broker.publish("q", make_messages([f"m{i}" for i in range(5)], reply_to="ch"))
            await broker.publish("q", make_messages(["silent"], reply_to="ch"))
            await broker.publish("q", make_messages(["nobody"]))
            for d in await self.take(broker, "q", 5):
                await broker.complete(d, d.message.id.encode() if d.message.id != "m0" else b"")
            await broker.complete(await self.take_one(broker, "q"), None)  # posts nothing
            await broker.complete(await self.take_one(broker, "q"), b"to nobody")
            got = await self.replies(broker, "ch", 5, limit=3)
            assert got == [Reply("m0", body=b"")] + [
                Reply(f"m{i}", body=f"m{i}".encode()) for i in range(1, 5)
            ]
            assert not got[0].is_dead and got[0].body == b""
            await self.assert_no_reply(broker, "ch", 0.1)

    async def test_receive_replies_blocks_until_a_reply_arrives(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as broker:
            got: list[Reply] = []
            arrived = trio.Event()

            async def receiver() -> None:
                got.extend(await broker.receive_replies("ch", 10))
                arrived.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(receiver)
                with trio.move_on_after(0.2):
                    await arrived.wait()
                assert not arrived.is_set(), f"receive_replies returned {got} on an empty channel"
                await broker.publish("q", make_messages(["m"], reply_to="ch"))
                await broker.complete(await self.take_one(broker, "q"), b"r")
                with trio.fail_after(self.patience):
                    await arrived.wait()
            assert got == [Reply("m", body=b"r")]

    async def test_receive_replies_is_cancellable_and_loses_nothing(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as broker:
            with trio.move_on_after(0.1) as scope:
                await broker.receive_replies("ch", 1)
            assert scope.cancelled_caught
            async with trio.open_nursery() as nursery:
                nursery.start_soon(broker.receive_replies, "ch", 1)
                await trio.sleep(0.05)
                nursery.cancel_scope.cancel()
            await broker.publish("q", make_messages(["m"], reply_to="ch"))
            await broker.complete(await self.take_one(broker, "q"), b"r")
            assert await self.replies(broker, "ch", 1) == [Reply("m", body=b"r")]

    async def test_each_reply_is_taken_by_one_receiver(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        url = make_url()
        ids = [f"m{i:02}" for i in range(30)]
        async with self.open(url) as a, self.open(url) as b:
            taken: list[str] = []
            all_taken = trio.Event()

            async def receiver(broker: Broker) -> None:
                while True:
                    for reply in await broker.receive_replies("ch", 4):
                        taken.append(reply.message_id)
                        if len(set(taken)) == len(ids):
                            all_taken.set()

            async with trio.open_nursery() as nursery:
                for broker in (a, b, a, b):
                    nursery.start_soon(receiver, broker)
                await a.publish("q", make_messages(ids, reply_to="ch"))
                for d in await self.take(a, "q", len(ids), limit=7):
                    await a.complete(d, b"r")
                with trio.fail_after(self.patience):
                    await all_taken.wait()
                nursery.cancel_scope.cancel()
            twice = sorted({i for i in taken if taken.count(i) > 1})
            assert sorted(taken) == ids, f"each reply must be taken by one call; twice: {twice}"

    async def test_delete_channel(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as broker:
            await broker.publish("q", make_messages(["m", "n"], reply_to="ch"))
            await broker.complete(await self.take_one(broker, "q"), b"dropped")
            await broker.delete_channel("ch")
            await broker.delete_channel("never-used")
            await self.assert_no_reply(broker, "ch", 0.1)
            await broker.complete(await self.take_one(broker, "q"), b"kept")
            assert await self.replies(broker, "ch", 1) == [Reply("n", body=b"kept")]

    # -- run channels -------------------------------------------------------------------
    async def test_closed_channel_drops_late_replies_and_settles_its_jobs(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as broker:
            await broker.open_channel("run", 60.0)
            await broker.publish("q", make_messages(["running", "queued"], reply_to="run"))
            running = await self.take_one(broker, "q")
            await broker.complete(await self.take_one(broker, "q"), b"before the close")
            await broker.close_channel("run")
            await broker.complete(running, b"after the close")  # its lease still holds
            await self.assert_no_reply(broker, "run", 0.1)
            await broker.publish("q", make_messages(["orphan"], reply_to="run"))
            await self.assert_no_delivery(broker, "q", 0.2)
            with pytest.raises(ChannelLost):
                await broker.keep_channel("run", 60.0)
            (stats,) = [s for s in await broker.stats() if s.queue == "q"]
            assert (stats.queued, stats.running, stats.done) == (0, 0, 3)

    async def test_channel_not_kept_alive_dies(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        ttl = self.lease
        async with self.open(make_url()) as broker:
            await broker.open_channel("kept", ttl)
            await broker.open_channel("left", ttl)
            await broker.publish("q", make_messages(["to-left"], reply_to="left"))
            await broker.complete(await self.take_one(broker, "q"), b"waiting in left")
            await broker.publish("q", make_messages(["orphan"], reply_to="left"))
            await broker.publish("q", make_messages(["alive"], reply_to="kept"))
            for _ in range(12):  # 3 ttl in all; "kept" renewed every quarter of its ttl
                await broker.keep_channel("kept", ttl)
                await self.pass_time(ttl / 4)
            with pytest.raises(ChannelLost, match="'left'"):
                await broker.keep_channel("left", ttl)
            assert ids_of([await self.take_one(broker, "q")]) == ["alive"]
            await self.assert_no_delivery(broker, "q", 0.1)
            assert await broker.purge() >= 1, "purge left the dead channel's reply"
            await self.assert_no_reply(broker, "left", 0.1)

    async def test_keep_channel_of_an_unknown_channel_raises_channel_lost(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as broker:
            with pytest.raises(ChannelLost) as info:
                await broker.keep_channel("never-opened", 30.0)
            assert info.value.channel == "never-opened"
            assert "no record" in str(info.value)
            await broker.open_channel("opened", 30.0)
            await broker.delete_channel("opened")  # forgotten, as a broker that lost its data
            with pytest.raises(ChannelLost):
                await broker.keep_channel("opened", 30.0)
