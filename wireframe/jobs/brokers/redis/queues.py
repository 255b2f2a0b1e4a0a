"""The work queue on Redis Streams: declare, publish and consume, and leases given back.

Each queue is a stream with one consumer group; a delivery is a stream entry in the
group's pending-entries list (PEL), so a lease is a PEL entry owned by this broker's
consumer with a given delivery count, and its idle time is the lease clock (the
ends of a lease: :mod:`.leases`). Delayed messages wait in a sorted set.

``consume`` first runs a housekeeping pass (the ``CONSUME`` script): it moves due
delayed messages into the stream, takes over entries idle longer than the lease
(``XAUTOCLAIM``, resuming where the last pass stopped) and reads new ones
(``XREADGROUP``). When that finds nothing, nothing else can be due for a while
(until the next delayed message, the next look for expired leases): until then
the queue is *quiet*, and consumes block in ``XREADGROUP BLOCK`` on a connection
of their own (:meth:`.Connection.block`) and take new entries straight away,
without another pass. What a cancelled blocking read took is handed back at once,
claimable by any consumer. Closing the broker hands back the leases it still
holds, so a worker's shutdown does not leave its messages waiting out their leases.

A publish carries a token, so that repeating it after a lost answer adds nothing
(see :mod:`.scripts.queues`).
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable, Sequence
from typing import Any

import trio

from wireframe.jobs.broker import BrokerError, BrokerURL, Delivery, LockLost, Message
from wireframe.jobs.brokers.redis.connection import Arg, Connection
from wireframe.jobs.brokers.redis.errors import is_failure
from wireframe.jobs.brokers.redis.keys import GROUP, RELEASED, Keys
from wireframe.jobs.brokers.redis.leases import Leases
from wireframe.jobs.brokers.redis.scripts import queues as scripts
from wireframe.jobs.brokers.redis.values import COUNT, as_bytes, ms, text

__all__ = ["Queues"]

#: A consumer with nothing pending and idle this long (ms) belonged to a dead broker.
_STALE_CONSUMER_MS = 3_600_000
#: Longest aclose spends handing this consumer's leases back.
_RELEASE_TIMEOUT = 2.0
#: The fields a stream entry must have (the same rule as ``malformed`` in the scripts).
_WELL_FORMED = frozenset({b"i", b"b", b"r"})


def _too_many(made: int, limit: int) -> str:
    """The dead-letter reason for a message delivered too often (the same on every broker)."""
    return f"delivered {made} times without completing (max_deliveries={limit})"


def _stream_entries(read: Any) -> list[Any]:
    """The entries of a one-stream XREAD(GROUP) reply (a RESP3 map or RESP2 list)."""
    if isinstance(read, dict):
        return list(next(iter(read.values())))
    return list(read[0][1])


class Queues:
    """One broker's side of its queues: publish, consume, release (see the module doc)."""

    def __init__(
        self,
        conn: Connection,
        keys: Keys,
        leases: Leases,
        *,
        url: BrokerURL,
        consumer: str,
        claim_interval: float,
        clock: Callable[[], float],
    ) -> None:
        self._conn = conn
        self._keys = keys
        self._leases = leases
        self._url = url
        self._consumer = consumer
        self._lease_ms = ms(url.lease)
        self._claim_interval = claim_interval
        self._clock = clock
        self._declare = conn.script(scripts.DECLARE)
        self._delete = conn.script(scripts.DELETE_QUEUE)
        self._publish = conn.script(scripts.PUBLISH)
        self._consume = conn.script(scripts.CONSUME)
        self._hand_back_script = conn.script(scripts.HAND_BACK)
        self._bury_malformed = conn.script(scripts.BURY_MALFORMED)
        self._release = conn.script(scripts.RELEASE)
        self._last_claim: dict[str, float] = {}
        self._claim_cursor: dict[str, str] = {}
        #: Per queue: until when (trio clock) a consume may skip the housekeeping pass
        #: (nothing delayed or expired is due) and read new entries directly.
        self.quiet_until: dict[str, float] = {}
        self._published: list[str] = []  # tokens of answered publishes, to delete
        #: Queues this broker consumed from (whose leases it releases on close).
        self._consumed: set[str] = set()

    async def declare(self, queue: str) -> None:
        """Create ``queue``'s stream and consumer group if missing."""
        keys = [self._keys.queues, self._keys.queue(queue, "ready")]
        await self._conn.run("declare_queue", self._declare, keys, [GROUP, queue], resend=True)

    async def delete(self, queue: str) -> None:
        """Delete every key of ``queue``."""
        parts = ("ready", "delayed", "dead", "done", "born")
        keys = [self._keys.queues, *(self._keys.queue(queue, p) for p in parts)]
        await self._conn.run("delete_queue", self._delete, keys, [queue], resend=True)

    async def publish(self, queue: str, messages: Sequence[Message], *, delay: float) -> None:
        """Append ``messages`` in one script call (one round trip per batch)."""
        # A token per call makes a repeat after a lost answer harmless (see PUBLISH);
        # the tokens of answered calls are deleted by the next call.
        token = self._keys.publish_token(self._consumer, secrets.token_hex(8))
        answered, self._published = self._published, []
        keys = [
            self._keys.queues,
            self._keys.queue(queue, "ready"),
            self._keys.queue(queue, "delayed"),
            token,
            *answered,
        ]
        delay_ms = max(0, round(delay * 1000)) if delay > 0 else 0
        args: list[Arg] = [GROUP, queue, delay_ms, int(self._conn.reconnect) + 60]
        for m in messages:
            args += [m.id, m.body, m.reply_to]
        try:
            await self._conn.run("publish", self._publish, keys, args, resend=True)
        except BaseException:
            self._published.extend(answered)
            raise
        self._published.append(token)

    async def consume(self, queue: str, limit: int) -> list[Delivery]:
        """Lease up to ``limit`` messages: expired leases first, then new ones; block if none."""
        if limit < 1:
            raise BrokerError(f"redis broker: consume limit must be at least 1, not {limit}")
        keys = [
            self._keys.queues,
            self._keys.queue(queue, "ready"),
            self._keys.queue(queue, "delayed"),
            self._keys.queue(queue, "dead"),
        ]
        self._consumed.add(queue)
        while True:
            now = trio.current_time()
            claim = now - self._last_claim.get(queue, -1e9) >= self._claim_interval
            quiet = self.quiet_until.get(queue, 0.0)
            if claim or now >= quiet:
                deliveries = await self._housekeep(queue, keys, limit, now, claim=claim)
                if deliveries:
                    return deliveries
                quiet = self.quiet_until[queue]
            block_ms = max(1, round((quiet - now) * 1000))
            deliveries = await self._read_new(queue, keys[1], limit, block_ms)
            if deliveries:
                return deliveries

    async def _housekeep(
        self, queue: str, keys: list[str], limit: int, now: float, *, claim: bool
    ) -> list[Delivery]:
        """One CONSUME pass (``claim``: taking over expired leases too); when it finds
        nothing, the queue is quiet until the next thing that may come due."""
        args: list[Arg] = [
            GROUP,
            queue,
            self._consumer,
            limit,
            self._lease_ms,
            self._url.max_deliveries,
            self._keys.prefix,
            "1" if claim else "0",
            self._claim_cursor.get(queue, "0-0"),
        ]
        result: Any = await self._conn.run("consume", self._consume, keys, args, resend=True)
        if claim:
            self._last_claim[queue] = now
            self._claim_cursor[queue] = text(result[2])
        flat, wait_ms = result[0], int(result[1])
        if flat:
            self.quiet_until.pop(queue, None)
            return self._deliveries(queue, flat)
        block = min(self._claim_interval, self._conn.poll)
        if wait_ms >= 0:
            block = min(block, wait_ms / 1000)
        # Until then nothing is due but new entries: the next consumes read them
        # straight away, without another housekeeping pass.
        self.quiet_until[queue] = now + block
        return []

    async def _read_new(self, queue: str, ready: str, limit: int, block_ms: int) -> list[Delivery]:
        """New entries of ``ready``, waiting for them up to ``block_ms`` (XREADGROUP BLOCK)."""
        read: Any = await self._conn.block(
            "consume",
            b"XREADGROUP",
            "GROUP",
            GROUP,
            self._consumer,
            "COUNT",
            limit,
            "BLOCK",
            block_ms,
            "STREAMS",
            ready,
            ">",
            late=functools.partial(self._hand_back, ready),
        )
        if not read:
            self.quiet_until.pop(queue, None)
            return []
        return await self._accept_read(queue, _stream_entries(read))

    async def _hand_back(self, ready: str, read: Any) -> None:
        """Make entries a cancelled blocking read leased claimable again at once."""
        ids = [text(entry[0]) for entry in _stream_entries(read)]
        if ids:
            await self._hand_back_script([ready], [GROUP, RELEASED, *ids])

    def _deliveries(self, queue: str, flat: Sequence[Any]) -> list[Delivery]:
        """Deliveries from a flat list of sid, id, body, reply_to, PEL count, total."""
        expires = self._clock() + self._url.lease
        out = []
        for k in range(0, len(flat), 6):
            sid, mid, body, reply_to, count, total = flat[k : k + 6]
            out.append(
                Delivery(
                    message=Message(id=text(mid), body=as_bytes(body), reply_to=text(reply_to)),
                    queue=queue,
                    deliveries=int(total),
                    lease_token=f"{text(sid)}|{int(count)}|{self._consumer}",
                    lease_expires=expires,
                )
            )
        return out

    async def _accept_read(self, queue: str, entries: Sequence[Any]) -> list[Delivery]:
        """Turn entries of a blocking XREADGROUP into deliveries, burying those over the
        limit and the malformed ones (with the reason CONSUME would give)."""
        flat: list[Any] = []
        malformed: list[str] = []
        for sid, pairs in entries:
            fields = dict(zip(pairs[::2], pairs[1::2], strict=False))
            n = fields.get(b"n", b"0")
            if not (fields.keys() >= _WELL_FORMED and COUNT.fullmatch(as_bytes(n))):
                malformed.append(text(sid))
                continue
            flat += [sid, fields[b"i"], fields[b"b"], fields[b"r"], 1, int(n) + 1]
        if malformed:
            keys = [self._keys.queue(queue, "ready"), self._keys.queue(queue, "dead")]
            args: list[Arg] = [GROUP, RELEASED, self._keys.prefix, *malformed]
            await self._conn.run("consume", self._bury_malformed, keys, args, resend=True)
        limit = self._url.max_deliveries
        keep = []
        for d in self._deliveries(queue, flat):
            if d.deliveries > limit:
                try:
                    await self._leases.dead_letter(
                        d, _too_many(d.deliveries - 1, limit), refused=True
                    )
                except LockLost:
                    pass
            else:
                keep.append(d)
        return keep

    async def release_leases(self) -> None:
        """Make the messages this consumer still holds claimable by others at once.

        Once closed, this broker can complete nothing, so waiting out the leases of
        what it holds (jobs cut short by shutdown, or entries a cancelled blocking read
        leased but never handed out) would only delay them. Best effort, bounded.
        """
        if not self._consumed:
            return
        keys = [self._keys.queue(q, "ready") for q in sorted(self._consumed)]
        args = [GROUP, self._consumer, RELEASED, _STALE_CONSUMER_MS]
        with trio.CancelScope(shield=True), trio.move_on_after(_RELEASE_TIMEOUT):
            try:
                await self._release(keys, args)
            except Exception as exc:
                if not is_failure(exc):
                    raise
                # Redis is gone: the leases run out on their own
