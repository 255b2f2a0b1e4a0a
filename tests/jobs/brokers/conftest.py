"""Fresh, isolated broker URLs per test, for each broker the suite runs against.

``memory_broker_url`` is a unique name; ``sqlite_broker_url`` a database file
under the test's ``tmp_path``; ``redis_broker_url`` the server of
``WIREFRAME_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``) under a key
prefix of its own, whose keys are deleted after the test. Without a Redis
server the Redis tests are skipped with the reason, or fail when ``CI`` is set.
The SQLite and Redis fixtures skip only while their broker module does not
exist yet; any other import error fails the test.

``redis_server`` starts redis-servers of the test's own (on a free port, killed
by pid at the end; each start returns once the server accepts connections), for
tests that restart Redis, fill its memory or pause it - never the shared server.
"""

from __future__ import annotations

import importlib
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from wireframe.testing import skip_or_fail_unavailable


def require_broker_module(name: str) -> None:
    """Skip the test when ``wireframe.jobs.brokers.<name>`` does not exist (yet).

    Only that exact missing module skips; any other error propagates.
    """
    module = f"wireframe.jobs.brokers.{name}"
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        pytest.skip(f"{module} does not exist yet")


@pytest.fixture
def memory_broker_url() -> str:
    """A ``memory://`` URL with a name no other test uses."""
    return f"memory://conformance-{uuid.uuid4().hex}"


@pytest.fixture
def sqlite_broker_url(tmp_path: Path) -> str:
    """A ``sqlite://`` URL of a fresh database file."""
    require_broker_module("sqlite")
    return f"sqlite:///{tmp_path}/jobs.db"


@pytest.fixture
def redis_broker_url(fresh_redis_url: Callable[..., str]) -> str:
    """A ``redis://`` URL under a fresh key prefix; its keys are deleted afterwards."""
    require_broker_module("redis")
    return fresh_redis_url()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def unused_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    return _free_port()


def _until_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    """Return once ``proc`` accepts connections on ``port`` (a client connecting
    before then is refused, and coredis reports that as an exception group on exit)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {port} did not start") from None
            time.sleep(0.01)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start (and restart) a private redis-server; every one is killed at the end.

    ``redis_server(*extra)`` starts one on the same free port (``.port``) and
    directory each time, with AOF (fsync always) unless ``extra`` says otherwise
    (``"--appendonly", "no"``: a restart loses everything).
    """
    exe = shutil.which("redis-server")
    if exe is None:
        skip_or_fail_unavailable(
            "redis-server is not on PATH: cannot start a Redis of the test's own"
        )
    port = _free_port()
    procs: list[subprocess.Popen[bytes]] = []

    def start(*extra: str) -> subprocess.Popen[bytes]:
        args = [exe, "--port", str(port), "--dir", str(tmp_path), "--appendonly", "yes"]
        args += ["--save", "", "--appendfsync", "always", "--bind", "127.0.0.1", *extra]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(proc)
        _until_listening(port, proc)
        return proc

    start.port = port  # type: ignore[attr-defined]
    yield start
    for proc in procs:
        proc.kill()
        proc.wait()
