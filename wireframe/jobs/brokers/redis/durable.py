"""The Redis broker's orchestration store: each instance a row, a history and an inbox in Redis.

:class:`RedisOrchestrationStore` is the
:class:`~wireframe.durable.store.OrchestrationStore` role of
:class:`~wireframe.jobs.brokers.redis.RedisBroker`. An instance is a hash (its
row and its lease), a list (its history) and a sorted set (its inbox, scored
by when each event is visible); the keys are told with the scripts
(:mod:`.scripts.durable`). An activity's reply is not copied anywhere: the
job's completion posts it to the instance's inbox channel and, in the same
script, makes the instance ready (:mod:`.scripts.orchestrating`); a turn reads
the instance's visible inbox events *and* those replies, and its commit
removes exactly what it read - so a completion lands in the inbox atomically
with the job's completion, and is consumed atomically with the turn that
applied it.

Every step is one script: a take leases what is due (a global sorted set of
instances by when each may next have work, so finished instances are never
read), a commit is fenced on the lease's token and end (``TurnLost``, nothing
written, otherwise) and writes the whole turn, activities published to their
queues as ``publish`` would. Turns that end together are group-committed: one
``COMMIT`` call carries them all (packed in one msgpack argument), each fenced
and written on its own. Waiting blocks in Redis: a take that finds
nothing ``BLPOP``-s a wake token (pushed when something becomes due sooner)
until the next due time at the latest; a wait for a change ``BLPOP``-s a list
of its own that the next change of the instance pushes to. Times visible in
the store (leases, visibility) are Redis ``TIME``; a visibility the caller
gives on the broker's clock is sent as a delay from now, so clock skew between
this host and Redis does not move timers.
"""

from __future__ import annotations

import itertools
import math
import secrets
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

import msgpack

from wireframe.durable.codec import decode_event, decode_value, encode_event, encode_value
from wireframe.durable.history import (
    Event,
)
from wireframe.durable.store import (
    KEPT_ON_RESTART,
    Commit,
    Instance,
    InstanceExists,
    Status,
    TurnLost,
    UnknownInstance,
    WorkItem,
    child_exists,
    inbox_channel,
    reply_event,
)
from wireframe.jobs.broker import BrokerError
from wireframe.jobs.brokers.redis.channels import parse_replies
from wireframe.jobs.brokers.redis.group_commit import GroupCommit
from wireframe.jobs.brokers.redis.keys import GROUP
from wireframe.jobs.brokers.redis.queues import check_priority
from wireframe.jobs.brokers.redis.scripts import durable as scripts
from wireframe.jobs.brokers.redis.scripts.orchestrating import SEQ_WIDTH
from wireframe.jobs.brokers.redis.values import as_bytes, ms, text

if TYPE_CHECKING:
    from wireframe.jobs.brokers.redis.connection import Arg, Connection
    from wireframe.jobs.brokers.redis.keys import Keys

__all__ = ["RedisOrchestrationStore"]

#: Longest (seconds) a take or a wait for a change blocks server-side before it looks again.
BLOCK: Final = 5.0
#: Packs the turns of a ``COMMIT`` call: bytes and text alike as msgpack's raw strings
#: (Redis's cmsgpack reads no bin type; a Lua string holds any bytes).
_pack: Final = msgpack.Packer(use_bin_type=False).pack
#: Most turns one group-committed ``COMMIT`` call carries.
MAX_COMMITS: Final = 64
#: The nullable row fields kept as msgpack: (hash field, what it is).
_VALUES: Final = (
    ("in", "input"),
    ("out", "output"),
    ("err", "error"),
    ("cs", "custom status"),
    ("par", "parent id"),
    ("ver", "version"),
)


def _member(event: Event) -> bytes:
    """An inbox event as the scripts take it: its flag, then the event (they add a sequence)."""
    return (b"k" if isinstance(event, KEPT_ON_RESTART) else b".") + encode_event(event)


def _row_fields(inst: Instance) -> list[Arg]:
    """A new row's field, value pairs, their count first (the scripts add times and revision)."""
    pairs: list[Arg] = ["n", inst.name, "s", inst.status.value, "g", inst.generation]
    values = (inst.input, inst.output, inst.error, inst.custom_status, inst.parent_id, inst.version)
    for (field, _), value in zip(_VALUES, values, strict=True):
        data = encode_value(value)
        if data is not None:
            pairs += [field, data]
    return [len(pairs) // 2, *pairs]


def _fields(flat: Any) -> dict[bytes, Any]:
    """A hash's fields by name as bytes, from HGETALL (a map, or a flat field, value list
    from a script). Redis answers bytes; anything else is taken as text."""
    pairs = flat.items() if isinstance(flat, Mapping) else zip(flat[::2], flat[1::2], strict=False)
    return {k if type(k) is bytes else as_bytes(k): v for k, v in pairs}


#: The row's msgpack values: (hash field, what it is), as :data:`_VALUES` names them.
_VALUE_KEYS: Final = tuple((field.encode(), what) for field, what in _VALUES)


def _instance(iid: str, flat: Any, key: str) -> Instance:
    """The :class:`Instance` a row hash holds; BrokerError for one that is not a row of ours.

    (Read for every turn a take hands out, and for every wait of a client: kept
    to plain lookups by the fields' bytes.)
    """
    f = _fields(flat)

    def bad(why: str) -> BrokerError:
        return BrokerError(
            f"redis broker: the row of orchestration instance {iid!r} ({key}) is malformed: {why}"
        )

    def number(name: bytes) -> int:
        raw = as_bytes(f.get(name, b"0"))
        if not raw.isdigit():  # ASCII digits only, as COUNT says
            raise bad(f"field {name.decode()!r} is {raw[:40]!r}, not a whole number")
        return int(raw)

    try:
        status = Status(text(f.get(b"s", b"")))
    except ValueError:
        raise bad(f"its status is {f.get(b's')!r}") from None
    name = f.get(b"n")
    if name is None:
        raise bad("it has no name ('n')")
    values = [
        None if (raw := f.get(field)) is None else decode_value(as_bytes(raw), f"{what} of {iid!r}")
        for field, what in _VALUE_KEYS
    ]
    return Instance(
        iid,
        text(name),
        status,
        values[0],
        values[1],
        values[2],
        values[3],
        number(b"ca") / 1000,
        number(b"ua") / 1000,
        values[4],
        values[5],
        number(b"g"),
        number(b"r"),
    )


def _value(value: Any) -> bytes:
    """A row value for a commit: msgpack, or b'' for None."""
    return encode_value(value) or b""


class _Scripts:
    """The store's scripts, registered on the broker's connection."""

    def __init__(self, conn: Connection) -> None:
        self.create = conn.script(scripts.CREATE)
        self.take = conn.script(scripts.TAKE)
        self.commit = conn.script(scripts.COMMIT)
        self.release = conn.script(scripts.RELEASE)
        self.extend = conn.script(scripts.EXTEND)
        self.send = conn.script(scripts.SEND)
        self.wait = conn.script(scripts.WAIT)
        self.list = conn.script(scripts.LIST)
        self.purge = conn.script(scripts.PURGE)


class _BrokerParts(Protocol):
    """What the store uses of the broker it is mixed into."""

    consumer: str
    _conn: Connection
    _keys: Keys

    def clock(self) -> float: ...


class RedisOrchestrationStore(_BrokerParts):
    """The :class:`~wireframe.durable.store.OrchestrationStore` role of a Redis broker.

    A mixin of :class:`~wireframe.jobs.brokers.redis.RedisBroker` (see the module
    doc), using its connection, keys, consumer name and clock; the broker calls
    :meth:`_init_orchestrations` once its connection exists.
    """

    def _init_orchestrations(self) -> None:
        self._durable = _Scripts(self._conn)
        self._waits = itertools.count(1)
        self._sent: list[str] = []  # tokens of answered sends, to delete
        self._commits: GroupCommit[list[Any]] = GroupCommit(self._commit_many, MAX_COMMITS)

    def _delay(self, visible_at: float) -> str:
        """A visibility on the broker's clock as the scripts take it: ms from now, or '-inf'."""
        if visible_at == -math.inf:
            return "-inf"
        return str(round((visible_at - self.clock()) * 1000))

    async def _run(self, what: str, script: Any, args: Sequence[Arg]) -> Any:
        return await self._conn.run(what, script, [], args, resend=True)

    async def create_instance(
        self, instance: Instance, first: Event, *, visible_at: float, replace: bool
    ) -> None:
        """Create ``instance`` with ``first`` in its inbox (see the protocol)."""
        args: list[Arg] = [self._keys.prefix, instance.id, "1" if replace else "0"]
        args += [self._delay(visible_at), _member(first), secrets.token_hex(8)]
        args += _row_fields(instance)
        # a repeat after a lost answer finds the instance its token made: created
        answer = await self._run("create_instance", self._durable.create, args)
        flag = int(answer[0])
        if flag == -1:
            raise BrokerError(
                f"redis broker: the row of orchestration instance {instance.id!r} "
                f"({self._keys.instance(instance.id)}) is a Redis {text(answer[1])}, not a hash"
            )
        if flag == 0:
            raise InstanceExists(f"an instance with id {instance.id!r} exists ({text(answer[1])})")

    async def take_work(self, limit: int, lease: float) -> list[WorkItem]:
        """Lease up to ``limit`` instances with visible inbox events; block until one."""
        if limit < 1:
            raise BrokerError(f"redis broker: take_work limit must be at least 1, not {limit}")
        wake = self._keys.durable_wake
        refused = False
        while True:
            args: list[Arg] = [self._keys.prefix, limit, ms(lease), secrets.token_hex(8)]
            answer = await self._run("take_work", self._durable.take, args)
            if answer[0]:
                return await self._work_items(answer[0])
            wait_ms = int(answer[1])
            block = BLOCK if wait_ms < 0 else min(BLOCK, wait_ms / 1000)
            try:
                await self._conn.block(
                    "take_work", b"BLPOP", wake, f"{max(block, 0.001):.3f}", late=self._wake_again
                )
            except BrokerError:
                # Redis refused the wait itself (it raises nothing else here): the wake
                # key is not a list, someone else's. The next take that finds nothing
                # deletes it; a second refusal in a row is raised.
                if refused:
                    raise
                refused = True
            else:
                refused = False

    async def _wake_again(self, _: Any) -> None:
        """A cancelled take popped the wake token: give it back for another taker."""
        await self._conn.call(
            "take_work",
            lambda: self._conn.client.lpush(self._keys.durable_wake, [b"1"]),
            resend=True,
        )

    async def _work_items(self, raw: Sequence[Any]) -> list[WorkItem]:
        """The work items a TAKE answered; one that cannot be read is handed out
        ``broken`` (the worker fails it with the reason)."""
        items: list[WorkItem] = []
        for iid_raw, token, flat, history, events, replies in raw:
            iid = text(iid_raw)
            try:
                inst = _instance(iid, flat, self._keys.instance(iid))
                past = [
                    decode_event(as_bytes(data), f"history event {n} of {iid!r}")
                    for n, data in enumerate(history, 1)
                ]
                members = [as_bytes(m) for m in events]
                inbox = [
                    decode_event(m[SEQ_WIDTH + 1 :], f"inbox event {m[:SEQ_WIDTH]!r} of {iid!r}")
                    for m in members
                ]
            except (BrokerError, ValueError) as exc:  # the worker fails it, saying why
                row = Instance(iid, "", Status.RUNNING)
                items.append(WorkItem(row, [], [], text(token), ((), 0), broken=str(exc)))
                continue
            channel = inbox_channel(iid)
            for reply in parse_replies(channel, list(reversed(replies))):
                event = reply_event(iid, inst.generation, reply)
                if event is not None:
                    inbox.append(event)
            taken = (tuple(members), len(replies))
            items.append(WorkItem(inst, past, inbox, text(token), taken))
        return items

    async def commit(self, item: WorkItem, commit: Commit) -> None:
        """Apply a turn atomically; ``TurnLost`` (writing nothing) if the lease is gone.

        Turns that end together are group-committed: the commits that arrive
        while one ``COMMIT`` call is in flight go together in the next (each
        fenced on its own lease, each all or nothing), one round trip for all.
        """
        if text(await self._commits.submit(self._commit_args(item, commit))) != "ok":
            raise TurnLost(item.instance.id, "the commit")

    def _commit_args(self, item: WorkItem, c: Commit) -> list[Any]:
        """One turn as the ``COMMIT`` script takes it (an array, packed with the others)."""
        members, replies = item.taken
        activities = []
        for queue, m in c.activities:
            self._keys.queue(queue, "ready")  # checks the name
            activities.append([queue, m.id, m.body, m.reply_to, check_priority(m), m.limit or ""])
        return [
            item.instance.id, item.lease_token, "1" if c.restart else "0", c.status.value,
            _value(c.output), _value(c.custom_status), _value(c.error), list(members), replies,
            [encode_event(e) for e in c.appended], activities,
            [[self._delay(visible_at), _member(event)] for visible_at, event in c.timers],
            [[iid, _member(event)] for iid, event in c.sends],
            [
                [child.id, _row_fields(child)[1:], _member(first),
                 _member(child_exists(child, first))]
                for child, first in c.children
            ],
            [_member(e) for e in c.carryover],
        ]  # fmt: skip

    async def _commit_many(self, turns: list[list[Any]]) -> list[object]:
        """One ``COMMIT`` call for the turns a group commit gathered: an outcome each.

        A repeat after a lost answer is answered 'ok' for each turn that did
        commit (its row names its last commit), so the call may be resent.
        """
        args: list[Arg] = [self._keys.prefix, GROUP, _pack(turns)]
        return list(await self._run("commit", self._durable.commit, args))

    async def release(self, item: WorkItem, delay: float) -> None:
        """Give the instance back without a turn; its events show again after ``delay``."""
        await self._release(item.instance.id, item.lease_token, delay)

    async def _release(self, iid: str, token: str, delay: float) -> None:
        args: list[Arg] = [self._keys.prefix, iid, token, ms(delay) if delay > 0 else 0]
        if text(await self._run("release", self._durable.release, args)) != "ok":
            raise TurnLost(iid, "the release")

    async def extend_work(self, item: WorkItem, lease: float) -> None:
        """Renew the lease of a long turn; ``TurnLost`` if it is gone."""
        iid = item.instance.id
        args: list[Arg] = [self._keys.prefix, iid, item.lease_token, ms(lease)]
        if text(await self._run("extend_work", self._durable.extend, args)) != "ok":
            raise TurnLost(iid, "renewing the lease")

    async def send_event(self, instance_id: str, event: Event) -> None:
        """Put ``event`` in the instance's inbox; :class:`UnknownInstance` if there is none."""
        # A token per call makes a repeat after a lost answer add nothing (as for a
        # publish); the tokens of answered calls are deleted by the next call.
        token = self._keys.publish_token(self.consumer, secrets.token_hex(8))
        answered, self._sent = self._sent, []
        args: list[Arg] = [self._keys.prefix, instance_id, _member(event), token]
        args += [int(self._conn.reconnect) + 60, *answered]
        try:
            found = int(await self._run("send_event", self._durable.send, args))
        except BaseException:
            self._sent.extend(answered)
            raise
        self._sent.append(token)
        if not found:
            raise UnknownInstance(f"no orchestration instance has id {instance_id!r}")

    async def instance(self, instance_id: str) -> Instance | None:
        """The instance's row, or None."""
        key = self._keys.instance(instance_id)
        flat = await self._conn.call(
            "instance", lambda: self._conn.client.hgetall(key), resend=True
        )
        return _instance(instance_id, flat, key) if flat else None

    async def history(self, instance_id: str) -> list[Event]:
        """The instance's history, in order (empty for an unknown id)."""
        key = self._keys.history(instance_id)
        raw = await self._conn.call(
            "history", lambda: self._conn.client.lrange(key, 0, -1), resend=True
        )
        return [
            decode_event(as_bytes(data), f"history event {n} of {instance_id!r}")
            for n, data in enumerate(raw, 1)
        ]

    async def instances(self, status: Status | None, limit: int) -> list[Instance]:
        """Instances (of one status, or all), most recently updated first."""
        if limit < 1:
            return []
        args: list[Arg] = [self._keys.prefix, "" if status is None else status.value, limit]
        rows = await self._run("instances", self._durable.list, args)
        found = [_instance(text(iid), flat, self._keys.instance(text(iid))) for iid, flat in rows]
        found.sort(key=lambda r: (-r.updated_at, r.id))
        return found[:limit]

    async def wait_changed(self, instance_id: str, revision: int) -> Instance:
        """The instance once its revision is past ``revision`` (blocks; woken by the change)."""
        waiter = self._keys.durable_waiter(self.consumer, next(self._waits))
        args: list[Arg] = [self._keys.prefix, instance_id, revision, waiter]
        while True:
            answer = await self._run("wait_changed", self._durable.wait, args)
            flag = int(answer[0])
            if flag == 0:
                raise UnknownInstance(f"no orchestration instance has id {instance_id!r}")
            if flag == 1:
                return _instance(instance_id, answer[1], self._keys.instance(instance_id))
            await self._conn.block("wait_changed", b"BLPOP", waiter, f"{BLOCK:.3f}")

    async def purge_instance(self, instance_id: str) -> bool:
        """Remove a finished instance with its history; False if there is none."""
        args: list[Arg] = [self._keys.prefix, instance_id]
        return bool(int(await self._run("purge_instance", self._durable.purge, args)))
