"""What every role's conformance class shares: the fixtures, the helpers, and two hooks.

:class:`ConformanceBase` holds the ``broker_url``, ``broker_clock`` and
``make_url`` fixtures (see :mod:`wireframe.testing.conformance`), the helpers
the tests wait with (each within ``patience``), and two hooks a broker's test
class may override:

* :meth:`ConformanceBase.open` — how a test opens a broker on a URL:
  :func:`~wireframe.jobs.broker.open_broker` unless overridden (to pass a
  broker a clock of the test's, say);
* :meth:`ConformanceBase.pass_time` — how a test lets time pass on the broker's
  clock where nothing needs to happen meanwhile (a lease running out, a
  heartbeat going stale): it sleeps, unless overridden to move a clock the
  broker was opened with (:class:`~wireframe.testing.OffsetClock`), so a
  wall-clock broker skips the wait. Waits that check a broker *wakes up* when
  time comes (a blocked ``consume`` seeing a lease run out) or that nothing
  happens within a window still take real time on such a broker.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager

import pytest
import trio

from wireframe.jobs.broker import (
    Broker,
    DeadLetter,
    Delivery,
    Message,
    QueueStats,
    Reply,
    open_broker,
)
from wireframe.testing import UrlFactory, with_options

__all__ = ["ConformanceBase", "ids_of", "make_messages", "stats_by_queue"]


def make_messages(ids: Sequence[str], reply_to: str = "") -> list[Message]:
    """A message per id, with a body naming it."""
    return [Message(i, f"body of {i}".encode(), reply_to) for i in ids]


def ids_of(deliveries: Sequence[Delivery]) -> list[str]:
    """The message ids of ``deliveries``, in order."""
    return [d.message.id for d in deliveries]


def stats_by_queue(stats: Sequence[QueueStats]) -> dict[str, QueueStats]:
    """``stats`` by queue name."""
    return {s.queue: s for s in stats}


@pytest.mark.trio
class ConformanceBase:
    """Fixtures, helpers and hooks of the role classes; it holds no test itself.

    Subclasses must provide ``broker_url``; see the package docstring for the
    fixtures and how time is handled.
    """

    #: Lease (seconds) of the tests that wait for a lease to run out.
    lease: float = 0.3
    #: How long to wait (seconds) for something that must happen before failing.
    patience: float = 10.0

    # -- fixtures -----------------------------------------------------------------
    @pytest.fixture
    def broker_url(self) -> str:
        """A fresh, isolated broker URL per test: subclasses must override this."""
        raise NotImplementedError(
            f"{type(self).__name__} must define a `broker_url` fixture returning a fresh URL"
        )

    @pytest.fixture
    def broker_clock(self) -> trio.abc.Clock | None:
        """The clock the tests run under: None is trio's real clock."""
        return None

    @pytest.fixture
    def make_url(self, broker_url: str) -> UrlFactory:
        """The test's URL with a given ``lease`` and ``max_deliveries``."""

        def make(*, lease: float | None = None, max_deliveries: int | None = None) -> str:
            return with_options(broker_url, lease=lease, max_deliveries=max_deliveries)

        return make

    # -- hooks --------------------------------------------------------------------
    def open(self, url: str) -> AbstractAsyncContextManager[Broker]:
        """Open a broker on ``url``; every test opens its brokers through this.

        :func:`~wireframe.jobs.broker.open_broker` by default. Brokers one test
        opens on one URL share a store, as two processes would.
        """
        return open_broker(url)

    async def pass_time(self, seconds: float) -> None:
        """Let ``seconds`` pass on the broker's clock: sleep (on the test's trio clock).

        Override it, with :meth:`open`, to move a clock the brokers were opened
        with instead (and then checkpoint): the tests call it only where
        nothing has to happen in the meantime.
        """
        await trio.sleep(seconds)

    # -- helpers ----------------------------------------------------------------------
    async def take(
        self, broker: Broker, queue: str, n: int, limit: int | None = None
    ) -> list[Delivery]:
        """Consume exactly ``n`` deliveries (calls of at most ``limit``), within patience."""
        out: list[Delivery] = []
        with trio.fail_after(self.patience):
            while len(out) < n:
                want = min(limit or n, n - len(out))
                batch = await broker.consume(queue, want)
                assert batch, "consume returned an empty list; it must block instead"
                assert len(batch) <= want, f"consume(limit={want}) returned {len(batch)}"
                out += batch
        return out

    async def take_one(self, broker: Broker, queue: str) -> Delivery:
        """Consume one delivery within patience."""
        return (await self.take(broker, queue, 1))[0]

    async def replies(self, broker: Broker, channel: str, n: int, limit: int = 100) -> list[Reply]:
        """Receive exactly ``n`` replies within patience."""
        out: list[Reply] = []
        with trio.fail_after(self.patience):
            while len(out) < n:
                batch = await broker.receive_replies(channel, limit)
                assert batch, "receive_replies returned an empty list; it must block instead"
                assert len(batch) <= limit, f"receive_replies(limit={limit}) gave {len(batch)}"
                out += batch
        assert len(out) == n, f"expected {n} replies, got {out}"
        return out

    async def assert_no_delivery(self, broker: Broker, queue: str, within: float) -> None:
        """Nothing can be consumed from ``queue`` for ``within`` seconds."""
        with trio.move_on_after(within) as scope:
            got = await broker.consume(queue, 100)
        assert scope.cancelled_caught, f"expected nothing on {queue!r}, got {got}"

    async def assert_no_delivery_until(self, broker: Broker, queue: str, deadline: float) -> None:
        """Nothing can be consumed from ``queue`` until trio's clock reads ``deadline``.

        On a machine so slow that the deadline has passed already, checks nothing.
        """
        window = deadline - trio.current_time()
        if window > 0:
            await self.assert_no_delivery(broker, queue, window)

    async def wait_dead(self, broker: Broker, queue: str, n: int) -> list[DeadLetter]:
        """Keep a consumer on ``queue`` (which must get nothing) until ``n`` dead letters.

        This is how a message over ``max_deliveries`` dies: a consume finds it.
        """

        async def consume_nothing() -> None:
            got = await broker.consume(queue, 100)
            raise AssertionError(f"expected no delivery on {queue!r}, got {got}")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume_nothing)
            with trio.fail_after(self.patience):
                while len(dead := await broker.dead_letters(queue)) < n:
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
        assert len(dead) == n, dead
        return dead

    async def assert_no_reply(self, broker: Broker, channel: str, within: float) -> None:
        """Nothing arrives on ``channel`` for ``within`` seconds."""
        with trio.move_on_after(within) as scope:
            got = await broker.receive_replies(channel, 100)
        assert scope.cancelled_caught, f"expected no reply on {channel!r}, got {got}"
