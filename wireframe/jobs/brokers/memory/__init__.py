"""``memory://`` — the whole Broker protocol inside one process, on trio's clock.

For tests, demos and the emulated workers of ``memory://?workers=N``. Leases and
delays are measured with ``trio.current_time()``, so trio's ``MockClock`` drives
them in tests. Nothing survives the process.

URL: ``memory://`` or ``memory://NAME`` with the common options ``lease`` and
``max_deliveries`` plus ``workers`` (emulated workers the job runtime starts; the
broker itself ignores it). Brokers opened with the same NAME while another one
is open share their queues, channels and topics (a refcounted registry): a
runtime and a worker in one service see the same messages. When the last broker
of a NAME closes, its state is dropped.

The package: :mod:`.state` holds what brokers of one name share (queues,
channels, workers, the registry), :mod:`.broker` the Broker protocol's methods
on it, :mod:`.limits` the rate and concurrency limits ``consume`` keeps. Everything is O(batch); a message that becomes visible again (lease
expired, abandoned, delay over, requeued) joins the back of its queue. Run
channels are a dict of deadlines and workers a dict of heartbeats; a message
replying to a dead run channel is settled when it reaches the head of its queue.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Final

import trio

from wireframe.jobs.broker import BrokerURL, BrokerURLError, count_option, parse_broker_url
from wireframe.jobs.brokers.memory.broker import MemoryBroker
from wireframe.jobs.brokers.memory.state import REGISTRY, State

__all__ = ["MEMORY_OPTIONS", "MemoryBroker", "open", "parse_memory_url"]

#: Options ``memory://`` accepts beyond the common ones, as ``(converter, default)``.
MEMORY_OPTIONS: Final[Mapping[str, tuple[Callable[[str], object], object]]] = {
    "workers": (count_option("workers", minimum=0), 0)
}


def parse_memory_url(url: str) -> BrokerURL:
    """Parse and check a ``memory://[NAME][?options]`` URL."""
    parsed = parse_broker_url(url, MEMORY_OPTIONS)
    if parsed.scheme != "memory":
        raise BrokerURLError(f"broker URL {parsed}: the memory broker takes memory:// URLs")
    if (
        parsed.port is not None
        or parsed.username is not None
        or parsed.password is not None
        or parsed.path not in ("", "/")
    ):
        raise BrokerURLError(
            f"broker URL {parsed}: a memory:// URL is memory://NAME[?options], "
            "with no port, user, password or path"
        )
    return parsed


# --------------------------------------------------------------------------------
# Shared state


@asynccontextmanager
async def _open(url: str) -> AsyncIterator[MemoryBroker]:
    parsed = parse_memory_url(url)
    state = REGISTRY.get(parsed.host)
    if state is None:
        state = REGISTRY[parsed.host] = State()
    state.refs += 1
    broker = MemoryBroker(parsed, state)
    try:
        await trio.lowlevel.checkpoint()
        yield broker
    finally:
        await broker.aclose()


def open(url: str, *, create: bool = True) -> AbstractAsyncContextManager[MemoryBroker]:
    """Open a memory broker: ``async with open("memory://name?lease=5") as broker``.

    Brokers of the same name share state while any of them is open. ``create``
    is accepted for :func:`~wireframe.jobs.broker.open_broker` and ignored:
    nothing outlives the process.
    """
    return _open(url)
