"""The ends of a lease: complete, abandon, extend and dead-letter, each one lease-checked script.

A delivery's lease token says which stream entry it is (in the stream of which
priority level), with which delivery count, by which consumer, and whether its job
is tracked (:func:`lease_token`; see :mod:`.scripts.leases`). A tracked job's record
moves in the same script as its message. Each call here runs one script
that checks the lease and changes state in the same atomic step, so "the lease is
still mine" and "acknowledge, delete, post the reply" cannot be split by another
consumer taking the message over; a lease that no longer holds raises
:class:`LockLost` with the script's reason, and changes nothing.

Completions from concurrent tasks are group-committed (:mod:`.group_commit`): while
one script call is in flight, the completions that arrive queue up and go together
in the next call, so a busy worker pays one round trip per batch, not per job.
"""

from __future__ import annotations

from collections.abc import Callable

import msgpack

from wireframe.jobs.broker import BrokerError, Delivery, LockLost
from wireframe.jobs.brokers.redis.connection import Arg, Connection
from wireframe.jobs.brokers.redis.group_commit import GroupCommit
from wireframe.jobs.brokers.redis.keys import GROUP, Keys
from wireframe.jobs.brokers.redis.scripts import leases as scripts
from wireframe.jobs.brokers.redis.values import ms, text

__all__ = ["Lease", "Leases", "lease_token"]


def lease_token(
    sid: str, count: int, consumer: str, level: int, tracked: bool, started: int = 0
) -> str:
    """The lease token of a delivery: ``sid|count|consumer``, then ``|level`` when its
    priority is not 0 or it is tracked, then ``|t`` when it is tracked, followed by
    when it was handed out (ms, the wall clock; its record's start when it is the first)."""
    token = f"{sid}|{count}|{consumer}"
    if level or tracked:
        token += f"|{level}|t{started or ''}" if tracked else f"|{level}"
    return token


#: What a lease token says: the stream entry id, its PEL delivery count, the consumer
#: holding it, the priority level (which stream), whether the job is tracked, and when
#: it was handed out ('' unknown).
Lease = tuple[str, str, str, int, bool, str]

#: How many arguments a completion of an untracked job takes in ``COMPLETE``.
_PLAIN = 8


def _token(delivery: Delivery) -> Lease:
    """What the lease token of a delivery says (see :func:`lease_token`)."""
    parts = delivery.lease_token.split("|")
    try:
        if len(parts) == 3:
            return parts[0], parts[1], parts[2], 0, False, ""
        if len(parts) == 4:
            return parts[0], parts[1], parts[2], int(parts[3]), False, ""
        started = parts[4][1:] if len(parts) == 5 and parts[4][:1] == "t" else "-"
        if started == "" or started.isdigit():
            return parts[0], parts[1], parts[2], int(parts[3]), True, started
    except ValueError:
        pass
    raise BrokerError(
        f"redis broker: lease token {delivery.lease_token!r} of message "
        f"{delivery.message.id!r} was not made by a redis broker"
    )


def _check(delivery: Delivery, outcome: object) -> None:
    """Raise LockLost unless a lease-checked script answered ``ok``."""
    word = text(outcome)
    if word != "ok":
        raise LockLost(delivery.message.id, delivery.queue, word)


class Leases:
    """The lease-checked ends of deliveries, for one broker (see the module doc)."""

    def __init__(
        self, conn: Connection, keys: Keys, *, lease: float, clock: Callable[[], float]
    ) -> None:
        self._conn = conn
        self._keys = keys
        self._lease = lease
        self._lease_ms = ms(lease)
        self._clock = clock
        self._complete = conn.script(scripts.COMPLETE)
        self._complete_more = conn.script(scripts.COMPLETE_MORE)
        self._abandon = conn.script(scripts.ABANDON)
        self._extend = conn.script(scripts.EXTEND)
        self._dead = conn.script(scripts.DEAD_LETTER)
        self._completions = GroupCommit(self._complete_many)

    async def complete(self, delivery: Delivery, reply: bytes | None) -> None:
        """Acknowledge, delete and post the reply in one lease-checked, group-committed call."""
        channel = delivery.message.reply_to
        if reply is None or not channel:
            reply_key, payload = "", b""
        else:
            reply_key = self._keys.channel(channel)
            payload = msgpack.packb([delivery.message.id, 0, reply], use_bin_type=True)
        sid, count, consumer, level, tracked, started = _token(delivery)
        queue = delivery.queue
        item: list[Arg] = [
            self._keys.ready(queue, level) if level else self._keys.queue(queue, "ready"),
            self._keys.queue(queue, "done"),
            sid,
            count,
            consumer,
            reply_key,
            payload,
            channel,
        ]
        limit = delivery.message.limit
        if tracked or limit:
            job = delivery.message.id if tracked else ""
            item += [job, "0", b"", limit] if reply is None else [job, "1", reply, limit]
            item += [delivery.deliveries, started]
        _check(delivery, await self._completions.submit(item))

    async def _complete_many(self, items: list[list[Arg]]) -> list[object]:
        """One COMPLETE call for a batch of completions: one outcome each.

        A batch of untracked jobs without limits only (the usual) is a
        ``COMPLETE``; one with others a ``COMPLETE_MORE``, the usual first (8
        arguments each), then the others (12: their job's and limit too).
        """
        args: list[Arg] = [GROUP, self._lease_ms, self._keys.channels]
        plain = [k for k, item in enumerate(items) if len(item) == _PLAIN]
        if len(plain) == len(items):  # the usual
            for item in items:
                args += item
            return list(await self._conn.run("complete", self._complete, [], args, resend=True))
        order = plain + [k for k, item in enumerate(items) if len(item) != _PLAIN]
        args.append(len(plain))
        for k in order:
            args += items[k]
        outcomes = await self._conn.run("complete", self._complete_more, [], args, resend=True)
        back: list[object] = [None] * len(order)
        for k, outcome in zip(order, outcomes, strict=True):
            back[k] = outcome
        return back

    async def abandon(
        self, delivery: Delivery, *, delay: float = 0.0, body: bytes | None = None
    ) -> None:
        """Give the message back (as a new entry, or into the delayed set), lease-checked."""
        sid, count, consumer, level, *_ = _token(delivery)
        keys = [
            self._keys.ready(delivery.queue, level),
            self._keys.queue(delivery.queue, "delayed"),
        ]
        delay_ms = max(0, round(delay * 1000)) if delay > 0 else 0
        args: list[Arg] = [
            GROUP,
            sid,
            count,
            consumer,
            self._lease_ms,
            delay_ms,
        ]
        args += ["0", b""] if body is None else ["1", body]
        args.append(self._keys.prefix)
        outcome = await self._conn.run("abandon", self._abandon, keys, args, resend=True)
        _check(delivery, outcome)

    async def extend(self, delivery: Delivery) -> Delivery:
        """Reset the PEL entry's idle time (XCLAIM to ourselves), lease-checked."""
        sid, count, consumer, level, *_ = _token(delivery)
        keys = [self._keys.ready(delivery.queue, level)]
        args: list[Arg] = [GROUP, sid, count, consumer, self._lease_ms]
        if delivery.message.limit:
            args.append(self._keys.limit_slots(delivery.message.limit))
        outcome = await self._conn.run("extend", self._extend, keys, args, resend=True)
        _check(delivery, outcome)
        return Delivery(
            message=delivery.message,
            queue=delivery.queue,
            deliveries=delivery.deliveries,
            lease_token=delivery.lease_token,
            lease_expires=self._clock() + self._lease,
        )

    async def dead_letter(self, delivery: Delivery, reason: str, *, refused: bool) -> None:
        """Move the delivery to the dead-letter stream and post a dead reply, lease-checked.

        ``refused``: this delivery is refused (it was over ``max_deliveries`` when it
        was read), so it does not count as one made.
        """
        sid, count, consumer, level, *_ = _token(delivery)
        keys = [
            self._keys.ready(delivery.queue, level),
            self._keys.queue(delivery.queue, "dead"),
        ]
        args: list[Arg] = [
            GROUP, sid, count, consumer, self._lease_ms, self._keys.prefix, reason,
        ]  # fmt: skip
        args.append("1" if refused else "0")
        outcome = await self._conn.run("dead_letter", self._dead, keys, args, resend=True)
        _check(delivery, outcome)
