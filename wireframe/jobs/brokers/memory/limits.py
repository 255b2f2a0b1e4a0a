"""The memory broker's limits: a gate per defined limit, and per queue the messages it holds back.

A :class:`Gate` is one limit as brokers of a name share it: the
:class:`~wireframe.jobs.limits.Limit`, its token
:class:`~wireframe.jobs.limits.Bucket` on trio's clock, how many of its
messages are leased (in every queue, and which queues hold them) and which
queues have messages it holds back. ``consume`` asks the gate of a limited
message it pops (:meth:`Gate.take`); a message the gate refuses is *parked*:
moved out of the queue's lanes into a :class:`Parked` set of the queue, per
gate, in its priority and order, so the messages behind it are not held back
and the next ``consume`` does not look at it again. When the gate has room (a
token accrued, a slot given back) :func:`unpark` puts as many as may go back at
the front of their lanes, where they were. A consumer that finds only parked
messages sleeps until :func:`wake_at` (the next token; for a full concurrency
cap, the next lease expiry of a queue holding one of its slots), or until a
slot given back wakes the queues the gate holds back (:meth:`Gate.release`).

An unlimited message costs ``consume`` one truthiness check of
``Message.limit``, and settling a delivery one check of ``Entry.gate``.
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING, Final

from wireframe.jobs.limits import Bucket, Limit

if TYPE_CHECKING:
    from wireframe.jobs.brokers.memory.state import Entry, Queue

#: How far past a due token a held consumer wakes (so that the token is whole then).
_PAST: Final = 1e-6

__all__ = [
    "Gate",
    "Parked",
    "define",
    "forget_queue",
    "held",
    "park",
    "reclaim_holders",
    "unpark",
    "wake_at",
]


class Gate:
    """One defined limit: its bucket, its leased messages, the queues it holds back."""

    __slots__ = ("bucket", "holders", "limit", "running", "waiting")

    def __init__(self, limit: Limit, now: float) -> None:
        self.limit = limit
        self.bucket = Bucket(float(limit.rate or 0), now)  # a fresh bucket is full
        self.running = 0  # leased messages of this limit, in every queue
        self.holders: dict[Queue, int] = {}  # queue -> how many of them it holds leased
        self.waiting: set[Queue] = set()  # queues with messages parked by this gate

    def __repr__(self) -> str:
        return f"<Gate {self.limit.name!r} {self.limit.describe()} running={self.running}>"

    def redefine(self, limit: Limit, now: float) -> None:
        """Replace the limit; the tokens (capped at the new rate) and slots in use stay."""
        level = self.bucket.level(self.limit, now)  # inf without a rate: full at the new one
        self.bucket = Bucket(0.0 if limit.rate is None else min(level, float(limit.rate)), now)
        self.limit = limit
        self.wake()

    def room(self, now: float) -> float:
        """How many of its messages may be handed out now (``inf``: no cap at all)."""
        limit = self.limit
        room = math.inf if limit.concurrency is None else limit.concurrency - self.running
        if limit.rate is not None:
            room = min(room, math.floor(self.bucket.level(limit, now)))
        return max(room, 0)  # a cap lowered below the slots in use: none

    def take(self, q: Queue, entry: Entry, now: float) -> bool:
        """Lease ``entry`` of ``q`` within the limit (a slot and a token), or False if held."""
        concurrency = self.limit.concurrency
        if concurrency is not None and self.running >= concurrency:
            return False
        if not self.bucket.take(self.limit, now):
            return False
        self.running += 1
        self.holders[q] = self.holders.get(q, 0) + 1
        entry.gate = self
        return True

    def release(self, q: Queue, entry: Entry) -> None:
        """The lease of ``entry`` (of ``q``) ended: give its slot back, wake who waits."""
        entry.gate = None
        self.running -= 1
        count = self.holders[q] - 1
        if count:
            self.holders[q] = count
        else:
            del self.holders[q]
        if self.limit.concurrency is not None:  # a slot only matters under a cap
            self.wake()

    def wake(self) -> None:
        """Wake the consumers of every queue this gate holds messages back in."""
        for q in self.waiting:
            q.notify()

    def ready_at(self, now: float) -> float:
        """When it may next have room, short of a slot given back (which wakes anyway)."""
        limit = self.limit
        if limit.concurrency is not None and self.running >= limit.concurrency:
            # a slot comes back when a lease runs out (any queue's; woken by settles)
            return min((q.next_due() for q in self.holders), default=math.inf)
        # a microsecond past the token: woken exactly at it, rounding could leave 0.999...
        return self.bucket.next_token(limit, now) + _PAST


class Parked:
    """A queue's messages held back by one gate, per priority, oldest first."""

    __slots__ = ("count", "lanes")

    def __init__(self) -> None:
        self.lanes: dict[int, deque[Entry]] = {}
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def push(self, entry: Entry) -> None:
        """Hold ``entry`` back, behind the ones of its priority held already."""
        priority = entry.message.priority
        lane = self.lanes.get(priority)
        if lane is None:
            lane = self.lanes[priority] = deque()
        lane.append(entry)
        self.count += 1

    def release_into(self, q: Queue, most: int) -> int:
        """Put back up to ``most`` entries, highest priority and oldest first, at the
        front of ``q``'s lanes (where they were when held); count them."""
        moved = 0
        for priority in sorted(self.lanes, reverse=True):
            lane = self.lanes[priority]
            n = min(most - moved, len(lane))
            going = [lane.popleft() for _ in range(n)]
            if not lane:
                del self.lanes[priority]
            if priority == 0:
                q.ready.extendleft(reversed(going))
            else:
                target = q.lanes.get(priority)
                if target is None:
                    target = q.lanes[priority] = deque()
                target.extendleft(reversed(going))
            moved += n
            if moved >= most:
                break
        self.count -= moved
        return moved


def define(gates: dict[str, Gate], limit: Limit, now: float) -> None:
    """Define ``limit`` (or redefine it, keeping tokens and slots; idempotent)."""
    gate = gates.get(limit.name)
    if gate is None:
        gates[limit.name] = Gate(limit, now)
    elif gate.limit != limit:
        gate.redefine(limit, now)


def park(q: Queue, gate: Gate, entry: Entry) -> None:
    """Hold ``entry`` (popped from ``q``) back until ``gate`` has room."""
    parked = q.parked.get(gate)
    if parked is None:
        parked = q.parked[gate] = Parked()
        gate.waiting.add(q)
    parked.push(entry)


def unpark(q: Queue, now: float, most: int) -> int:
    """Put back at the front of ``q``'s lanes up to ``most`` parked entries whose gate
    has room now; count them."""
    moved = 0
    for gate, parked in list(q.parked.items()):
        room = gate.room(now)
        if room >= 1:
            moved += parked.release_into(q, int(min(room, most - moved)))
            if not parked:
                del q.parked[gate]
                gate.waiting.discard(q)
            if moved >= most:
                break
    return moved


def reclaim_holders(q: Queue, now: float) -> None:
    """Take back the expired leases, in other queues, of the full gates ``q`` waits on."""
    for gate in q.parked:
        concurrency = gate.limit.concurrency
        if concurrency is not None and gate.running >= concurrency:
            for other in list(gate.holders):
                if other is not q:
                    other.reclaim(now)


def wake_at(q: Queue, now: float) -> float:
    """When a gate holding messages of ``q`` back may next have room (later than ``now``:
    a token due within rounding of ``now`` must not make a consumer spin)."""
    due = min((gate.ready_at(now) for gate in q.parked), default=math.inf)
    return due if due > now else now + _PAST


def forget_queue(q: Queue) -> None:
    """``q`` was deleted: its leases give their slots back, its parked entries go."""
    for entry in q.leased.values():
        if entry.gate is not None:
            entry.gate.release(q, entry)
    for gate in q.parked:
        gate.waiting.discard(q)
    q.parked.clear()


def held(q: Queue, gates: dict[str, Gate], now: float) -> int:
    """How many of ``q``'s visible messages their limits hold back now (for ``stats``)."""
    if not gates:
        return 0
    counts = {gate: len(parked) for gate, parked in q.parked.items()}
    for lane in (q.ready, *q.lanes.values()):
        for entry in lane:
            name = entry.message.limit
            if name:
                gate = gates.get(name)
                if gate is not None:
                    counts[gate] = counts.get(gate, 0) + 1
    return int(sum(max(0, n - gate.room(now)) for gate, n in counts.items()))
