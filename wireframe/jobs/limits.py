"""Limits across every worker on a broker: a rate (token bucket) and a concurrency cap, per operation.

A limit is declared on an operation class (``rate_limit="10/s"``,
``concurrency_limit=2``) and enforced *in the broker*, not in a worker, so that
ten worker processes together keep to it: the runtime names the limit on each
message it publishes (:attr:`Message.limit <wireframe.jobs.Message>`) and
defines it once per broker connection (``WorkQueue.define_limit``); a broker's
``consume`` hands such a message out only when the limit allows.

*The rate* is a token bucket holding at most ``rate`` tokens, refilled at
``rate`` per ``per`` seconds and full at first: a quiet limit allows a burst of
``rate`` jobs, never the double burst a fixed window allows at its edge. One
token is taken when a message is handed out (a redelivery takes one too: it
runs again). *The concurrency* counts the leased messages of the limit, in
every queue; a completion, an abandon, a dead letter, an abort or a lease that
runs out gives the slot back.

A message held back by a limit keeps its place among that limit's messages and
waits: it is not failed, uses up no delivery and blocks none of the messages
behind it that the limit does not hold. A consumer waiting only on held
messages sleeps until a token accrues or a slot is freed; it does not poll.
"""

from __future__ import annotations

import math
import re

import attrs

__all__ = ["Limit", "LimitError", "parse_rate"]

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"\s*(\d+)\s*/\s*([smh])\s*")


class LimitError(ValueError):
    """A rate or concurrency limit that makes no sense, naming where it was given."""


@attrs.frozen
class Limit:
    """A limit as a broker keeps it: its name (the operation's) and what it allows.

    ``rate`` jobs per ``per`` seconds (``None``: no rate limit) and at most
    ``concurrency`` running at once (``None``: no cap), across every worker.
    """

    name: str
    rate: int | None = None
    per: float = 1.0
    concurrency: int | None = None

    def __attrs_post_init__(self) -> None:
        where = f"limit {self.name!r}"
        if not self.name:
            raise LimitError("a limit needs a non-empty name")
        if self.rate is not None and (isinstance(self.rate, bool) or self.rate < 1):
            raise LimitError(f"{where}: rate={self.rate!r} must be a whole number of jobs >= 1")
        if not (math.isfinite(self.per) and self.per > 0):
            raise LimitError(f"{where}: per={self.per!r} must be positive seconds")
        if self.concurrency is not None and (
            isinstance(self.concurrency, bool) or self.concurrency < 1
        ):
            raise LimitError(f"{where}: concurrency={self.concurrency!r} must be >= 1")

    @property
    def refill(self) -> float:
        """Tokens gained per second (0 without a rate limit)."""
        return 0.0 if self.rate is None else self.rate / self.per

    def describe(self) -> str:
        """The limit in words, as ``wireframe jobs stats`` shows it (``10/s, 2 at once``)."""
        parts = []
        if self.rate is not None:
            unit = {1.0: "s", 60.0: "m", 3600.0: "h"}.get(self.per, f"{self.per:g}s")
            parts.append(f"{self.rate}/{unit}")
        if self.concurrency is not None:
            parts.append(f"{self.concurrency} at once")
        return ", ".join(parts) or "none"


def parse_rate(text: object, where: str) -> tuple[int, float]:
    """``"10/s"`` as ``(10, 1.0)``; ``/m`` and ``/h`` are per minute and per hour.

    Raises :class:`LimitError` naming ``where`` and the forms accepted.
    """
    match = _RATE.fullmatch(text) if isinstance(text, str) else None
    if match is None or int(match.group(1)) < 1:
        raise LimitError(
            f"{where}: rate_limit={text!r} is not a rate; write N/s, N/m or N/h "
            "with N a whole number >= 1, e.g. '10/s'"
        )
    return int(match.group(1)), _UNITS[match.group(2)]


def operation_limit(
    name: str, rate_limit: object | None, concurrency_limit: object | None, where: str
) -> Limit | None:
    """The :class:`Limit` an operation class's keywords declare, or ``None`` for neither."""
    if rate_limit is None and concurrency_limit is None:
        return None
    rate, per = (None, 1.0) if rate_limit is None else parse_rate(rate_limit, where)
    if concurrency_limit is not None and (
        isinstance(concurrency_limit, bool)
        or not isinstance(concurrency_limit, int)
        or concurrency_limit < 1
    ):
        raise LimitError(
            f"{where}: concurrency_limit={concurrency_limit!r} must be a whole number >= 1"
        )
    return Limit(name, rate, per, concurrency_limit)


@attrs.define
class Bucket:
    """A token bucket's state: ``tokens`` at broker clock reading ``at``.

    The memory broker keeps one per limit; SQLite and Redis keep the same two
    numbers in a row and a hash and do this arithmetic in SQL and Lua.
    """

    tokens: float
    at: float

    def level(self, limit: Limit, now: float) -> float:
        """Tokens in the bucket at ``now`` (refilled since ``at``, capped at ``rate``)."""
        if limit.rate is None:
            return math.inf
        return min(float(limit.rate), self.tokens + (now - self.at) * limit.refill)

    def take(self, limit: Limit, now: float) -> bool:
        """Take one token if there is one; True if taken."""
        level = self.level(limit, now)
        if level < 1.0:
            return False
        if limit.rate is not None:
            self.tokens, self.at = level - 1.0, now
        return True

    def next_token(self, limit: Limit, now: float) -> float:
        """The clock reading at which the bucket next holds a whole token."""
        level = self.level(limit, now)
        if level >= 1.0:
            return now
        return now + (1.0 - level) / limit.refill
