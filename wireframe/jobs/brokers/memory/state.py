"""The memory broker's shared state: queues of entries, channels, workers, by broker name.

Brokers opened with one NAME share one :class:`State` (a refcounted registry),
which is how a runtime and its workers in one process see the same messages.
A queue is a deque of visible messages per priority, a heap of delayed ones and,
per lease length, a deque of lease expiries in expiry order (leases of one
length expire in the order they were granted); expired leases and due delays
are collected lazily by whoever looks. Visible messages a limit holds back are
parked beside the lanes, per limit (see :mod:`.limits`).
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

import trio

from wireframe.jobs.broker import (
    DURABLE_INBOX_PREFIX,
    DeadLetter,
    Message,
    RecordStatus,
    Reply,
    ScheduleInfo,
    WorkerInfo,
)
from wireframe.jobs.brokers.memory.jobs import Job, Jobs

if TYPE_CHECKING:
    from wireframe.jobs.brokers.memory.durable import Orchestrations
    from wireframe.jobs.brokers.memory.limits import Gate, Parked

#: Expiry orders shorter than this are never compacted.
_COMPACT_AT: Final = 1024
#: Every this many opened channels, records of long-dead ones are dropped.
SWEEP_EVERY: Final = 1024


class Entry:
    """One message in a queue, with its delivery count, current lease (and the
    limit's gate whose slot it holds) and, for a job submitted by itself, its record."""

    __slots__ = ("deliveries", "expires", "gate", "job", "message", "token")

    def __init__(self, message: Message, deliveries: int = 0, job: Job | None = None) -> None:
        self.message = message
        self.deliveries = deliveries
        self.token: str | None = None
        self.expires = 0.0
        self.job = job
        self.gate: Gate | None = None  # while leased within a limit: its gate


class Queue:
    """A queue's messages: visible, delayed, leased; and its finished state."""

    __slots__ = (
        "dead",
        "delayed",
        "done",
        "event",
        "lanes",
        "leased",
        "name",
        "orders",
        "parked",
        "ready",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.ready: deque[Entry] = deque()  # visible messages of priority 0, the usual
        self.lanes: dict[int, deque[Entry]] = {}  # visible messages of other priorities
        self.delayed: list[tuple[float, int, Entry]] = []  # heap by visible time
        self.leased: dict[str, Entry] = {}  # by lease token
        # lease length -> (expires, token) in expiry order; stale items skipped lazily
        self.orders: dict[float, deque[tuple[float, str]]] = {}
        self.done = 0
        self.dead: deque[tuple[int, DeadLetter]] = deque()
        self.event: trio.Event | None = None  # set when something may have become visible
        self.parked: dict[Gate, Parked] = {}  # visible messages a limit holds back, per gate

    def order(self, lease: float) -> deque[tuple[float, str]]:
        """The expiry order of leases of length ``lease``, compacted now and then.

        Stale items (leases settled or extended since) leave from the head as
        time passes; behind a long-held lease they could pile up for up to one
        lease length, so once they outnumber live leases 4:1 they are dropped in
        one pass (amortized O(1) per lease).
        """
        order = self.orders.get(lease)
        if order is None:
            order = self.orders[lease] = deque()
        elif len(order) > _COMPACT_AT and len(order) > 4 * len(self.leased):
            leased = self.leased
            order = self.orders[lease] = deque(
                item
                for item in order
                if (entry := leased.get(item[1])) is not None and entry.expires == item[0]
            )
        return order

    def push(self, entry: Entry) -> None:
        """Make ``entry`` visible, at the back of its priority's lane."""
        priority = entry.message.priority
        if priority == 0:
            self.ready.append(entry)
        else:
            lane = self.lanes.get(priority)
            if lane is None:
                lane = self.lanes[priority] = deque()
            lane.append(entry)

    def pop(self) -> Entry | None:
        """The visible entry to hand out next: highest priority first, FIFO within one."""
        lanes = self.lanes
        if lanes:
            top = max(lanes)
            if top > 0 or not self.ready:
                lane = lanes[top]
                entry = lane.popleft()
                if not lane:
                    del lanes[top]
                return entry
        return self.ready.popleft() if self.ready else None

    def visible(self) -> int:
        """How many entries are visible now (after ``reclaim``), held back by a limit or not."""
        return (
            len(self.ready)
            + sum(len(lane) for lane in self.lanes.values())
            + sum(len(parked) for parked in self.parked.values())
        )

    def notify(self) -> None:
        """Wake every consumer blocked on this queue (they look again)."""
        event = self.event
        if event is not None:
            self.event = None
            event.set()

    def reclaim(self, now: float) -> None:
        """Make expired leases and due delayed messages visible."""
        moved = False
        leased = self.leased
        for order in self.orders.values():
            while order:
                expires, token = order[0]
                entry = leased.get(token)
                if entry is None or entry.expires != expires:
                    order.popleft()  # finished, given back or extended since
                    continue
                if expires > now:
                    break
                order.popleft()
                del leased[token]
                entry.token = None
                if entry.gate is not None:
                    entry.gate.release(self, entry)
                if entry.job is not None:
                    entry.job.requeued(now)
                self.push(entry)
                moved = True
        delayed = self.delayed
        while delayed and delayed[0][0] <= now:
            self.push(heapq.heappop(delayed)[2])
            moved = True
        if moved:
            self.notify()

    def next_due(self) -> float:
        """When the next lease runs out or delayed message shows (after ``reclaim``)."""
        due = self.delayed[0][0] if self.delayed else math.inf
        for order in self.orders.values():
            if order and order[0][0] < due:
                due = order[0][0]
        return due


class Channel:
    """Replies posted to one result channel, kept until taken."""

    __slots__ = ("event", "replies")

    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.event: trio.Event | None = None


class State:
    """Everything brokers of one name share."""

    def __init__(self) -> None:
        self.queues: dict[str, Queue] = {}
        self.channels: dict[str, Channel] = {}
        self.topics: dict[str, set[trio.MemorySendChannel[bytes]]] = {}
        #: channel -> until when it is live (dead once passed); absent: unmanaged
        self.deadlines: dict[str, float] = {}
        self.opened = 0  # channels opened: every SWEEP_EVERY, old records are dropped
        self.workers: dict[str, tuple[WorkerInfo, float]] = {}  # id -> (info, expires)
        self.schedules: dict[str, tuple[ScheduleInfo, float]] = {}  # name -> (info, expires)
        self.tokens: Iterator[int] = itertools.count(1)
        self.seq: Iterator[int] = itertools.count()
        self.jobs = Jobs()
        self.limits: dict[str, Gate] = {}  # defined limits by name
        self.refs = 0
        self._orchestrations: Orchestrations | None = None

    def orchestrations(self) -> Orchestrations:
        """The orchestration store's instances (made on first use)."""
        if self._orchestrations is None:
            from wireframe.jobs.brokers.memory.durable import Orchestrations

            self._orchestrations = Orchestrations(self._publish_one)
        return self._orchestrations

    def _publish_one(self, queue: str, message: Message) -> None:
        q = self.queue(queue)
        q.push(Entry(message))
        q.notify()

    def queue(self, name: str) -> Queue:
        q = self.queues.get(name)
        if q is None:
            q = self.queues[name] = Queue(name)
        return q

    def channel(self, name: str) -> Channel:
        ch = self.channels.get(name)
        if ch is None:
            ch = self.channels[name] = Channel()
        return ch

    def dead(self, channel: str, now: float) -> bool:
        """Whether ``channel`` is a run channel that was closed or not kept alive."""
        deadline = self.deadlines.get(channel)
        return deadline is not None and deadline <= now

    def drop_replies(self, channel: str) -> int:
        """Drop ``channel``'s replies (and the channel, if nobody waits on it); count them."""
        ch = self.channels.get(channel)
        if ch is None:
            return 0
        count = len(ch.replies)
        ch.replies.clear()
        if ch.event is None or not ch.event.statistics().tasks_waiting:
            del self.channels[channel]  # nobody waits on it: forget it
        return count

    def post(self, channel: str, reply: Reply) -> None:
        if channel.startswith(DURABLE_INBOX_PREFIX):  # an activity's reply: to its instance
            self.orchestrations().deliver(channel, reply)
            return
        ch = self.channel(channel)
        ch.replies.append(reply)
        event = ch.event
        if event is not None:
            ch.event = None
            event.set()

    def kill(self, q: Queue, entry: Entry, reason: str) -> None:
        """Move an entry (already out of ready/leased) to the dead-letter store."""
        message = entry.message
        q.dead.append(
            (next(self.seq), DeadLetter(message, q.name, reason, entry.deliveries, time.time()))
        )
        if entry.job is not None:
            entry.job.finish(RecordStatus.DEAD, trio.current_time(), error=reason)
        if message.reply_to:
            self.post(message.reply_to, Reply(message.id, dead_reason=reason))


#: name -> state shared by the open brokers of that name
REGISTRY: dict[str, State] = {}
