"""The crash tests' process harness: the shared one of ``tests/procs.py``, rooted here.

:func:`open_processes` is :func:`procs.open_processes` with this directory as
the home of the helper scripts (``crash_worker.py``, ``crash_orchestrator.py``),
importable in every child; :class:`Zygote` forks warm worker processes.
Everything else is re-exported from :mod:`procs`, which the chaos suite shares.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio
from procs import (
    REPO,
    Child,
    ChildDied,
    ExecutionLog,
    Processes,
    free_port,
    redis_server_argv,
)
from procs import child_env as _child_env
from procs import open_processes as _open_processes

__all__ = [
    "HERE",
    "REPO",
    "Child",
    "ExecutionLog",
    "Processes",
    "Zygote",
    "child_env",
    "free_port",
    "open_processes",
    "redis_server_argv",
]

HERE = Path(__file__).resolve().parent


def child_env() -> dict[str, str]:
    """The environment of a child: ours, with the repo root and this directory importable."""
    return _child_env(HERE)


@asynccontextmanager
async def open_processes(directory: Path) -> AsyncIterator[Processes]:
    """The children of one crash test (helper scripts from this directory), all reaped at the end."""
    async with _open_processes(directory, home=HERE) as processes:
        yield processes


class Zygote:
    """Worker processes forked from one warm ``crash_worker.py --zygote`` process.

    :meth:`fork` starts a worker in milliseconds; :meth:`kill` SIGKILLs one.
    Every worker belongs to the zygote's process group, which
    :func:`open_processes` kills at the end.
    """

    def __init__(self, procs: Processes, url: str, concurrency: int) -> None:
        self._procs = procs
        self._args = (url, str(concurrency), "--zygote")
        self._forked_send, self._forked = trio.open_memory_channel[int](100)
        self.ready: dict[int, trio.Event] = {}
        self.alive: list[int] = []
        self.kills = 0
        self.child: Child | None = None

    async def start(self) -> None:
        """Start the zygote and wait until it can fork."""
        self.child = await self._procs.start_python(
            "crash_worker.py",
            *self._args,
            name="zygote",
            stdin=True,
            on_line=self._line,
            ready_marker=b"warm",
        )
        await self.child.ready.wait()

    def _line(self, line: bytes) -> None:
        word, _, pid = line.partition(b" ")
        if word == b"forked":
            self._forked_send.send_nowait(int(pid))
        elif word == b"ready":
            self.ready.setdefault(int(pid), trio.Event()).set()

    async def fork(self) -> int:
        """A new worker process's pid (it serves as soon as it printed ``ready``)."""
        assert self.child is not None and self.child.process.stdin is not None
        await self.child.process.stdin.send_all(b"fork\n")
        pid = await self._forked.receive()
        self.ready.setdefault(pid, trio.Event())
        self.alive.append(pid)
        return pid

    def kill(self, pid: int) -> None:
        """SIGKILL worker ``pid`` (the zygote reaps it)."""
        os.kill(pid, signal.SIGKILL)
        self.alive.remove(pid)
        self.kills += 1

    def check_alive(self) -> None:
        """Fail if a worker that was not killed is gone (with the zygote's stderr)."""
        for pid in self.alive:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                tail = self.child.stderr_tail() if self.child is not None else ""
                raise ChildDied(f"worker {pid} exited by itself; stderr:\n{tail}") from None
