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

*Priorities.* Each priority level in use is a stream of its own, with the same
consumer group (``P q:Q:ready`` is priority 0, ``P q:Q:ready:pN`` priority N), and
the queue's ``levels`` set names the others: a housekeeping pass takes over expired
leases and reads new entries level by level, highest first, until it has enough, so
a higher priority is consumed first and each level stays first in, first out - and
every lease is still a PEL entry, its token naming its stream. A quiet queue's
blocking read lists the stream of every level the last pass saw (the first message
of a level new since then waits for the next pass, within ``poll``); when it
returns more than asked for (several levels at once), the lowest are handed back
with their delivery undone, and the next pass takes them over first. A queue that
only ever sees priority 0 has one stream and reads exactly as before.

*Limits* (:mod:`.limits`): a message naming a defined limit that may not go now
waits outside the streams, in its place, until the limit lets it go; the scripts
that read entries check their limits (``CONSUME``, and for a blocking read that
took entries naming a limit, one more script call), and a pass that finds only
held messages tells how long until the limit may let one go - an end of a lease
of the limit wakes a blocked read sooner, by promoting the next one into its
stream.

*Tracked jobs* (submitted by themselves, :mod:`.jobs`): their entries carry a marker.
A first delivery writes nothing to the job's record (a read of the record finds the
entry leased); one handed out again marks it running (or settles a job aborted by
id meanwhile) in the script that hands it out.

A publish carries a token, so that repeating it after a lost answer adds nothing
(see :mod:`.scripts.queues`).
"""

from __future__ import annotations

import operator
import secrets
from collections.abc import Callable, Sequence
from typing import Any

import trio

from wireframe.jobs.broker import BrokerError, BrokerURL, Delivery, LockLost, Message
from wireframe.jobs.brokers.redis.connection import Arg, Connection
from wireframe.jobs.brokers.redis.errors import is_failure
from wireframe.jobs.brokers.redis.keys import GROUP, RELEASED, Keys
from wireframe.jobs.brokers.redis.leases import Leases, lease_token
from wireframe.jobs.brokers.redis.limits import Limits
from wireframe.jobs.brokers.redis.scripts import queues as scripts
from wireframe.jobs.brokers.redis.values import COUNT, as_bytes, ms, text

__all__ = ["MAX_PRIORITY", "MIN_PRIORITY", "Queues", "check_priority"]

#: A consumer with nothing pending and idle this long (ms) belonged to a dead broker.
_STALE_CONSUMER_MS = 3_600_000
#: Longest aclose spends handing this consumer's leases back.
_RELEASE_TIMEOUT = 2.0
#: The fields a stream entry must have (the same rule as ``malformed`` in the scripts).
_WELL_FORMED = frozenset({b"i", b"b", b"r"})


def _too_many(made: int, limit: int) -> str:
    """The dead-letter reason for a message delivered too often (the same on every broker)."""
    return f"delivered {made} times without completing (max_deliveries={limit})"


#: The priorities the Redis broker takes (each level in use names a stream).
MIN_PRIORITY, MAX_PRIORITY = -(2**31), 2**31 - 1
_PRIORITY = operator.attrgetter("priority")
_LIMIT = operator.attrgetter("limit")


def check_priority(message: Message) -> int:
    """``message``'s priority, if the Redis broker takes it (a 32-bit int)."""
    p = message.priority
    if isinstance(p, bool) or not isinstance(p, int) or not MIN_PRIORITY <= p <= MAX_PRIORITY:
        raise ValueError(
            f"redis broker: message {message.id!r}: priority={p!r} must be an int from "
            f"{MIN_PRIORITY} to {MAX_PRIORITY}"
        )
    return p


def _stream_reads(read: Any) -> list[tuple[str, list[Any]]]:
    """Each stream's key and entries in an XREAD(GROUP) reply (a RESP3 map or RESP2 list)."""
    if isinstance(read, dict):
        return [(text(key), list(entries)) for key, entries in read.items()]
    return [(text(key), list(entries)) for key, entries in read]


class Queues:
    """One broker's side of its queues: publish, consume, release (see the module doc)."""

    def __init__(
        self,
        conn: Connection,
        keys: Keys,
        leases: Leases,
        limits: Limits,
        *,
        url: BrokerURL,
        consumer: str,
        claim_interval: float,
        clock: Callable[[], float],
    ) -> None:
        self._conn = conn
        self._keys = keys
        self._leases = leases
        self._limits = limits
        self._url = url
        self._consumer = consumer
        self._lease_ms = ms(url.lease)
        self._claim_interval = claim_interval
        self._clock = clock
        self._declare = conn.script(scripts.DECLARE)
        self._delete = conn.script(scripts.DELETE_QUEUE)
        self._publish = conn.script(scripts.PUBLISH)
        self._publish_levels = conn.script(scripts.PUBLISH_LEVELS)
        self._publish_limits = conn.script(scripts.PUBLISH_LIMITS)
        self._consume = conn.script(scripts.CONSUME)
        self._hand_back_script = conn.script(scripts.HAND_BACK)
        self._bury_malformed = conn.script(scripts.BURY_MALFORMED)
        self._release = conn.script(scripts.RELEASE)
        self._last_claim: dict[str, float] = {}
        #: Per queue, per priority level: where the last XAUTOCLAIM scan stopped.
        self._claim_cursors: dict[str, dict[int, str]] = {}
        #: Per queue: the priority levels in use as the last pass saw them, highest first.
        self._levels: dict[str, list[int]] = {}
        #: Queues where this broker handed back what a read took beyond its limit: their
        #: passes take over expired leases until one finds fewer than it may take.
        self._owed: set[str] = set()
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
        parts = ("ready", "delayed", "dead", "done", "born", "levels")
        keys = [self._keys.queues, *(self._keys.queue(queue, p) for p in parts)]
        args: list[Arg] = [queue, self._keys.prefix]
        await self._conn.run("delete_queue", self._delete, keys, args, resend=True)

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
        script = self._publish
        if any(map(_LIMIT, messages)):
            # with limits: priority and limit of each, highest priority first
            script = self._publish_limits
            for m in sorted(messages, key=lambda m: -check_priority(m)):
                args += [m.id, m.body, m.reply_to, m.priority, m.limit]
        elif any(map(_PRIORITY, messages)):
            # Highest first (stable: FIFO among equals): a consumer blocked on every
            # level's stream is served by the stream written first.
            script = self._publish_levels
            for m in sorted(messages, key=lambda m: -check_priority(m)):
                args += [m.id, m.body, m.reply_to, m.priority]
        else:  # all of priority 0 (the usual): nothing more to send
            for m in messages:
                args += [m.id, m.body, m.reply_to]
        try:
            await self._conn.run("publish", script, keys, args, resend=True)
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
            claim = (
                now - self._last_claim.get(queue, -1e9) >= self._claim_interval
                or queue in self._owed
            )
            quiet = self.quiet_until.get(queue, 0.0)
            if claim or now >= quiet:
                deliveries = await self._housekeep(queue, keys, limit, now, claim=claim)
                if deliveries:
                    return deliveries
                quiet = self.quiet_until[queue]
            block_ms = max(1, round((quiet - now) * 1000))
            deliveries = await self._read_new(queue, limit, block_ms)
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
        ]
        cursors = self._claim_cursors.get(queue)
        if cursors is None:
            args.append("0-0")
        else:
            args.append(cursors.get(0, "0-0"))
            for level, cursor in cursors.items():
                if level:
                    args += [level, cursor]
        result: Any = await self._conn.run("consume", self._consume, keys, args, resend=True)
        flat, wait_ms, pairs = result[0], int(result[1]), result[2]
        cursors = {int(pairs[k]): text(pairs[k + 1]) for k in range(0, len(pairs), 2)}
        self._levels[queue] = list(cursors)
        if claim:
            self._last_claim[queue] = now
            self._claim_cursors[queue] = cursors
            if len(flat) < 8 * limit:
                self._owed.discard(queue)
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

    async def _read_new(self, queue: str, limit: int, block_ms: int) -> list[Delivery]:
        """New entries of the stream of every priority level in use, waiting for them up
        to ``block_ms`` (XREADGROUP BLOCK); the ``limit`` of the highest levels."""
        levels = self._levels.get(queue, [0])
        streams = [self._keys.ready(queue, level) for level in levels]
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
            *streams,
            *([">"] * len(streams)),
            late=self._hand_back,
        )
        if not read:
            self.quiet_until.pop(queue, None)
            return []
        by_stream = dict(_stream_reads(read))
        entries = [
            (level, stream, entry)
            for level, stream in zip(levels, streams, strict=True)
            for entry in by_stream.get(stream, [])
        ]
        if len(entries) > limit:
            await self._hand_back_extra(queue, entries[limit:])
            entries = entries[:limit]
        return await self._accept_read(queue, entries)

    async def _hand_back_extra(self, queue: str, extra: Sequence[tuple[int, str, Any]]) -> None:
        """Give back what a read of several levels took beyond its limit (the lowest),
        its delivery undone; the next pass takes it over before newer entries."""
        by_stream: dict[str, list[Arg]] = {}
        for level, stream, entry in extra:
            by_stream.setdefault(stream, []).append(text(entry[0]))
            self._claim_cursors.setdefault(queue, {})[level] = "0-0"
        for stream, ids in by_stream.items():
            args: list[Arg] = [GROUP, RELEASED, "0", *ids]
            await self._conn.run("consume", self._hand_back_script, [stream], args, resend=True)
        self._owed.add(queue)
        self.quiet_until.pop(queue, None)

    async def _hand_back(self, read: Any) -> None:
        """Make entries a cancelled blocking read leased claimable again at once."""
        for stream, entries in _stream_reads(read):
            ids = [text(entry[0]) for entry in entries]
            if ids:
                await self._hand_back_script([stream], [GROUP, RELEASED, "-1", *ids])

    def _deliveries(self, queue: str, flat: Sequence[Any]) -> list[Delivery]:
        """Deliveries from a flat list of sid, id, body, reply_to, PEL count, total,
        priority, tracked (or ``[tracked, limit]`` for a message naming a limit)."""
        now = self._clock()
        expires = now + self._url.lease
        started = round(now * 1000)
        out = []
        for k in range(0, len(flat), 8):
            sid, mid, body, reply_to, count, total, level, tracked = flat[k : k + 8]
            limit = ""
            if isinstance(tracked, (list, tuple)):
                tracked, limit = tracked[0], text(tracked[1])
            priority, tracked = int(level), int(tracked) == 1
            if priority or tracked:
                token = lease_token(
                    text(sid), int(count), self._consumer, priority, tracked, started
                )
            else:  # the usual: inlined
                token = f"{text(sid)}|{int(count)}|{self._consumer}"
            out.append(
                Delivery(
                    message=Message(text(mid), as_bytes(body), text(reply_to), priority, limit),
                    queue=queue,
                    deliveries=int(total),
                    lease_token=token,
                    lease_expires=expires,
                )
            )
        return out

    async def _accept_read(
        self, queue: str, entries: Sequence[tuple[int, str, Any]]
    ) -> list[Delivery]:
        """Turn entries of a blocking XREADGROUP (priority, stream, entry) into deliveries,
        burying those over the limit and the malformed ones (with the reason CONSUME
        would give), and marking tracked jobs running (settling those aborted)."""
        flat: list[Any] = []
        streams: list[str] = []
        malformed: dict[str, list[Arg]] = {}
        for level, stream, (sid, pairs) in entries:
            fields = dict(zip(pairs[::2], pairs[1::2], strict=False))
            n = fields.get(b"n", b"0")
            if not (fields.keys() >= _WELL_FORMED and COUNT.fullmatch(as_bytes(n))):
                malformed.setdefault(stream, []).append(text(sid))
                continue
            tracked: Any = 1 if fields.get(b"j") == b"1" else 0
            if fields.get(b"l"):
                tracked = [tracked, fields[b"l"]]
            flat += [sid, fields[b"i"], fields[b"b"], fields[b"r"], 1, int(n) + 1, level, tracked]
            streams.append(stream)
        dead = self._keys.queue(queue, "dead")
        for stream, sids in malformed.items():
            args: list[Arg] = [GROUP, RELEASED, self._keys.prefix, *sids]
            await self._conn.run("consume", self._bury_malformed, [stream, dead], args, resend=True)
        limit = self._url.max_deliveries
        keep: list[tuple[Delivery, str]] = []
        for d, stream in zip(self._deliveries(queue, flat), streams, strict=True):
            if d.deliveries > limit:
                try:
                    await self._leases.dead_letter(
                        d, _too_many(d.deliveries - 1, limit), refused=True
                    )
                except LockLost:
                    pass
            else:
                keep.append((d, stream))
        if any(d.message.limit for d, _ in keep):
            keep = await self._limits.taken(queue, keep)
        # A tracked job's first delivery writes nothing to its record: a read finds
        # its entry leased (see scripts.jobs.JOB), its completion writes it all.
        return [d for d, _ in keep]

    async def release_leases(self) -> None:
        """Make the messages this consumer still holds claimable by others at once.

        Once closed, this broker can complete nothing, so waiting out the leases of
        what it holds (jobs cut short by shutdown, or entries a cancelled blocking read
        leased but never handed out) would only delay them. Best effort, bounded.
        """
        if not self._consumed:
            return
        keys = [self._keys.queue(q, "ready") for q in sorted(self._consumed)]
        args = [GROUP, self._consumer, RELEASED, _STALE_CONSUMER_MS, self._keys.prefix]
        with trio.CancelScope(shield=True), trio.move_on_after(_RELEASE_TIMEOUT):
            try:
                await self._release(keys, args)
            except Exception as exc:
                if not is_failure(exc):
                    raise
                # Redis is gone: the leases run out on their own
