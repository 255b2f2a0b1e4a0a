"""The job store on Redis: jobs submitted by themselves, their records by id, waiting for one.

A tracked job is an ordinary message of its queue whose stream entry carries a
marker, plus a record hash ``P job:ID`` (the keys: :mod:`.scripts.jobs`). Every
script that moves the message moves the record in the same step (complete: done;
abandon or a lost lease: queued or scheduled again; dead-letter: dead; a delivery
again: running), so the record never disagrees with the queue; a finished record
expires after the submitter's ``result_ttl``. A first delivery writes nothing: a
read of the record finds the entry leased and says running (its worker, attempts
and start from the lease), and the completion writes them all with the result.

*Submitting* is group-committed (:class:`.GroupCommit`): the submits that arrive
while one ``SUBMIT`` call is in flight go together in the next, so a busy
submitter pays one round trip per batch, and per job only its stream entry and its
record (plus a look for a known id, which makes a repeat harmless).

*Waiting* wakes on the finish, without polling. A job submitted through this broker
names its inbox in its record: the finishing script pushes the final record there,
and :class:`.JobReplies` hands it to the job's waiters, which read nothing (one of
them reads the inbox for all). Any other wait - a job submitted elsewhere, or one
whose reply is late (:data:`WAIT_BLOCK`) - reads the record, registering itself
(``wt``), so that the finishing script also pushes a token to ``P jobdone:ID``, and
blocks in ``BLMOVE jobdone jobdone RIGHT LEFT`` on a blocking connection
(:meth:`.Connection.block`, cancellable like every blocking read). The move puts the
token back where it was, so every waiter sees it, and one that comes later finds it
at once. (A ``jobdone`` key that is not a list, written by something else, makes
Redis refuse the wait: the next read deletes it, and the wait goes on.) A wait
without end blocks in slices of :data:`WAIT_BLOCK` seconds, reading the record again
after each (a record that expired meanwhile ends it).

Records are read leniently: one that is not a hash of this broker's (something else
wrote the key) raises a :class:`BrokerError` naming the key and what it holds.
"""

from __future__ import annotations

import math
from typing import Any, Final

import trio

from wireframe.jobs.broker import (
    FIND_JOBS_SCAN,
    BrokerError,
    BrokerURL,
    JobRecord,
    Message,
    RecordStatus,
)
from wireframe.jobs.brokers.redis.connection import Arg, Connection
from wireframe.jobs.brokers.redis.group_commit import GroupCommit
from wireframe.jobs.brokers.redis.job_replies import JobReplies
from wireframe.jobs.brokers.redis.keys import GROUP, Keys
from wireframe.jobs.brokers.redis.queues import check_priority
from wireframe.jobs.brokers.redis.scripts import jobs as scripts
from wireframe.jobs.brokers.redis.values import COUNT, as_bytes, ms, text

__all__ = ["WAIT_BLOCK", "Jobs", "parse_record"]

#: Longest (seconds) one wait for a job blocks server-side before it reads the record again.
WAIT_BLOCK: Final = 5.0
#: Shortest server-side block (seconds): Redis reads a timeout of 0 as "forever".
_MIN_BLOCK: Final = 0.001


def parse_record(job_id: str, key: str, flat: Any, now_ms: int) -> JobRecord:
    """The :class:`JobRecord` in a record hash's flat field, value list.

    A scheduled job whose time has come reads as queued (its message moves into its
    stream at the next consume). Raises BrokerError for a record that is not one of
    this broker's.
    """
    f = {text(flat[k]): flat[k + 1] for k in range(0, len(flat) - 1, 2)}

    def bad(why: str) -> BrokerError:
        return BrokerError(
            f"redis broker: the record of job {job_id!r} ({key}) is malformed: {why}"
        )

    def number(name: str) -> int | None:
        value = f.get(name)
        if value is None:
            return None
        if isinstance(value, int):
            return value
        raw = value if isinstance(value, bytes) else str(value).encode()
        if not COUNT.fullmatch(raw.lstrip(b"-")):
            raise bad(f"field {name!r} is {raw[:40]!r}, not a whole number")
        return int(raw)

    def seconds(name: str) -> float | None:
        value = number(name)
        return None if value is None else value / 1000

    def string(name: str) -> str | None:
        value = f.get(name)
        return None if value is None else text(value)

    try:
        status = RecordStatus(string("s"))
    except ValueError:
        raise bad(f"its status is {f.get('s')!r}") from None
    queue, enqueued, visible = string("q"), number("e"), number("v")
    if queue is None or enqueued is None or visible is None:
        raise bad("it lacks a queue ('q'), enqueued ('e') or visible ('v') time")
    if status is RecordStatus.SCHEDULED and visible <= now_ms:
        status = RecordStatus.QUEUED
    result = f.get("res")
    return JobRecord(
        id=job_id,
        queue=queue,
        status=status,
        enqueued_at=enqueued / 1000,
        visible_at=visible / 1000,
        key=string("k"),
        priority=number("p") or 0,
        operation=string("o") or "",
        attempts=number("a") or 0,
        started_at=seconds("st"),
        finished_at=seconds("f"),
        worker=string("w"),
        result=None if result is None else as_bytes(result),
        error=string("err"),
        expires_at=seconds("x"),
    )


#: What one submit sends in a ``SUBMIT`` call (see :data:`.scripts.jobs.SUBMIT`).
_Item = list[Arg]


class Jobs:
    """One broker's side of the job store (see the module doc)."""

    def __init__(self, conn: Connection, keys: Keys, url: BrokerURL, consumer: str) -> None:
        self._conn = conn
        self._keys = keys
        self._ttl_ms = ms(url.result_ttl)
        self._submit = conn.script(scripts.SUBMIT)
        self._read = conn.script(scripts.JOB)
        self._abort = conn.script(scripts.ABORT)
        self._submits: GroupCommit[_Item] = GroupCommit(self._submit_many)
        #: The shared reply path: the finished records of the jobs submitted here.
        self.replies = JobReplies(conn, keys, consumer, parse_record)
        self._find = conn.script(scripts.FIND_JOBS)

    def _record(self, job_id: str, answer: Any) -> JobRecord | None:
        """The record in a script's answer ``{1|0, record, now}`` / ``{0}`` / ``{-1, type}``."""
        flag = int(answer[0])
        key = self._keys.job(job_id)
        if flag == -1:
            raise BrokerError(
                f"redis broker: the record of job {job_id!r} ({key}) is a Redis "
                f"{text(answer[1])}, not a hash: something else wrote that key"
            )
        if len(answer) < 3:
            return None
        return parse_record(job_id, key, answer[1], int(answer[2]))

    async def submit(
        self, queue: str, message: Message, *, delay: float, key: str | None, operation: str
    ) -> tuple[JobRecord, bool]:
        """Publish ``message`` as a tracked job, unless its id is known or ``key`` held.

        Submits from concurrent tasks are group-committed: one ``SUBMIT`` call (one
        round trip) carries every submit that arrived while the previous call was in
        flight.
        """
        if not delay >= 0.0:
            raise ValueError(f"submit to {queue!r}: delay={delay!r} must be >= 0")
        priority = check_priority(message)
        self._keys.queue(queue, "ready")  # checks the name
        delay_ms = max(0, round(delay * 1000)) if delay > 0 else 0
        item: _Item = [queue, message.id, message.body, message.reply_to, priority, delay_ms]
        item += (
            [operation, "0", "", message.limit]
            if key is None
            else [operation, "1", key, message.limit]
        )
        answer: Any = await self._submits.submit(item)
        if int(answer[0]) == 1:
            self.replies.expect(message.id)
            return (
                JobRecord(
                    id=message.id,
                    queue=queue,
                    status=RecordStatus(text(answer[3])),
                    enqueued_at=int(answer[1]) / 1000,
                    visible_at=int(answer[2]) / 1000,
                    key=key,
                    priority=priority,
                    operation=operation,
                ),
                True,
            )
        holder = text(answer[3]) if len(answer) > 3 else message.id
        record = self._record(holder, answer)
        if record is None:  # pragma: no cover - SUBMIT answers a record or raises
            raise BrokerError(f"redis broker: submit of job {message.id!r} answered no record")
        return record, False

    async def _submit_many(self, items: list[_Item]) -> list[object]:
        """One ``SUBMIT`` call for a batch of submits: one answer each (every id is
        looked up first, so a repeat after a lost answer finds the jobs it made)."""
        head: list[Arg] = [GROUP, self._keys.prefix, self._ttl_ms, self.replies.key]
        args = [*head]
        for item in items:
            args += item
            args.append("1")
        return list(await self._conn.run("submit", self._submit, [], args, resend=True))

    async def job(self, job_id: str) -> JobRecord | None:
        """The job's record, or None if unknown or expired."""
        args: list[Arg] = [self._keys.prefix, GROUP]
        answer: Any = await self._conn.run(
            "job", self._read, [self._keys.job(job_id)], args, resend=True
        )
        return self._record(job_id, answer)

    async def wait(self, job_id: str, timeout: float) -> JobRecord | None:
        """Wait up to ``timeout`` seconds for the job to be final; its record then.

        A job submitted here is woken by its reply in this broker's inbox
        (:class:`.JobReplies`), which carries its record: nothing more is read. Any
        other - and one whose reply does not come within :data:`WAIT_BLOCK` - reads
        its record and, unfinished, blocks on its jobdone list.
        """
        deadline = trio.current_time() + timeout
        replies = self.replies
        while replies.expects(job_id):
            record = await replies.wait(job_id, min(deadline, trio.current_time() + WAIT_BLOCK))
            if record is not None:
                return record
            if trio.current_time() < deadline and replies.expects(job_id):
                # no reply for a while: make sure it was not lost
                record = await self.job(job_id)
                if record is None or record.final:
                    return record
            else:
                break
        keys = [self._keys.job(job_id)]
        args: list[Arg] = [self._keys.prefix, GROUP, "1"]
        done = self._keys.job_done(job_id)
        while True:
            answer: Any = await self._conn.run("wait_job", self._read, keys, args, resend=True)
            record = self._record(job_id, answer)
            if record is None or record.final:
                return record
            remaining = deadline - trio.current_time()
            if remaining <= _MIN_BLOCK:
                return record
            block = WAIT_BLOCK if math.isinf(remaining) else min(remaining, WAIT_BLOCK)
            try:
                await self._conn.block(
                    "wait_job", b"BLMOVE", done, done, "RIGHT", "LEFT", f"{block:.3f}"
                )
            except BrokerError:
                # Redis refused the wait itself (it raises nothing else here): the
                # list is not a list, say. The next read repairs it, once.
                if len(keys) > 1:
                    raise
                keys.append(done)

    async def abort(self, job_id: str) -> JobRecord | None:
        """Abort a job that has not finished; its record after, or None if unknown."""
        args: list[Arg] = [self._keys.prefix, GROUP, job_id]
        answer: Any = await self._conn.run(
            "abort_job", self._abort, [self._keys.job(job_id)], args, resend=True
        )
        return self._record(job_id, answer)

    async def find(
        self,
        *,
        queue: str | None,
        status: RecordStatus | None,
        operation: str | None,
        key: str | None,
        limit: int,
        offset: int,
    ) -> list[JobRecord]:
        """Records newest first from the ``P jobs`` index, matching every filter given
        (a filtered search looks through the newest :data:`FIND_JOBS_SCAN` records)."""
        if limit < 1:
            return []
        args: list[Arg] = [self._keys.prefix, queue or "", status.value if status else ""]
        args += [operation or "", key or "", limit, max(offset, 0), FIND_JOBS_SCAN, GROUP]
        answer: Any = await self._conn.run("find_jobs", self._find, [self._keys.jobs], args,
                                           resend=True)  # fmt: skip
        now, flat = int(answer[0]), answer[1]
        found = []
        for k in range(0, len(flat) - 1, 2):
            job_id = text(flat[k])
            try:
                record = parse_record(job_id, self._keys.job(job_id), flat[k + 1], now)
            except BrokerError:
                continue  # a malformed record is not a search's business: ``job`` reports it
            if status is None or record.status is status:
                found.append(record)
        return found
