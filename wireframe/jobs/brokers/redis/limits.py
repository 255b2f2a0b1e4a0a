"""Limits on Redis: a limit's definition and bucket in a hash, its slots in a sorted set.

A message naming a defined limit waits in its queue's waiting set of that limit
until the limit may let it go; then it is *promoted* into the stream of its
priority, and whoever reads it hands it out with a token and a slot, or makes it
wait again in its place (the scripts: :mod:`.scripts.limiting`, the keys:
:mod:`.scripts.limits`). So the checks are inside the scripts that read entries -
``CONSUME`` for its own reads, :data:`~.scripts.limits.LIMIT_TAKEN` for what a
blocking read took, called only when that holds a message naming a limit - and a
batch without one costs nothing more.

A consumer finding only held messages sleeps in its blocking read: an end of a
lease of the limit promotes the next message (its entry wakes the read), and
``CONSUME`` tells it how long until a token accrues or a lease runs out, so it
wakes by itself no sooner.
"""

from __future__ import annotations

from typing import Any

from wireframe.jobs.broker import Delivery
from wireframe.jobs.brokers.redis.connection import Arg, Connection
from wireframe.jobs.brokers.redis.keys import GROUP, Keys
from wireframe.jobs.brokers.redis.scripts import limits as scripts
from wireframe.jobs.limits import Limit

__all__ = ["Limits"]


class Limits:
    """One broker's side of limits: define one, check what a blocking read took."""

    def __init__(self, conn: Connection, keys: Keys, *, lease_ms: int) -> None:
        self._conn = conn
        self._keys = keys
        self._lease_ms = lease_ms
        self._define = conn.script(scripts.DEFINE_LIMIT)
        self._taken = conn.script(scripts.LIMIT_TAKEN)

    async def define(self, limit: Limit) -> None:
        """Record ``limit`` (replacing its definition; its bucket and slots kept)."""
        args: list[Arg] = [
            self._keys.prefix,
            GROUP,
            limit.name,
            "" if limit.rate is None else limit.rate,
            repr(limit.per * 1000),
            "" if limit.concurrency is None else limit.concurrency,
        ]
        await self._conn.run("define_limit", self._define, [], args, resend=True)

    async def taken(
        self, queue: str, taken: list[tuple[Delivery, str]]
    ) -> list[tuple[Delivery, str]]:
        """Of ``taken`` (delivery, stream) from a blocking read: those handed out within
        their limits (the others wait for them, or were settled)."""
        limited = [(d, s) for d, s in taken if d.message.limit]
        if not limited:
            return taken
        args: list[Arg] = [GROUP, self._keys.prefix, queue, self._lease_ms]
        for d, stream in limited:
            args += [stream, d.lease_token.split("|", 1)[0]]
        outcomes: Any = await self._conn.run("consume", self._taken, [], args, resend=False)
        dropped = {id(d) for (d, _), o in zip(limited, outcomes, strict=True) if int(o) != 1}
        return [(d, s) for d, s in taken if id(d) not in dropped]
