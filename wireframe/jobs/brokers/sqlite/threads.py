"""The SQLite broker's threads: each owns one connection and runs calls on it in order.

The stdlib ``sqlite3`` module blocks, so nothing touches a connection on the
trio thread. The broker owns exactly two threads, started and joined inside
``open``, each owning one connection: a **writer** that runs every write
transaction (and the cheap ``data_version`` polls) and a **reader** for
look-ups that never write (peeks, stats, broadcast reads). Calls travel on a
queue and come back through the trio token; no connection is ever shared. (A
no-op round trip costs ~30 µs this way, about half of
``trio.to_thread.run_sync``, whose cached threads would also outlive the
broker.)

*Group commit.* The writer runs the calls that queued up while it was busy in
one ``BEGIN IMMEDIATE`` transaction, each inside its own savepoint, so each
call still succeeds or fails alone (a ``complete`` that raises ``LockLost``
leaves no trace) while many concurrent completions share one commit. When
another process holds the write lock the writer retries with pauses from
0.1 ms to 5 ms (SQLite's own busy handler sleeps whole milliseconds), up to
``busy_timeout``.

*Cancellation.* Like ``trio.to_thread.run_sync``, a call handed to a thread
runs to its end and the caller is cancelled afterwards — a cancelled
``complete`` queued behind other writes still completes — with one exception
here: a write that has waited more than 0.1 s for *another process's* write
lock is dropped as soon as it is cancelled (so a stuck lock cannot hold a
cancellation for ``busy_timeout``). :meth:`ConnectionThread.run` says whether
a cancel arrived while the call ran, so the broker can undo what a cancelled
``consume`` or ``receive_replies`` took.
"""

from __future__ import annotations

import contextlib
import queue as queue_module
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, Final, Generic, TypeVar

import outcome
import trio

from wireframe.jobs.broker import BrokerError

__all__ = ["ConnectionThread", "is_busy"]

T = TypeVar("T")

_GROUP_MAX: Final = 256  # calls at most in one group commit
_BEGIN_MAX_SLEEP: Final = 0.005  # longest pause between two tries for the write lock
_DROPPABLE_AFTER: Final = 0.1  # a write cancelled while waiting this long for the lock is dropped

_QUEUED, _RUNNING, _DONE, _CANCELLED = range(4)
_DROPPED: Final = object()  # what a dropped call's task is woken with
_DROPPED_OUTCOME: Final = outcome.Value(_DROPPED)


class _Call(Generic[T]):
    """One function to run on a connection thread, and the trio task awaiting it.

    Cancelling the task drops the call only while it is *droppable*: a read not
    yet started, or a write that has waited over ``_DROPPABLE_AFTER`` for
    another process's write lock.
    Otherwise (like ``trio.to_thread.run_sync``) the call runs to its end and the
    task is cancelled afterwards, so a cancelled ``complete`` queued behind this
    process's own writes still completes instead of being silently lost.
    """

    __slots__ = (
        "cancel_requested",
        "droppable",
        "fn",
        "lock",
        "readonly",
        "state",
        "task",
        "token",
    )

    def __init__(
        self,
        fn: Callable[[sqlite3.Connection], T],
        task: trio.lowlevel.Task,
        token: trio.lowlevel.TrioToken,
        readonly: bool,
    ) -> None:
        self.fn = fn
        self.readonly = readonly
        self.task = task
        self.token = token
        self.lock = threading.Lock()
        self.state = _QUEUED
        self.droppable = readonly
        self.cancel_requested = False

    def start(self) -> bool:
        """Thread side: claim the call for running; False if it was cancelled first."""
        with self.lock:
            if self.state != _QUEUED:
                return False
            self.state = _RUNNING
            return True

    def finish(self, result: outcome.Outcome[Any]) -> None:
        """Thread side: hand the result to the waiting task (unless it went away)."""
        if self.settle():
            self.token.run_sync_soon(trio.lowlevel.reschedule, self.task, result)

    def settle(self) -> bool:
        """Thread side: mark the call done; False if its task went away (cancelled)
        or was already woken."""
        with self.lock:
            if self.state in (_CANCELLED, _DONE):
                return False
            self.state = _DONE
            return True

    def make_droppable(self) -> bool:
        """Thread side: the call waits for another process's lock, so a cancel may drop
        it; drop it now if a cancel already arrived. False once the call is dropped."""
        with self.lock:
            self.droppable = True
            if self.state == _QUEUED and self.cancel_requested:
                self.state = _DONE
                self.token.run_sync_soon(trio.lowlevel.reschedule, self.task, _DROPPED_OUTCOME)
            return self.state == _QUEUED

    def abort(self, _raise_cancel: Any) -> trio.lowlevel.Abort:
        """Trio side: a cancel arrived; drop the call if it is droppable and not started."""
        with self.lock:
            if self.state == _QUEUED and self.droppable:
                self.state = _CANCELLED
                return trio.lowlevel.Abort.SUCCEEDED
            self.cancel_requested = True
            return trio.lowlevel.Abort.FAILED


def _reschedule_all(results: list[tuple[trio.lowlevel.Task, outcome.Outcome[Any]]]) -> None:
    """Trio side: wake every task of a group commit with its result, in one callback."""
    for task, result in results:
        trio.lowlevel.reschedule(task, result)


def is_busy(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` says another connection holds a lock (SQLITE_BUSY/LOCKED)."""
    text = str(exc)
    return "locked" in text or "busy" in text


class ConnectionThread:
    """A thread that owns one sqlite3 connection and runs calls on it in order.

    The writer runs the calls waiting in its queue as one group: one
    ``BEGIN IMMEDIATE`` transaction, a savepoint per call, one commit. A
    ``readonly`` call (and every call on the reader) runs alone in a read
    transaction, without taking the write lock.
    """

    def __init__(
        self,
        name: str,
        connect: Callable[[], sqlite3.Connection],
        *,
        writer: bool,
        busy_timeout: float,
        token: trio.lowlevel.TrioToken,
    ) -> None:
        self.name = name
        self._connect = connect
        self._writer = writer
        self._busy_timeout = busy_timeout
        self._token = token
        self._queue: queue_module.SimpleQueue[_Call[Any] | None] = queue_module.SimpleQueue()
        self._opened = trio.Event()
        self._exited = trio.Event()
        self._open_error: BaseException | None = None
        self._conn: sqlite3.Connection | None = None
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self.stopping = False

    async def start(self) -> None:
        """Start the thread and wait until its connection is open (or failed)."""
        self._thread.start()
        with trio.CancelScope(shield=True):
            await self._opened.wait()
        if self._open_error is not None:
            await self.stop()
            raise self._open_error

    async def stop(self) -> None:
        """Run what is queued, close the connection, and join the thread."""
        if not self.stopping:
            self.stopping = True
            self._queue.put(None)
        with trio.CancelScope(shield=True):
            await self._exited.wait()
        self._thread.join()  # it has signalled its very last step: this is immediate

    async def run(
        self, fn: Callable[[sqlite3.Connection], T], *, readonly: bool = False
    ) -> tuple[T, bool]:
        """Run ``fn(connection)`` on the thread; return its value and whether a
        cancel arrived while it ran (the caller is cancelled at its next checkpoint).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if self.stopping:
            raise BrokerError(f"the SQLite broker's {self.name} thread is closed")
        call: _Call[T] = _Call(
            fn, trio.lowlevel.current_task(), self._token, readonly or not self._writer
        )
        self._queue.put(call)
        value: Any = await trio.lowlevel.wait_task_rescheduled(call.abort)  # unwraps it
        if value is _DROPPED:  # cancelled while it waited for another process's lock
            await trio.lowlevel.checkpoint()  # raises Cancelled
            raise BrokerError("a cancelled SQLite call was dropped")  # pragma: no cover
        return value, call.cancel_requested

    # -- thread side ---------------------------------------------------------------

    def _main(self) -> None:
        try:
            self._conn = self._connect()
        except BaseException as exc:
            self._open_error = exc
        self._token.run_sync_soon(self._opened.set)
        try:
            if self._conn is not None:
                self._serve(self._conn)
        finally:
            if self._conn is not None:
                self._conn.close()
            self._token.run_sync_soon(self._exited.set)

    def _serve(self, conn: sqlite3.Connection) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            calls = [first]
            stop = False
            while len(calls) < _GROUP_MAX and not self._queue.empty():
                nxt = self._queue.get()  # there is one: only this thread takes
                if nxt is None:
                    stop = True
                    break
                calls.append(nxt)
            try:
                reads = [call for call in calls if call.readonly]
                if reads:
                    self._run_reads(conn, reads)
                if len(reads) < len(calls):
                    self._run_group(conn, [call for call in calls if not call.readonly])
            except Exception as exc:  # a savepoint or rollback failed: keep serving
                for call in calls:
                    call.finish(outcome.Error(exc))  # those not woken yet
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
            if stop:
                return

    def _run_reads(self, conn: sqlite3.Connection, calls: list[_Call[Any]]) -> None:
        """Run the reads that queued up together in one read transaction (one snapshot:
        they were all in flight at once, so any order is one they could have seen), and
        wake their tasks with one callback, as a group commit does."""
        results: list[tuple[_Call[Any], outcome.Outcome[Any]]] = []
        try:
            conn.execute("BEGIN")
            for call in calls:
                if not call.start():
                    continue
                try:
                    results.append((call, outcome.Value(call.fn(conn))))
                except BaseException as exc:
                    results.append((call, outcome.Error(exc)))
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")
        wake = [(call.task, result) for call, result in results if call.settle()]
        if wake:
            self._token.run_sync_soon(_reschedule_all, wake)

    def _begin_immediate(self, conn: sqlite3.Connection, calls: list[_Call[Any]]) -> bool:
        """Take the write lock, giving up after busy_timeout; False if every call
        was cancelled meanwhile (nothing to do).

        The writer's busy timeout is 0: every attempt returns at once. While
        another connection holds the lock the thread retries after sleeps growing
        from 0.1 ms to ``_BEGIN_MAX_SLEEP`` (SQLite's own busy handler sleeps 1,
        2, 5, 10 ms..., too coarse for a lock typically held for well under a
        millisecond). Once the wait passes ``_DROPPABLE_AFTER`` (another process
        holds the lock unusually long) the calls become droppable, and cancelled
        ones are dropped between attempts.
        """
        try:
            conn.execute("BEGIN IMMEDIATE")
            return True
        except sqlite3.OperationalError as exc:
            if not is_busy(exc):
                raise
        started = time.monotonic()
        deadline = started + self._busy_timeout
        pause = 0.0001
        while True:
            if time.monotonic() - started >= _DROPPABLE_AFTER and not [
                call for call in calls if call.make_droppable()
            ]:
                return False
            time.sleep(pause)
            pause = min(pause * 2, _BEGIN_MAX_SLEEP)
            try:
                conn.execute("BEGIN IMMEDIATE")
                return True
            except sqlite3.OperationalError as exc:
                if not is_busy(exc) or time.monotonic() >= deadline:
                    raise

    def _run_group(self, conn: sqlite3.Connection, calls: list[_Call[Any]]) -> None:
        try:
            if not self._begin_immediate(conn, calls):
                return
        except BaseException as exc:
            for call in calls:
                if call.start():
                    call.finish(outcome.Error(exc))
            return
        single = len(calls) == 1
        results: list[tuple[_Call[Any], outcome.Outcome[Any]]] = []
        lost: BaseException | None = None
        for call in calls:
            if not call.start():
                continue
            if lost is not None:
                results.append((call, outcome.Error(lost)))
                continue
            if not single:
                conn.execute("SAVEPOINT wf_call")
            try:
                value = call.fn(conn)
            except BaseException as exc:
                results.append((call, outcome.Error(exc)))
                if not conn.in_transaction:  # SQLite rolled the whole group back
                    lost = exc
                elif not single:
                    conn.execute("ROLLBACK TO wf_call")
                    conn.execute("RELEASE wf_call")
            else:
                results.append((call, outcome.Value(value)))
                if not single:
                    conn.execute("RELEASE wf_call")
        if lost is not None:
            failure = BrokerError(
                f"a SQLite transaction was rolled back by the database ({lost}); "
                "every call grouped in it failed"
            )
            results = [(call, outcome.Error(failure)) for call, _ in results]
        else:
            try:
                if single and results and isinstance(results[0][1], outcome.Error):
                    conn.execute("ROLLBACK")
                else:
                    conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                results = [(call, outcome.Error(exc)) for call, _ in results]
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        wake = [(call.task, result) for call, result in results if call.settle()]
        if wake:
            self._token.run_sync_soon(_reschedule_all, wake)
