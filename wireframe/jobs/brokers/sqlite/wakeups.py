"""How the SQLite broker's waiters are woken, since SQLite cannot notify.

A waiter (``consume``, ``receive_replies``, ``wait_job``, a subscription)
enters a :class:`Signal` for its key before it looks for work and sleeps on it
after, and is woken three ways:

* at once by a write of any broker on the same file *in this process* that
  concerns it: every open broker's :class:`Wakeups` is registered among its
  *neighbours*, by database file and trio run (a runtime and a worker in one
  process wake each other directly, not at their next poll);
* by the *watcher* (:func:`watch`), which polls ``PRAGMA data_version`` on the
  writer's connection — it changes whenever another connection, in any
  process, commits — only while someone waits, fast right after a change and
  backing off to the ``poll`` option while idle. Waiters for jobs by id are
  not all woken by a change: the watcher asks the broker which of the waited
  jobs finished, in one read, and wakes those (many handles awaited at once
  would otherwise each read after every commit of a worker elsewhere);
* by a timer at the earliest moment a leased or delayed message becomes
  visible, or a limit may let a held one go (the broker passes that deadline
  to :meth:`Wakeups.wait`).

A consumer whose messages a limit holds back waits on two kinds of signal at
once: its queue's, and ("l", name) of each limit holding it, which every end
of a lease of that limit in this process fires (a slot in any queue).

A wake from another process says only "something changed": the broker first
peeks on the reader and takes the write lock only when there is something to
take, so idle processes do not fight over the lock.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Final

import trio

__all__ = [
    "LOOK_AGAIN",
    "Backoff",
    "FirstLooks",
    "NeighbourKey",
    "Signal",
    "Signals",
    "Wakeups",
    "data_version",
    "join_neighbours",
    "leave_neighbours",
    "watch",
]

#: A signal's value when its waiters must look for themselves what changed.
LOOK_AGAIN: Final = object()

_MIN_POLL: Final = 0.001  # seconds between polls right after activity
_FAST_POLLS: Final = 10  # polls at _MIN_POLL before backing off


class Backoff:
    """The watcher's pause between two polls: ``_FAST_POLLS`` at ``_MIN_POLL`` after
    activity, then doubling up to the ``poll`` option, where it stays.

    Only the pause itself is kept, never a count of quiet polls: a worker idles
    for days, and a count (or an exponent made from it) would grow for as long.
    """

    __slots__ = ("_fast_left", "_limit", "_pause")

    def __init__(self, limit: float) -> None:
        self._limit = limit
        self._pause = min(_MIN_POLL, limit)
        self._fast_left = _FAST_POLLS

    def reset(self) -> None:
        """Something changed: poll fast again."""
        self._pause = min(_MIN_POLL, self._limit)
        self._fast_left = _FAST_POLLS

    def next(self) -> float:
        """The pause before the next poll (a quiet one just happened)."""
        pause = self._pause
        if self._fast_left > 0:
            self._fast_left -= 1
        else:
            self._pause = min(self._pause * 2.0, self._limit)
        return pause


class Signal:
    """One generation of wake-up for one key; ``local`` says this process wrote.

    A context manager: each holder enters it before looking for work and leaves
    it once done waiting, and the last holder to leave an unfired signal removes
    it from its :class:`Wakeups`, so keys nobody waits on any more (the channel
    of every finished run) do not pile up in a long-lived process.
    """

    __slots__ = ("_key", "_signals", "event", "followers", "holders", "local", "value")

    def __init__(self, signals: dict[tuple[str, str], Signal], key: tuple[str, str]) -> None:
        self._signals = signals
        self._key = key
        self.event = trio.Event()
        self.local = False
        #: What the waker found for the waiters (a finished job's record), or
        #: :data:`LOOK_AGAIN`: they look themselves.
        self.value: object = LOOK_AGAIN
        self.holders = 0
        #: The events of waiters on several signals at once, set with this one.
        self.followers: list[trio.Event] = []

    def fire(self) -> None:
        """Wake its waiters (and those waiting on it among others)."""
        self.event.set()
        for follower in self.followers:
            follower.set()

    def __enter__(self) -> Signal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.holders -= 1
        if self.holders == 0 and self._signals.get(self._key) is self:
            del self._signals[self._key]


class Signals(list[Signal]):
    """Several entered signals, left together (``with``): a consumer's limits."""

    def __enter__(self) -> Signals:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signal in self:
            signal.__exit__(*exc_info)


class Wakeups:
    """Trio events keyed by ("q", queue), ("c", channel), ("b", topic), ("j", job id)
    or ("l", limit name)."""

    def __init__(self) -> None:
        self._signals: dict[tuple[str, str], Signal] = {}
        self.waiting = 0
        self.waiters_arrived = trio.Event()

    def signal(self, key: tuple[str, str]) -> Signal:
        """The signal to wait on for ``key``: enter it (``with``) *before* looking
        for work, and wait on it inside."""
        found = self._signals.get(key)
        if found is None:
            found = self._signals[key] = Signal(self._signals, key)
        found.holders += 1
        return found

    def signals(self, keys: Iterable[tuple[str, str]]) -> Signals:
        """:meth:`signal` of each of ``keys``, to enter together."""
        return Signals(self.signal(key) for key in keys)

    def notify(self, key: tuple[str, str], value: object = LOOK_AGAIN) -> None:
        """This process wrote something ``key``'s waiters want (``value``: what it was,
        when the waiters need not look themselves)."""
        found = self._signals.pop(key, None)
        if found is not None:
            found.local = True
            found.value = value
            found.fire()

    def notify_all(self, *, but: str | None = None) -> None:
        """Something changed, maybe in another process: every waiter looks again
        (but those whose key is of the kind ``but``)."""
        if but is None:
            signals = list(self._signals.values())
            self._signals.clear()
        else:
            keys = [key for key in self._signals if key[0] != but]
            signals = [self._signals.pop(key) for key in keys]
        for found in signals:
            found.fire()

    def waited(self, kind: str) -> list[str]:
        """The names of the keys of ``kind`` someone waits on now."""
        return [name for k, name in self._signals if k == kind]

    async def wait(self, signal: Signal, timeout: float, also: Sequence[Signal] = ()) -> None:
        """Sleep until ``signal`` (or one of ``also``) fires or ``timeout`` seconds pass
        (``math.inf``: no timer), counted as a waiter so that the watcher polls meanwhile."""
        self.waiting += 1
        self.waiters_arrived.set()
        event = signal.event
        if timeout == math.inf and not also:  # a job's or a channel's wait: no timer
            try:
                await event.wait()
            finally:
                self.waiting -= 1
            return
        if also:
            event = trio.Event()
            for one in (signal, *also):
                if one.event.is_set():
                    event.set()
                one.followers.append(event)
        try:
            with trio.move_on_after(max(0.0, timeout)):
                await event.wait()
        finally:
            self.waiting -= 1
            if also:
                for one in (signal, *also):
                    one.followers.remove(event)


class FirstLooks:
    """Which waits on a job this broker just submitted may skip their first look.

    A waiter looks at its job once after entering its signal, because the job may
    have finished before: that read is most of what waiting costs a process that
    submits and awaits at once. A job this broker submitted, though, was live when
    its submit began, so it can only have finished since by

    * a write of another connection (another process, a neighbour broker): that
      changes the writer's ``data_version``, and the first poll to see it is one
      that ran after the submit began. Polls are numbered (:attr:`polls`, counted on
      the writer thread as they run); :attr:`changed_at` is the number of the
      latest one the watcher found changed;
    * a write of this broker that ends a job (complete, dead letter, abort, a
      deleted queue), counted in :attr:`finished` as it wakes that job's waiters.

    :meth:`submitting` notes both counts as a submit begins; if neither moved when
    the wait enters its signal, nothing can have finished the job unseen: every
    later change is found by a poll the watcher handles after the waiter is in its
    list (it then reads the finished jobs of every waiter), or wakes the waiter
    directly. Otherwise the waiter looks as any other. The notes are kept for the
    last :data:`_FRESH_KEPT` submits only (a job nobody awaits must not stay).
    """

    __slots__ = ("_fresh", "changed_at", "finished", "polls")

    def __init__(self) -> None:
        #: Polls of data_version run so far (written on the writer thread only).
        self.polls = 0
        #: The number of the latest poll that found data_version changed (or failed).
        self.changed_at = 0
        #: Jobs this broker ended (its waiters were told directly).
        self.finished = 0
        self._fresh: dict[str, tuple[int, int]] = {}

    def submitting(self) -> tuple[int, int]:
        """The counts as a submit begins, for :meth:`submitted`."""
        return self.polls, self.finished

    def submitted(self, job_id: str, mark: tuple[int, int]) -> None:
        """Job ``job_id`` was created by a submit that began at ``mark``."""
        fresh = self._fresh
        fresh[job_id] = mark
        if len(fresh) > _FRESH_KEPT:
            del fresh[next(iter(fresh))]  # the oldest note: its wait just looks

    def may_skip(self, job_id: str) -> bool:
        """Whether a wait on ``job_id`` whose signal is entered may skip its first
        look (asked once per job: the note is used up)."""
        mark = self._fresh.pop(job_id, None)
        return mark is not None and self.changed_at <= mark[0] and self.finished == mark[1]


_FRESH_KEPT: Final = 10_000  # submits whose first look may be skipped


#: Where neighbours meet: one database file (its absolute path) in one trio run.
NeighbourKey = tuple[str, trio.lowlevel.TrioToken]

#: The wake-ups of every open broker, by database file and trio run: a write by
#: one broker wakes the waiters of its neighbours on the same file at once
#: (a runtime and a worker in one process), not at their next poll.
_NEIGHBOURS: dict[NeighbourKey, list[Wakeups]] = {}


def join_neighbours(key: NeighbourKey, wake: Wakeups) -> list[Wakeups]:
    """Register ``wake`` among the brokers open on ``key``; return the (live) list of
    every one of them, ``wake`` included, for the broker to notify on each write."""
    neighbours = _NEIGHBOURS.setdefault(key, [])
    neighbours.append(wake)
    return neighbours


def leave_neighbours(key: NeighbourKey, wake: Wakeups) -> None:
    """Unregister ``wake`` (its broker closes); forget ``key`` once nobody is left."""
    neighbours = _NEIGHBOURS[key]
    neighbours.remove(wake)
    if not neighbours:
        del _NEIGHBOURS[key]


def data_version(conn: sqlite3.Connection) -> int:
    """``PRAGMA data_version``: changes when another connection commits to the file."""
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


async def watch(
    wake: Wakeups,
    poll: Callable[[], Awaitable[int | None]],
    limit: float,
    jobs_finished: Callable[[list[str]], Awaitable[dict[str, object]]],
) -> None:
    """Call ``poll`` (the data version, or None when it could not be read) while anyone
    waits on ``wake``, pausing at most ``limit`` seconds between two calls; when it
    changes, wake every waiter but those of jobs, and of these the ones that
    ``jobs_finished`` (given the waited ids) names, handing them what it found (their
    records, or :data:`LOOK_AGAIN`). Runs until cancelled.

    Polled on the *writer's* connection, whose data_version changes only when
    another connection commits: this process's own writes (which wake their
    waiters directly) do not make it poll faster.
    """
    last = await poll()
    backoff = Backoff(limit)
    while True:
        if wake.waiting == 0:
            wake.waiters_arrived = trio.Event()
            await wake.waiters_arrived.wait()
            backoff.reset()
        current = await poll()
        if current is None:
            wake.notify_all()  # closing, or a passing lock: everyone looks again
            backoff.reset()
        elif current != last:
            last = current
            wake.notify_all(but="j")
            waited = wake.waited("j")
            if waited:
                for job_id, record in (await jobs_finished(waited)).items():
                    wake.notify(("j", job_id), record)
            backoff.reset()
        await trio.sleep(backoff.next())
