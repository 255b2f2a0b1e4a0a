"""Reply channels: receiving replies without losing one to a cancellation, and run channel records.

Replies go to a list per channel (``P c:C``). When replies are waiting, one script
call (``RECEIVE``) takes them. Otherwise the wait is a cancellable ``BLMOVE`` of one
reply from the channel into an inbox list of this wait's own (``P c:C:inbox:...``),
handed out at once. A wait cancelled just as Redis moved a reply leaves it in its
inbox; :class:`Inboxes` remembers every inbox, and the next call on the channel
deletes those whose reply was handed out and drains the others: no reply is lost,
none is handed out twice, and concurrent receivers each wait on their own inbox.

A run channel is also *recorded* as live until a deadline (open, keep, close), so
that the queue scripts can settle the jobs of runs that are gone; see
:mod:`.scripts.channels` for the keys.

A malformed reply (written by something else) is skipped with a log line, or, when
its message id is readable, handed out as a dead reply saying so - so that no job
waits for it forever.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import msgpack

from wireframe.jobs.broker import DEAD_CHANNEL_RETENTION, BrokerError, ChannelLost, Reply
from wireframe.jobs.brokers.redis.connection import Arg, Connection
from wireframe.jobs.brokers.redis.keys import Keys
from wireframe.jobs.brokers.redis.scripts import channels as scripts
from wireframe.jobs.brokers.redis.values import as_bytes, ms, text

__all__ = ["Channels", "Inboxes", "parse_replies"]

_log = logging.getLogger("wireframe.jobs.brokers.redis")

#: Longest a reply wait blocks server-side before it is renewed.
_REPLY_BLOCK = 5
#: Most replies one receive takes server-side per call.
_MAX_BATCH = 10_000


def parse_replies(channel: str, raws: Sequence[Any]) -> list[Reply]:
    """The replies in ``raws``; a malformed one becomes a dead reply saying so if its
    message id is readable (nobody waits for it forever), else it is logged and skipped."""
    out = []
    for raw in raws:
        try:
            item = msgpack.unpackb(as_bytes(raw), raw=True)
        except Exception as exc:  # any bytes at all may be there
            item, why = None, f"it is not msgpack ({type(exc).__name__}: {exc})"
        else:
            why = "it is not [message id, kind 0 or 1, payload]"
        if (
            isinstance(item, list)
            and len(item) == 3
            and isinstance(item[0], bytes)
            and item[1] in (0, 1)
            and isinstance(item[2], bytes)
        ):
            mid, kind, payload = item
            if kind == 1:
                out.append(Reply(message_id=text(mid), dead_reason=text(payload)))
            else:
                out.append(Reply(message_id=text(mid), body=payload))
        elif isinstance(item, list) and item and isinstance(item[0], bytes):
            reason = f"its reply in Redis (channel {channel!r}) was malformed: {why}"
            out.append(Reply(message_id=text(item[0]), dead_reason=reason))
        else:
            _log.warning(
                "redis broker: skipped a malformed reply on channel %r: %s: %r",
                channel,
                why,
                as_bytes(raw)[:80],
            )
    return out


class Inboxes:
    """One receiver's inbox lists, per channel: to delete, or to drain.

    An inbox whose reply was handed out is only to be deleted; one of a wait that
    ended otherwise (cancelled, failed, or a call whose answer was lost) may hold a
    reply, so the next call drains it.
    """

    def __init__(self, keys: Keys, consumer: str) -> None:
        self._keys = keys
        self._consumer = consumer
        self._drop: dict[str, list[str]] = {}
        self._drain: dict[str, list[str]] = {}
        #: How many inboxes this receiver named so far.
        self.seq = 0

    def new(self, channel: str) -> str:
        """The key of a new inbox on ``channel``."""
        self.seq += 1
        return self._keys.inbox(channel, self._consumer, self.seq)

    def take(self, channel: str) -> tuple[list[str], list[str]]:
        """The inboxes of ``channel`` to delete and to drain, forgotten here."""
        return self._drop.pop(channel, []), self._drain.pop(channel, [])

    def to_delete(self, channel: str, inboxes: Sequence[str]) -> None:
        """Remember ``inboxes`` of ``channel`` for deleting."""
        self._drop.setdefault(channel, []).extend(inboxes)

    def to_drain(self, channel: str, inboxes: Sequence[str]) -> None:
        """Remember ``inboxes`` of ``channel`` for draining."""
        self._drain.setdefault(channel, []).extend(inboxes)

    def all_of(self, channel: str) -> list[str]:
        """Every inbox of ``channel``, forgotten here (the channel is closed or deleted)."""
        drop, drain = self.take(channel)
        return drop + drain


class Channels:
    """One broker's reply channels: receive, and the run channel records (see the module doc)."""

    def __init__(self, conn: Connection, keys: Keys, consumer: str) -> None:
        self._conn = conn
        self._keys = keys
        self.inboxes = Inboxes(keys, consumer)
        self._receive = conn.script(scripts.RECEIVE)
        self._open = conn.script(scripts.OPEN_CHANNEL)
        self._keep = conn.script(scripts.KEEP_CHANNEL)
        self._close = conn.script(scripts.CLOSE_CHANNEL)
        self._delete = conn.script(scripts.DELETE_CHANNEL)

    async def receive(self, channel: str, limit: int) -> list[Reply]:
        """Take up to ``limit`` replies; wait for one if none; a cancelled call loses none."""
        if limit < 1:
            raise BrokerError(f"redis broker: receive limit must be at least 1, not {limit}")
        key = self._keys.channel(channel)
        while True:
            taken = await self._take(channel, key, limit)
            if taken:
                replies = parse_replies(channel, taken)
                if replies:
                    return replies
                continue
            moved = await self._wait(channel, key)
            if moved is not None and (replies := parse_replies(channel, [moved])):
                return replies

    async def _take(self, channel: str, key: str, limit: int) -> list[Any]:
        """What is waiting (up to ``limit``), and what the inboxes to drain held."""
        drop, drain = self.inboxes.take(channel)
        args: list[Arg] = [len(drop), min(limit, _MAX_BATCH)]
        # What the script takes it also keeps in a landing inbox (deleted by the
        # next call): a repeat after a lost answer drains it, so it may resend.
        landing = self.inboxes.new(channel)
        try:
            taken: list[Any] = await self._conn.run(
                "receive_replies", self._receive, [key, *drop, *drain, landing], args, resend=True
            )
        except BaseException:
            # not run, or outcome unknown: deleting or draining again is harmless
            self.inboxes.to_delete(channel, drop)
            self.inboxes.to_drain(channel, [*drain, landing])
            raise
        if taken:
            self.inboxes.to_delete(channel, [landing])
        return taken

    async def _wait(self, channel: str, key: str) -> Any:
        """Wait (a while) for one reply, moved into an inbox of this wait's own; None if none."""
        inbox = self.inboxes.new(channel)
        moved = None
        try:
            moved = await self._conn.block(
                "receive_replies", b"BLMOVE", key, inbox, "RIGHT", "LEFT", _REPLY_BLOCK
            )
        finally:
            # a reply handed out leaves an inbox to delete; any other ending may
            # have left one in it (cancelled as Redis answered): drain it later
            if moved is not None:
                self.inboxes.to_delete(channel, [inbox])
            else:
                self.inboxes.to_drain(channel, [inbox])
        return moved

    def _channel_keys(self, channel: str) -> list[str]:
        """The channel's record set, its reply list and this broker's inboxes of it."""
        return [self._keys.channels, self._keys.channel(channel), *self.inboxes.all_of(channel)]

    async def delete(self, channel: str) -> None:
        """Delete the channel's list, its record (and this broker's inboxes of it)."""
        keys = self._channel_keys(channel)
        await self._conn.run("delete_channel", self._delete, keys, [channel], resend=True)

    async def open(self, channel: str, ttl: float) -> None:
        """Record ``channel`` as live for ``ttl`` seconds."""
        args: list[Arg] = [channel, ms(ttl), ms(DEAD_CHANNEL_RETENTION), self._keys.prefix]
        keys = [self._keys.channels]
        await self._conn.run("open_channel", self._open, keys, args, resend=True)

    async def keep(self, channel: str, ttl: float) -> None:
        """Keep ``channel`` live for ``ttl`` more seconds; :class:`ChannelLost` if it is not."""
        args: list[Arg] = [channel, ms(ttl)]
        keys = [self._keys.channels]
        outcome = text(await self._conn.run("keep_channel", self._keep, keys, args, resend=True))
        if outcome == "missing":
            raise ChannelLost(
                channel,
                f"Redis at {self._conn.url} has no record of it: it lost its data (restarted "
                "without persistence, or the keys were deleted)",
            )
        if outcome != "ok":
            ago = int(outcome.split()[-1]) / 1000
            raise ChannelLost(channel, f"it was closed or expired {ago:.3f} s ago")

    async def close(self, channel: str) -> None:
        """Drop ``channel``'s replies and make it dead from now on."""
        keys = self._channel_keys(channel)
        await self._conn.run("close_channel", self._close, keys, [channel], resend=True)
