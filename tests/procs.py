"""Real processes for the crash and chaos suites: start them, see them ready, kill them, reap them.

:func:`open_processes` is the one way such a test starts a subprocess: every
child lives inside its nursery, its stdout is drained (and watched for a
"ready" marker), its stderr goes to a file, and on the way out every child
still running is SIGKILLed and waited for — no process outlives its test. A
child that exits on its own while it was expected to run fails the test at
once with the tail of its stderr.

:class:`RedisServer` is a ``redis-server`` of the test's own (a free port, its
data in the test's directory), so a test may kill, restart, pause or starve it
without touching the shared server. :class:`ExecutionLog` tails a file that
operations append one line per execution to (``index pid tag``), counting
executions in total, per worker pid, per input index and per tag.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from wireframe.testing import skip_or_fail_unavailable, with_options

__all__ = [
    "REPO",
    "Child",
    "ChildDied",
    "ExecutionLog",
    "Processes",
    "RedisServer",
    "child_env",
    "free_port",
    "open_processes",
    "redis_server_argv",
]

REPO = Path(__file__).resolve().parents[1]
_POLL = 0.005  # seconds between looks at a file another process writes
_KEPT_STDOUT = 8192  # bytes of a child's stdout kept for failure messages


def child_env(home: Path) -> dict[str, str]:
    """The environment of a child: ours, with the repo root and ``home`` importable."""
    env = dict(os.environ)
    paths = [str(REPO), str(home)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def redis_server_argv(
    port: int, directory: Path, *, persist: bool = True, extra: Sequence[str] = ()
) -> list[str]:
    """A foreground redis-server on ``port`` keeping its files in ``directory``.

    ``persist=True``: AOF with fsync always (a restart keeps every acknowledged
    write); ``persist=False``: no AOF and no snapshots (a restart comes back empty).
    ``extra`` are more ``--option value`` arguments.
    """
    server = shutil.which("redis-server")
    if server is None:
        skip_or_fail_unavailable(
            "redis-server is not on PATH: cannot start a Redis of the test's own"
        )
    return [
        server,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(directory),
        "--appendonly",
        "yes" if persist else "no",
        "--appendfsync",
        "always",
        "--save",
        "",
        "--daemonize",
        "no",
        *extra,
    ]


class Child:
    """One subprocess: its name, its process, and an event set when it printed its marker."""

    def __init__(self, name: str, process: trio.Process, stderr: Path, expect_exit: bool) -> None:
        self.name = name
        self.process = process
        self.stderr = stderr
        self.expect_exit = expect_exit
        self.ready = trio.Event()
        self.killed = False
        self.stdout = b""  # the last few KB the child wrote to stdout

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.process.pid

    @property
    def running(self) -> bool:
        """True while the process has not exited."""
        return self.process.returncode is None

    def stderr_tail(self, limit: int = 3000) -> str:
        """The last ``limit`` characters the child wrote to stderr."""
        try:
            return self.stderr.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def output_tail(self, limit: int = 3000) -> str:
        """The tails of what the child wrote to stdout and stderr, for a failure message."""
        out = self.stdout.decode(errors="replace")[-limit:]
        return f"stdout:\n{out}\nstderr:\n{self.stderr_tail(limit)}"


class ChildDied(Exception):
    """A child that should still be running exited on its own."""


class Processes:
    """The children of one test; see :func:`open_processes`.

    ``home`` is the directory of the helper scripts :meth:`start_python` runs;
    it is importable in every child (with the repository root).
    """

    def __init__(self, nursery: trio.Nursery, directory: Path, home: Path) -> None:
        self._nursery = nursery
        self._dir = directory
        self.home = home
        self.children: list[Child] = []
        self.kills = 0
        self._count = 0

    async def start(
        self,
        argv: Sequence[str],
        *,
        name: str,
        ready_marker: bytes = b"ready",
        expect_exit: bool = False,
        stdin: bool = False,
        on_line: Callable[[bytes], None] | None = None,
    ) -> Child:
        """Start ``argv``; its stdout is drained and watched for ``ready_marker``.

        With ``stdin=True`` the child's stdin is a pipe; ``on_line`` is called
        with every line of its stdout. The child leads a process group of its
        own, and the whole group is SIGKILLed at the end (its forks included).

        A child with ``expect_exit=False`` that exits without being killed
        through :meth:`kill` fails the test (``ChildDied``, with its stderr).
        """
        self._count += 1
        err_path = self._dir / f"{name}-{self._count}.err"
        err_fd = _open_for_child(err_path)
        try:
            process = await trio.lowlevel.open_process(
                list(argv),
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err_fd,
                env=child_env(self.home),
                start_new_session=True,
            )
        finally:
            os.close(err_fd)
        child = Child(name, process, err_path, expect_exit)
        self.children.append(child)
        self._nursery.start_soon(self._drain, child, ready_marker, on_line)
        return child

    async def start_python(
        self,
        script: str,
        *args: str,
        name: str,
        expect_exit: bool = False,
        stdin: bool = False,
        on_line: Callable[[bytes], None] | None = None,
        ready_marker: bytes = b"ready",
    ) -> Child:
        """Start ``python HOME/script args...`` (a helper script of the suite)."""
        return await self.start(
            [sys.executable, str(self.home / script), *args],
            name=name,
            expect_exit=expect_exit,
            stdin=stdin,
            on_line=on_line,
            ready_marker=ready_marker,
        )

    async def kill(self, child: Child) -> None:
        """SIGKILL ``child`` and wait until it is gone."""
        child.killed = True
        if child.process.returncode is None:
            child.process.send_signal(signal.SIGKILL)
            self.kills += 1
        await child.process.wait()

    @property
    def running(self) -> list[Child]:
        """Children not killed and not exited (spares included)."""
        return [c for c in self.children if not c.killed and c.process.returncode is None]

    async def _drain(
        self, child: Child, marker: bytes, on_line: Callable[[bytes], None] | None
    ) -> None:
        stdout = child.process.stdout
        assert stdout is not None
        seen = b""
        rest = b""
        async with stdout:
            while chunk := await stdout.receive_some(65536):
                child.stdout = (child.stdout + chunk)[-_KEPT_STDOUT:]
                if not child.ready.is_set():
                    seen = (seen + chunk)[-(len(marker) + len(chunk)) :]
                    if marker in seen:
                        child.ready.set()
                if on_line is not None:
                    *lines, rest = (rest + chunk).split(b"\n")
                    for line in lines:
                        on_line(line)
        code = await child.process.wait()
        if not child.killed and not child.expect_exit:
            raise ChildDied(
                f"{child.name} (pid {child.pid}) exited by itself with {code}; "
                f"{child.output_tail()}"
            )

    async def aclose(self) -> None:
        """SIGKILL and reap every child still running (a stopped one is killed too)."""
        with trio.CancelScope(shield=True):
            for child in self.children:
                child.killed = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)  # the child and its forks
            for child in self.children:
                await child.process.wait()
                if child.process.stdin is not None:
                    await child.process.stdin.aclose()


def _open_for_child(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)


@asynccontextmanager
async def open_processes(directory: Path, *, home: Path) -> AsyncIterator[Processes]:
    """A :class:`Processes` whose children are all killed and reaped when the block ends."""
    async with trio.open_nursery() as nursery:
        processes = Processes(nursery, directory, home)
        try:
            yield processes
        finally:
            await processes.aclose()
            nursery.cancel_scope.cancel()


class RedisServer:
    """A ``redis-server`` of one test: a free port, files under ``directory``, stopped by pid.

    ``persist`` picks AOF with fsync always (a restart keeps everything) or no
    persistence at all (a restart comes back empty), see :func:`redis_server_argv`;
    ``extra`` are more server arguments.
    """

    READY = b"Ready to accept connections"

    def __init__(
        self,
        procs: Processes,
        directory: Path,
        *,
        persist: bool = True,
        extra: Sequence[str] = (),
    ) -> None:
        self._procs = procs
        self.port = free_port()
        self.dir = directory / f"redis-{self.port}"
        self.dir.mkdir(parents=True)
        self.argv = redis_server_argv(self.port, self.dir, persist=persist, extra=extra)
        self.child: Child | None = None

    def url(self, **options: object) -> str:
        """A ``redis://`` URL of this server with query ``options``."""
        return with_options(f"redis://127.0.0.1:{self.port}/0", **options)

    async def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self.child = await self._procs.start(self.argv, name="redis", ready_marker=self.READY)
        await self.child.ready.wait()

    async def kill(self) -> None:
        """SIGKILL the server (no shutdown: what it did not persist is gone)."""
        assert self.child is not None
        await self._procs.kill(self.child)

    async def restart(self) -> None:
        """SIGKILL the server and start it again on the same port and directory."""
        await self.kill()
        await self.start()


class ExecutionLog:
    """Counts the lines of an execution log (``index pid [tag]`` per line): executions
    in total, per pid, per input index and per tag, and which pids ran each index."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.total = 0
        self.by_pid: Counter[int] = Counter()
        self.by_index: Counter[int] = Counter()
        self.by_tag: Counter[str] = Counter()
        self.pids_of: defaultdict[int, list[int]] = defaultdict(list)
        self._offset = 0
        self._rest = b""

    def poll(self) -> None:
        """Read what was appended since the last look."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            os.lseek(fd, self._offset, os.SEEK_SET)
            data = b""
            while chunk := os.read(fd, 1 << 16):
                data += chunk
        finally:
            os.close(fd)
        self._offset += len(data)
        *lines, self._rest = (self._rest + data).split(b"\n")
        for line in lines:
            index, pid, *tag = line.decode("ascii").split()
            self.total += 1
            self.by_pid[int(pid)] += 1
            self.by_index[int(index)] += 1
            self.by_tag[tag[0] if tag else ""] += 1
            self.pids_of[int(index)].append(int(pid))

    async def wait_until(self, predicate: Callable[[ExecutionLog], bool]) -> None:
        """Return once ``predicate(self)`` holds (looking every few milliseconds)."""
        while True:
            self.poll()
            if predicate(self):
                return
            await trio.sleep(_POLL)
