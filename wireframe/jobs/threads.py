"""Plain ``def`` jobs on a few long-lived threads, handed over and back in batches.

A worker runs a plain ``def execute`` off the trio thread, so that a blocking
call never freezes its loop (no other job, lease renewal or Ctrl-C could run
meanwhile). ``trio.to_thread.run_sync`` does that at a price paid per call: a
capacity limiter, a thread taken from trio's cache and woken, and one write to
trio's wake-up socket per result - about 80 µs of CPU per no-op job, which capped
plain-``def`` jobs at a seventh of ``async def`` ones.

:class:`JobThreads` keeps ``size`` threads for the life of a worker instead.
A job is handed over by appending it to a queue under a lock (a thread is woken
only if one is idle); a thread takes jobs one at a time, so a slow job never holds
back the quick ones behind it while another thread is free. Results come back in
*batches*: a thread appends each finished job to a list and asks the trio
thread to deliver it only when the list was empty, so every result that finishes
before the trio thread gets round to it rides on that one wake-up. Under load a
handful of wake-ups carry hundreds of results. (Measured in
``bench/jobs_memory.py``.)

Threads start on first use, up to ``size``, and end with the ``async with``
block that opened the pool: :func:`open_job_threads` waits, shielded, for every
thread to return, so none outlives its scope.

*Cancellation* is trio's rule for threads: a job still waiting for a thread is
taken off the queue and cancelled at once; a running one cannot be interrupted,
so its task waits for it to return (keeping its slot) and is cancelled then. The
job may call ``trio.from_thread.check_cancelled()`` to notice sooner, and
``trio.from_thread.run()``/``run_sync()`` to call back into trio: each thread
sets up trio's per-thread data the way ``trio.to_thread`` does
(:func:`_trio_thread_data`; a test names what a trio upgrade changed there).
"""

from __future__ import annotations

import collections
import contextvars
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Final

import attrs
import outcome
import trio
from trio import _threads  # trio's per-thread data for from_thread (see below)

__all__ = ["DEFAULT_THREADS", "JobThreads", "open_job_threads"]

#: Threads a worker keeps for plain ``def`` jobs unless told otherwise.
DEFAULT_THREADS: Final = 8

_QUEUED, _RUNNING, _DONE, _CANCELLED = range(4)


@attrs.define(eq=False)
class _Job:
    """One call handed to the pool, and the trio task parked until it returns."""

    fn: Callable[[], Any]
    context: contextvars.Context
    task: trio.lowlevel.Task
    state: int = _QUEUED
    result: outcome.Outcome[Any] | None = None
    #: trio's cancel register for this call: ``[raise_cancel]`` once it is cancelled.
    cancel_register: list[Any] = attrs.Factory(lambda: [None])


def _trio_thread_data(token: trio.lowlevel.TrioToken | None, job: _Job | None = None) -> None:
    """Make ``trio.from_thread`` work in this thread (``token``), for ``job`` when given.

    trio keeps what ``check_cancelled`` and ``from_thread.run`` need in a
    thread-local of ``trio._threads``, filled by ``trio.to_thread.run_sync``;
    this fills it the same way: the token and ``abandon_on_cancel`` once per
    thread, the job's cancel and task registers per job; ``token=None`` clears
    it. ``abandon_on_cancel`` is True so that ``from_thread.run`` runs its
    function in trio's system nursery rather than in the waiting task, which
    here is parked on the pool, not on to_thread.
    """
    data = _threads.PARENT_TASK_DATA
    if token is None:
        for name in ("token", "abandon_on_cancel", "cancel_register", "task_register"):
            data.__dict__.pop(name, None)
    elif job is None:
        data.token = token
        data.abandon_on_cancel = True
    else:
        data.cancel_register = job.cancel_register
        data.task_register = [job.task]


class JobThreads:
    """Up to ``size`` long-lived threads running plain ``def`` calls (see the module doc).

    Made by :func:`open_job_threads`; :meth:`run` is the only method a worker uses.

    The trio side takes no lock on its way: a job is appended to a deque
    (atomic), and an idle thread is notified only when one is idle and none is
    on its way already. A thread marks itself idle and looks at the deque once
    more before it sleeps, so a job appended meanwhile is never missed.
    Results go back through a second deque and one ``run_sync_soon`` per batch.
    """

    def __init__(self, size: int, token: trio.lowlevel.TrioToken) -> None:
        if size < 1:
            raise ValueError(f"a worker needs at least 1 thread for plain def jobs, not {size}")
        self.size = size
        self._token = token
        self._lock = threading.Condition(threading.Lock())
        self._todo: collections.deque[_Job] = collections.deque()
        self._finished: collections.deque[_Job] = collections.deque()
        self._delivering = False  # a _deliver is scheduled and has not started yet
        self._idle = 0
        self._waking = 0  # idle threads notified that have not taken a job yet
        self._threads: list[threading.Thread] = []
        self._closing = False
        self._exited = 0
        self._all_exited = trio.Event()

    @property
    def started(self) -> int:
        """How many threads have been started so far (they start on first use)."""
        return len(self._threads)

    async def run(self, fn: Callable[[], Any]) -> Any:
        """Call ``fn()`` on one of the pool's threads; its return value (or its exception)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._closing:
            raise RuntimeError("the worker's job threads are closed")
        job = _Job(fn, contextvars.copy_context(), trio.lowlevel.current_task())
        self._todo.append(job)
        if not self._waking and (self._idle or len(self._threads) < self.size):
            with self._lock:
                self._wake_one()

        def abort(raise_cancel: Any) -> trio.lowlevel.Abort:
            with self._lock:
                if job.state == _QUEUED:
                    job.state = _CANCELLED
                    self._todo.remove(job)
                    return trio.lowlevel.Abort.SUCCEEDED
                job.cancel_register[0] = raise_cancel
                return trio.lowlevel.Abort.FAILED

        return await trio.lowlevel.wait_task_rescheduled(abort)

    def _wake_one(self) -> None:
        """Under the lock, with jobs waiting: wake an idle thread, or start one.

        At most one thread is on its way at a time: a woken thread that finds
        more waiting wakes the next (:meth:`_serve`). A burst of quick jobs thus
        stays on the threads already awake instead of waking every thread to
        fight over the GIL, while slow (blocking) jobs still spread out.
        """
        if self._waking or not self._todo:
            return
        if self._idle:
            self._waking += 1
            self._lock.notify()
        elif len(self._threads) < self.size:
            self._waking += 1
            self._start_thread()

    def _start_thread(self) -> None:
        thread = threading.Thread(
            target=self._serve, name=f"wireframe-job-{len(self._threads)}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def _take(self, woken: bool) -> _Job | None:
        """A pool thread's next job, sleeping while there is none; None once the pool closes."""
        with self._lock:
            while not self._todo and not self._closing:
                if woken:
                    woken, self._waking = False, self._waking - 1
                self._idle += 1
                if not self._todo:  # appended before we counted as idle: nobody will notify
                    self._lock.wait()
                self._idle -= 1
                woken = not self._closing  # notified: only close wakes all
            if not self._todo:
                return None
            job = self._todo.popleft()
            job.state = _RUNNING
            if woken:
                self._waking -= 1
            if self._todo:
                self._wake_one()
            return job

    def _serve(self) -> None:
        """A pool thread: take jobs one at a time until the pool closes."""
        _trio_thread_data(self._token)
        woken = True  # a new thread counts as woken
        try:
            while (job := self._take(woken)) is not None:
                woken = False
                _trio_thread_data(self._token, job)
                job.result = outcome.capture(job.context.run, job.fn)
                job.state = _DONE
                self._finished.append(job)
                if not self._delivering:
                    with self._lock:
                        deliver, self._delivering = not self._delivering, True
                    if deliver:
                        self._token.run_sync_soon(self._deliver)
        finally:
            _trio_thread_data(None)
            self._token.run_sync_soon(self._thread_exited)

    def _deliver(self) -> None:
        """On the trio thread: wake every task whose job finished since the last delivery.

        The flag is cleared before the deque is drained: a result appended after
        the drain finds it clear and schedules the next delivery.
        """
        self._delivering = False
        finished = self._finished
        while finished:
            job = finished.popleft()
            assert job.result is not None
            trio.lowlevel.reschedule(job.task, job.result)

    def _thread_exited(self) -> None:
        self._exited += 1
        if self._exited == len(self._threads):
            self._all_exited.set()

    async def _close(self) -> None:
        """Let the threads finish what they run, then return once every one has ended."""
        with self._lock:
            self._closing = True
            self._lock.notify_all()
            if not self._threads:
                return
        with trio.CancelScope(shield=True):
            await self._all_exited.wait()
            # each thread said it is done; join them, so none is seen alive after us
            await trio.to_thread.run_sync(_join_all, list(self._threads))


def _join_all(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join()


@asynccontextmanager
async def open_job_threads(size: int = DEFAULT_THREADS) -> AsyncIterator[JobThreads]:
    """A :class:`JobThreads` of up to ``size`` threads, all ended when the block exits."""
    pool = JobThreads(size, trio.lowlevel.current_trio_token())
    try:
        yield pool
    finally:
        await pool._close()
