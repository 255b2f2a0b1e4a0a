"""The names the Redis broker gives things in Redis: keys under one prefix, and consumers.

Every key is under the broker's prefix, so apps sharing a Redis never meet.

The layout is in the package doc, what each key holds with the scripts that write
it (:mod:`.scripts`). The scripts name some keys themselves from the prefix they are
given (a dead channel's reply list, a queue's ``done`` counter): they follow the same
scheme as :class:`Keys`.
"""

from __future__ import annotations

from wireframe.jobs.broker import BrokerError

__all__ = ["GROUP", "INBOX", "RELEASED", "Keys", "level_suffix"]

#: The consumer group every queue's stream has.
GROUP = "wireframe"
#: The placeholder consumer holding entries a closed broker or a cancelled read
#: handed back: claimable by any consumer at once.
RELEASED = "wireframe:released"

#: What separates a channel's key from the rest of an inbox's.
INBOX = ":inbox:"


def level_suffix(level: int) -> str:
    """What the stream (and ``born`` key) of priority ``level`` adds to priority 0's."""
    return f":p{level}" if level else ""


class Keys:
    """The keys of one broker, under its ``prefix`` (``wireframe:`` by default)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        #: SET of the known queue names.
        self.queues = f"{prefix}queues"
        #: ZSET of run channel records.
        self.channels = f"{prefix}channels"
        #: HASH of worker records.
        self.workers = f"{prefix}workers"
        #: HASH of the schedules schedulers announce (the same shape as workers).
        self.schedules = f"{prefix}schedules"
        #: What every channel's keys (reply list, inboxes) start with.
        self.channel_head = f"{prefix}c:"
        #: ZSET of tracked job ids scored by submit time (ms): ``find_jobs`` pages it,
        #: dropping the ids whose record expired.
        self.jobs = f"{prefix}jobs"
        #: LIST of the token that wakes a waiting take of orchestration work.
        self.durable_wake = f"{prefix}o:wake"

    def queue(self, queue: str, part: str) -> str:
        """One key of ``queue``: its ``ready`` stream (of priority 0), ``delayed`` set,
        ``dead`` stream, ``done`` counter, ``born`` time or ``levels`` set."""
        if not isinstance(queue, str) or not queue:
            raise BrokerError(f"redis broker: queue name {queue!r} must be a non-empty string")
        return f"{self.prefix}q:{queue}:{part}"

    def ready(self, queue: str, level: int = 0) -> str:
        """The stream of ``queue``'s messages of priority ``level``."""
        return self.queue(queue, "ready") + level_suffix(level)

    def job(self, job_id: str) -> str:
        """The record (a hash) of the tracked job ``job_id``."""
        return f"{self.prefix}job:{job_id}"

    def job_done(self, job_id: str) -> str:
        """The list a finished job's token waits in, for those who wait for it."""
        return f"{self.prefix}jobdone:{job_id}"

    def job_inbox(self, consumer: str) -> str:
        """The list the finished records of the jobs ``consumer`` submitted go to."""
        return f"{self.prefix}jr:{consumer}"

    def dedup(self, key: str) -> str:
        """The dedup key ``key``: the id of the live job holding it."""
        return f"{self.prefix}key:{key}"

    def channel(self, channel: str) -> str:
        """The reply list of ``channel``."""
        return f"{self.channel_head}{channel}"

    def inbox(self, channel: str, consumer: str, number: int) -> str:
        """The inbox list of one wait of ``consumer`` on ``channel``."""
        return f"{self.channel_head}{channel}{INBOX}{consumer}:{number}"

    def publish_token(self, consumer: str, token: str) -> str:
        """The key marking that one publish call of ``consumer`` landed."""
        return f"{self.prefix}pub:{consumer}:{token}"

    def limit_slots(self, limit: str) -> str:
        """The sorted set of the slots of ``limit`` in use (see :mod:`.scripts.limits`)."""
        return f"{self.prefix}lim:{limit}:slots"

    def topic(self, topic: str) -> str:
        """The pub/sub channel of a broadcast ``topic``."""
        return f"{self.prefix}b:{topic}"

    def instance(self, instance_id: str) -> str:
        """The row (a hash) of orchestration instance ``instance_id`` (:mod:`.scripts.durable`)."""
        return f"{self.prefix}oi:{instance_id}"

    def history(self, instance_id: str) -> str:
        """The history list of orchestration instance ``instance_id``."""
        return f"{self.prefix}oh:{instance_id}"

    def durable_waiter(self, consumer: str, number: int) -> str:
        """The list one wait of ``consumer`` for a change of an instance blocks on."""
        return f"{self.prefix}owl:{consumer}:{number}"
