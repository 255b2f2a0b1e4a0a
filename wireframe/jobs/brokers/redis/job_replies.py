"""The shared reply path of the job store: one inbox per broker for the jobs it submitted.

A job submitted through a broker names that broker's inbox (``P jr:CONSUMER``, a
list) in its record; the script that finishes the job - complete, abort, dead-letter -
pushes the whole final record there (one ``RPUSH`` per inbox and script call, however
many jobs it finished). The submitting process's waiters then cost Redis nothing
each: one of them at a time *reads* the inbox for everyone (``BLMPOP ... COUNT``, many
replies a call) and hands each reply to the waiters of its job, with its record, so
that none of them reads the record again.

Leadership instead of a background task: the broker has no task of its own, and a
reader is only needed while someone waits. The first waiter to find nobody reading
reads until its own reply came (or its time is up), then wakes one other waiter,
which takes over. A reply for a job nobody waits for yet marks it finished here, so
that a later wait reads the record instead (what happens to every job this broker
did not submit, and to one whose reply was lost - a wait never relies on the inbox
alone: see :meth:`.Jobs.wait`).

Bounded: at most :data:`MAX_EXPECTED` jobs are expected at once (the oldest are
forgotten first: their waits read the record), and the inbox keeps at most
``INBOX_CAP`` unread replies for ``INBOX_TTL`` (:mod:`.scripts`), so a process
that submits without ever waiting costs a bounded amount.
"""

from __future__ import annotations

from typing import Any, Final

import msgpack
import trio

from wireframe.jobs.broker import BrokerError, JobRecord
from wireframe.jobs.brokers.redis.connection import Connection
from wireframe.jobs.brokers.redis.keys import Keys
from wireframe.jobs.brokers.redis.values import text

__all__ = ["MAX_EXPECTED", "JobReplies"]

#: Most jobs one broker expects replies for at once.
MAX_EXPECTED: Final = 100_000
#: Most replies one read of the inbox takes.
_READ_COUNT: Final = 1000


class _Slot:
    """The waiters of one job: its record once its reply came, and their wake-up."""

    __slots__ = ("changed", "record", "waiters")

    def __init__(self) -> None:
        self.record: JobRecord | None = None
        self.changed = trio.Event()
        self.waiters = 0

    def wake(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


class JobReplies:
    """One broker's inbox of finished jobs' records, and the waiters it wakes."""

    def __init__(self, conn: Connection, keys: Keys, consumer: str, parse: Any) -> None:
        self._conn = conn
        #: The inbox: named in the records of the jobs this broker submits.
        self.key = keys.job_inbox(consumer)
        self._job_key = keys.job
        #: ``parse(job_id, key, flat, now_ms) -> JobRecord`` (:func:`.jobs.parse_record`).
        self._parse = parse
        #: Jobs submitted here whose reply has not been read: None, or their waiters.
        self._expected: dict[str, _Slot | None] = {}
        #: The slots someone waits on now (one of them reads next).
        self._waiting: dict[_Slot, None] = {}
        self._reading = False

    def expect(self, job_id: str) -> None:
        """``job_id`` was just submitted here: its reply will come to the inbox."""
        expected = self._expected
        if len(expected) >= MAX_EXPECTED:
            # forget the oldest nobody waits for: their waits read the record
            for old in [k for k, v in list(expected.items())[: MAX_EXPECTED // 10] if v is None]:
                del expected[old]
        expected.setdefault(job_id, None)

    def expects(self, job_id: str) -> bool:
        """Whether ``job_id``'s reply is still to be read here."""
        return job_id in self._expected

    def forget(self) -> None:
        """Expect nothing more (the broker closes, or its records were purged)."""
        for slot in self._expected.values():
            if slot is not None:
                slot.wake()
        self._expected.clear()

    async def wait(self, job_id: str, deadline: float) -> JobRecord | None:
        """The final record of ``job_id`` once its reply is read, or None at ``deadline``
        (trio clock) or when it is no longer expected here (the caller reads the record)."""
        slot = self._expected.get(job_id)
        if slot is None:
            if job_id not in self._expected:
                return None
            slot = self._expected[job_id] = _Slot()
        slot.waiters += 1
        self._waiting[slot] = None
        try:
            while slot.record is None and self._expected.get(job_id) is slot:
                if trio.current_time() >= deadline:
                    return None
                if not self._reading:
                    await self._lead(slot, deadline)
                else:
                    with trio.move_on_at(deadline):
                        await slot.changed.wait()
            return slot.record
        finally:
            slot.waiters -= 1
            if not slot.waiters:
                self._waiting.pop(slot, None)

    async def _lead(self, slot: _Slot, deadline: float) -> None:
        """Read the inbox for every waiter until ``slot``'s reply came or ``deadline``;
        then hand the reading to another waiter."""
        self._reading = True
        try:
            while slot.record is None and trio.current_time() < deadline:
                block = max(0.001, min(deadline - trio.current_time(), 5.0))
                got = await self._conn.block(
                    "wait_job",
                    b"BLMPOP",
                    f"{block:.3f}",
                    1,
                    self.key,
                    "LEFT",
                    "COUNT",
                    _READ_COUNT,
                    late=self._late,
                )
                if got:
                    self._dispatch(got[1])
                elif got is None and self._conn.closed:
                    return
        finally:
            self._reading = False
            # the next waiter reads (any one: each reads for all)
            for other in self._waiting:
                if other is not slot:
                    other.wake()
                    break

    async def _late(self, got: Any) -> None:
        """What a cancelled read took: handed out all the same."""
        if got:
            self._dispatch(got[1])

    def _dispatch(self, replies: list[Any]) -> None:
        """Give each reply's record to its job's waiters; a job nobody waits for is no
        longer expected (a later wait reads its record)."""
        expected = self._expected
        for raw in replies:
            try:
                job_id_raw, flat = msgpack.unpackb(raw, raw=True)
                job_id = text(job_id_raw)
            except (ValueError, TypeError, msgpack.UnpackException):
                continue  # not one of ours: dropped (the waiter reads the record)
            if job_id not in expected:
                continue
            slot = expected.pop(job_id)
            if slot is None or not slot.waiters:
                continue
            try:
                slot.record = self._parse(job_id, self._job_key(job_id), flat, 0)
            except BrokerError:  # a malformed record: the waiter reads it and says so
                slot.record = None
            slot.wake()
