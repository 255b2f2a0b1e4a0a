"""The chaos suite's stage: real ``wireframe worker`` processes on a broker of the test's own.

:func:`open_scene` gives a test what every chaos case needs: a broker URL (a
SQLite file in the test's directory, or a ``redis-server`` the test starts on a
free port), worker processes started as a user starts them (``wireframe worker
--broker URL --import chaos_ops.py``), an execution log, and on the way out a
check that every worker not killed on purpose is still running. The processes
themselves are :mod:`procs`' (shared with the crash suite).

What every case asserts is here too: :meth:`Workers.roll_call` (each worker
still *consumes*, not merely runs), :class:`CountingRuntime` (no reply reached a
run twice), :func:`wait_drained` (nothing left queued or leased) and
:func:`check_broker_error` (an error is a ``BrokerError`` with a reason).
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import coredis
import trio
from chaos_ops import RollCall
from chaos_orchestrator import CountingRuntime, open_runtime
from procs import Child, ChildDied, ExecutionLog, Processes, RedisServer, open_processes

from wireframe import jobs
from wireframe.jobs import Broker, BrokerError, QueueStats, Runtime

__all__ = [
    "CONCURRENCY",
    "HERE",
    "LEASE",
    "OPS",
    "CountingRuntime",
    "Outcome",
    "Scene",
    "Workers",
    "check_broker_error",
    "context_switches",
    "gated",
    "open_runtime",
    "open_scene",
    "process_state",
    "redis_count",
    "signal_and_wait",
    "start_run",
    "wait_drained",
]

HERE = Path(__file__).resolve().parent
#: The operations module every worker imports (by path, as a user would).
OPS = HERE / "chaos_ops.py"
#: Seconds a lease lasts: a lost worker's jobs come back this fast.
LEASE = 1.0
#: Jobs one worker process runs at once.
CONCURRENCY = 4
#: High enough that no job of a chaos case dies of too many deliveries.
MAX_DELIVERIES = 50
#: What ``wireframe worker --plain`` prints once its worker loop runs.
READY = b"(Task, layer worker:default) running"
_LOOK = 0.02  # seconds between looks at state another process changes


def wireframe_argv() -> list[str]:
    """How to run the ``wireframe`` command of this environment (its script, as a user would)."""
    script = Path(sys.executable).with_name("wireframe")
    return [str(script)] if script.exists() else [sys.executable, "-m", "wireframe"]


class Workers:
    """``wireframe worker`` processes serving the ``default`` queue of one broker URL."""

    def __init__(self, procs: Processes, url: str, *, concurrency: int = CONCURRENCY) -> None:
        self._procs = procs
        self.url = url
        self.concurrency = concurrency
        self.children: list[Child] = []
        self._calls = itertools.count()

    @property
    def pids(self) -> list[int]:
        """The pids of the workers not killed on purpose."""
        return [c.pid for c in self.children]

    async def start(self, n: int = 1) -> list[Child]:
        """Start ``n`` workers and wait until each one's worker loop runs."""
        argv = [
            *wireframe_argv(),
            "worker",
            "--broker",
            self.url,
            "--import",
            str(OPS),
            "--concurrency",
            str(self.concurrency),
            "--plain",
        ]
        new = [await self._procs.start(argv, name="worker", ready_marker=READY) for _ in range(n)]
        for child in new:
            await child.ready.wait()
        self.children += new
        return new

    async def kill(self, child: Child) -> None:
        """SIGKILL one worker (it no longer counts as one that must stay alive)."""
        self.children.remove(child)
        await self._procs.kill(child)

    def check_alive(self) -> None:
        """Fail (with its output) if a worker not killed on purpose has exited, or if one
        showed its user a bare exception group (an error must say what went wrong)."""
        for child in self.children:
            if not child.running:
                raise ChildDied(
                    f"worker pid {child.pid} exited with {child.process.returncode}; "
                    f"{child.output_tail()}"
                )
            output = child.output_tail(limit=1 << 20)
            assert "ExceptionGroup" not in output, (
                f"worker pid {child.pid} printed an exception group:\n{output[-3000:]}"
            )

    async def roll_call(self, rt: Runtime, directory: Path) -> None:
        """Prove every live worker consumes: a run of ``workers x concurrency`` jobs that
        each wait for all workers succeeds, and each worker ran some of it."""
        self.check_alive()
        path = directory / f"rollcall-{next(self._calls)}.log"
        op = RollCall(str(path), expect=len(self.children))
        n = len(self.children) * self.concurrency
        pids = await jobs.from_iter(range(n)).map(op).collect().run(rt)
        missing = set(self.pids) - set(pids)
        assert not missing, (
            f"workers {sorted(missing)} took no job of the roll call (it ran on "
            f"{sorted(set(pids))}); their output:\n"
            + "\n".join(c.output_tail(1500) for c in self.children if c.pid in missing)
        )
        self.check_alive()


@attrs.define
class Scene:
    """One chaos case's processes, broker and logs; see :func:`open_scene`."""

    tmp: Path
    procs: Processes
    url: str
    workers: Workers
    log: ExecutionLog
    done: ExecutionLog
    redis: RedisServer | None = None


@asynccontextmanager
async def open_scene(
    tmp: Path,
    kind: str,
    *,
    workers: int = 2,
    persist: bool = True,
    redis_args: Sequence[str] = (),
    **options: object,
) -> AsyncIterator[Scene]:
    """A broker of ``kind`` (``"sqlite"`` or ``"redis"``) with ``workers`` worker processes.

    The URL has the suite's lease and delivery limit, and ``options`` on top.
    Redis is a server of the test's own (``persist``: AOF, or nothing;
    ``redis_args``: more server arguments). When the
    block ends, every worker not killed on purpose must still be running.
    """
    opts: dict[str, object] = {"lease": LEASE, "max_deliveries": MAX_DELIVERIES, **options}
    async with open_processes(tmp, home=HERE) as procs:
        redis = None
        if kind == "redis":
            redis = RedisServer(procs, tmp, persist=persist, extra=redis_args)
            await redis.start()
            url = redis.url(**opts)
        else:
            query = "&".join(f"{k}={v}" for k, v in opts.items())
            url = f"sqlite:///{tmp}/jobs.db?{query}"
        pool = Workers(procs, url)
        scene = Scene(
            tmp, procs, url, pool, ExecutionLog(tmp / "started.log"), ExecutionLog(tmp / "done.log")
        )
        scene.redis = redis
        if workers:
            await pool.start(workers)
        yield scene
        pool.check_alive()


@attrs.define
class Outcome:
    """What a run started by :func:`start_run` ended with: its value or its error."""

    value: Any = None
    error: BaseException | None = None
    done: trio.Event = attrs.field(factory=trio.Event)

    def result(self) -> Any:
        """The run's value; its error raised again if it failed."""
        assert self.done.is_set(), "the run has not ended"
        if self.error is not None:
            raise self.error
        return self.value


def start_run(nursery: trio.Nursery, run: Callable[..., Awaitable[Any]], *args: Any) -> Outcome:
    """Start ``run(*args)`` in ``nursery``; its value or error lands in the :class:`Outcome`."""
    outcome = Outcome()

    async def go() -> None:
        try:
            outcome.value = await run(*args)
        except Exception as exc:  # an ExceptionGroup too: the test judges it
            outcome.error = exc
        finally:
            outcome.done.set()

    nursery.start_soon(go)
    return outcome


async def gated(n: int, at: int, gate: trio.Event) -> AsyncIterator[int]:
    """``0 .. n-1``, holding back from ``at`` on until ``gate`` is set (the run cannot end first)."""
    for i in range(n):
        if i == at:
            await gate.wait()
        yield i


async def wait_drained(broker: Broker) -> list[QueueStats]:
    """Wait until no queue has a message queued or leased (others work: we poll)."""
    while True:
        stats = await broker.stats()
        if not any(s.queued or s.running for s in stats):
            return stats
        await trio.sleep(_LOOK)


def check_broker_error(exc: BaseException, *words: str) -> BrokerError:
    """``exc`` is a :class:`BrokerError` with a reason that mentions each of ``words``."""
    kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
    assert isinstance(exc, BrokerError), f"expected a BrokerError, got {kind}: {_describe(exc)}"
    text = str(exc)
    assert text.strip(), f"{kind} carries no reason"
    for word in words:
        assert word.lower() in text.lower(), f"{kind} does not mention {word!r}: {text}"
    return exc


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        inner = "; ".join(_describe(e) for e in exc.exceptions)
        return f"{exc!r} containing [{inner}]"
    return f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}"


async def redis_count(port: int, section: str, name: str, field: str) -> int:
    """One counter of the Redis server on ``port``: ``INFO section``'s ``name``'s ``field``
    (``"commandstats", "cmdstat_xreadgroup", "calls"``; 0 while the server has none)."""
    async with coredis.Redis(port=port, decode_responses=True) as admin:
        info = await admin.info(section)
    entry = info.get(name)
    if isinstance(entry, str):  # "count=3,..." where coredis does not split it
        entry = dict(pair.split("=", 1) for pair in entry.split(","))
    return int(entry[field]) if isinstance(entry, dict) and field in entry else 0


def process_state(pid: int) -> str:
    """The one-letter state of process ``pid`` (``T`` stopped, ``S`` sleeping, ...)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        return f.read().rpartition(")")[2].split()[0]


def context_switches(pid: int) -> int:
    """How often process ``pid``'s main thread gave up the CPU to wait (each idle poll does)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise AssertionError(f"no context switch count for pid {pid}")


async def signal_and_wait(pid: int, sig: signal.Signals, state: Iterable[str]) -> None:
    """Send ``sig`` to ``pid`` and wait until the kernel reports it in one of ``state``."""
    os.kill(pid, sig)
    wanted = set(state)
    while process_state(pid) not in wanted:
        await trio.sleep(0.001)
