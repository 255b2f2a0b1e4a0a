"""Broadcast on Redis pub/sub: reaches every live subscriber and keeps nothing behind.

A broadcast (an abort signal, say) is only useful to those listening now, so pub/sub
fits: ``PUBLISH`` to the topic's channel, and each subscription listens on a
connection of the subscriber client. coredis re-connects and re-subscribes on its
own after Redis went away (what was broadcast meanwhile is missed); its pub/sub needs
three workarounds, all in :mod:`.coredis_compat`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from wireframe.jobs.broker import BrokerError
from wireframe.jobs.brokers.redis import coredis_compat
from wireframe.jobs.brokers.redis.connection import Connection
from wireframe.jobs.brokers.redis.errors import is_failure, leaves
from wireframe.jobs.brokers.redis.keys import Keys

__all__ = ["Topics"]


class Topics:
    """Broadcast and subscribe under one broker's prefix."""

    def __init__(self, conn: Connection, keys: Keys) -> None:
        self._conn = conn
        self._keys = keys

    async def send(self, topic: str, body: bytes) -> None:
        """PUBLISH to the topic's pub/sub channel."""
        key = self._keys.topic(topic)
        client = self._conn.client
        await self._conn.call("broadcast", lambda: client.publish(key, body), resend=False)

    @asynccontextmanager
    async def subscribe(self, topic: str) -> AsyncIterator[AsyncIterator[bytes]]:
        """The subscription; errors leave bare (the block's own) or as BrokerErrors.

        coredis' subscriber re-connects and re-subscribes on its own after Redis
        went away (what was broadcast meanwhile is missed: pub/sub keeps nothing);
        it gives up only on errors waiting cannot mend, which end the block with
        their BrokerError.
        """
        conn = self._conn
        if conn.closed:
            raise BrokerError(f"redis broker {conn.url} is closed")
        key = self._keys.topic(topic)
        # coredis' subscriber retries a refused connection forever: make sure Redis
        # answers first, so that subscribing to a Redis that is gone fails in bounded time.
        await conn.call("subscribe", conn.client.ping, resend=True)
        own: BaseException | None = None  # what the block itself raised
        try:
            async with coredis_compat.subscription(conn.subscriber, key) as pubsub:
                try:
                    yield _Bodies(pubsub, f"redis broker {conn.url}: subscription to {topic!r}")
                except BaseException as exc:
                    own = exc
                    raise
        except BaseException as exc:
            errors = [e for e in leaves(exc) if not isinstance(e, trio.Cancelled)]
            if own is not None and any(e is own for e in errors):
                raise own from None  # the block's own error, not wrapped in a group
            if errors and is_failure(exc):
                raise conn.error(f"subscription to {topic!r}", exc) from exc
            raise


class _Bodies:
    """The message bodies of one pub/sub subscription, as an async iterator."""

    def __init__(self, pubsub: Any, what: str) -> None:
        self._pubsub = pubsub
        self._what = what

    def __aiter__(self) -> _Bodies:
        return self

    async def __anext__(self) -> bytes:
        try:
            body = await coredis_compat.next_message(self._pubsub)
        except Exception as exc:
            if not is_failure(exc):
                raise
            raise BrokerError(f"{self._what} failed: {exc!r}") from exc
        if body is None:
            raise StopAsyncIteration  # the subscription was closed
        return body
