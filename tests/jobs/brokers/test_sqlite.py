"""SQLite-specific behaviour of the SQLite broker, on real database files.

The shared semantics are checked by the conformance suite; these tests cover what
only SQLite has: URL and path rules, durability across close/reopen and across a
killed process, several brokers (and a real second process) on one file, the
schema version guard and forward migrations, the lock-timeout and cancellation
paths of the connection threads, group commit, and that no thread outlives the
broker. Leases run on the wall clock; a test that needs one to run out opens its
brokers with an :class:`OffsetClock` and moves it forward instead of waiting.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from sqlite_kit import cancel_receive_after_its_take

from wireframe.jobs.broker import (
    Broker,
    BrokerError,
    BrokerUnavailable,
    BrokerURLError,
    Delivery,
    LockLost,
    Message,
    QueueStats,
    Reply,
    open_broker,
)
from wireframe.jobs.brokers import sqlite as sqlite_broker
from wireframe.jobs.brokers.sqlite import schema as sqlite_schema
from wireframe.testing import OffsetClock

UrlFactory = Callable[..., str]

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A database file path (not created yet)."""
    return tmp_path / "jobs.db"


@pytest.fixture
def make_url(db_path: Path) -> UrlFactory:
    """``sqlite:////abs/path/jobs.db`` with the given query options."""

    def make(**options: object) -> str:
        query = "&".join(f"{k}={v}" for k, v in options.items())
        return f"sqlite:///{db_path}" + (f"?{query}" if query else "")

    return make


def _messages(ids: list[str], reply_to: str = "") -> list[Message]:
    return [Message(i, f"body of {i}".encode(), reply_to) for i in ids]


def _sqlite_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("wireframe-sqlite-")]


async def _take(broker: Broker, queue: str, n: int) -> list[Delivery]:
    out: list[Delivery] = []
    with trio.fail_after(10):
        while len(out) < n:
            out += await broker.consume(queue, n - len(out))
    return out


async def _replies(broker: Broker, channel: str, n: int) -> list[Reply]:
    out: list[Reply] = []
    with trio.fail_after(10):
        while len(out) < n:
            out += await broker.receive_replies(channel, n - len(out))
    return out


# -- URLs --------------------------------------------------------------------------


def test_url_paths_three_slashes_relative_four_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert sqlite_broker.database_path("sqlite:///jobs.db") == tmp_path / "jobs.db"
    assert sqlite_broker.database_path("sqlite:///sub/dir/jobs.db") == tmp_path / "sub/dir/jobs.db"
    assert sqlite_broker.database_path("sqlite:////var/lib/jobs.db") == Path("/var/lib/jobs.db")
    assert sqlite_broker.database_path("sqlite:////with%20space.db") == Path("/with space.db")
    parsed = sqlite_broker.parse_sqlite_url(
        "sqlite:///j.db?lease=2.5&max_deliveries=9&poll=0.2&busy_timeout=3&synchronous=FULL"
    )
    assert (parsed.lease, parsed.max_deliveries) == (2.5, 9)
    assert parsed.options == {"poll": 0.2, "busy_timeout": 3.0, "synchronous": "full"}
    defaults = sqlite_broker.parse_sqlite_url("sqlite:///j.db")
    assert (defaults.lease, defaults.max_deliveries) == (30.0, 5)
    assert defaults.options == {"poll": 0.05, "busy_timeout": 10.0, "synchronous": "normal"}


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("sqlite:///:memory:", "in-memory SQLite is not supported"),
        ("sqlite:///:memory:?lease=1", "in-memory SQLite is not supported"),
        ("sqlite://", "names no database file"),
        ("sqlite:///", "names no database file"),
        ("sqlite:///some/dir/", "names no database file"),
        ("sqlite://localhost/jobs.db", "has no host"),
        ("sqlite:///jobs.db?pool=3", "unknown option 'pool'"),
        ("sqlite:///jobs.db?poll=0", "must be a positive number"),
        ("sqlite:///jobs.db?busy_timeout=soon", "is not a number"),
        ("sqlite:///jobs.db?synchronous=off", "'normal' or 'full'"),
        ("sqlite:///jobs.db?lease=-1", "must be a positive number"),
    ],
)
def test_url_errors_name_the_problem(url: str, complaint: str) -> None:
    with pytest.raises(BrokerURLError, match=complaint) as info:
        sqlite_broker.open(url)
    assert url in str(info.value)


async def test_missing_directory_is_unavailable_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "jobs.db"
    with pytest.raises(BrokerUnavailable, match="nowhere"):
        async with sqlite_broker.open(f"sqlite:///{path}"):
            pass  # pragma: no cover
    assert _sqlite_threads() == []


async def test_a_file_that_is_not_a_database_is_an_error_naming_it(db_path: Path) -> None:
    await trio.Path(db_path).write_bytes(b"this is not a database, " * 100)
    with pytest.raises(BrokerError, match="not a database") as info:
        async with sqlite_broker.open(f"sqlite:///{db_path}"):
            pass  # pragma: no cover
    assert str(db_path) in str(info.value)
    assert not isinstance(info.value, BrokerUnavailable)
    assert _sqlite_threads() == []


@pytest.mark.parametrize("where", ["jobs.db", "missing-dir/jobs.db"])
async def test_create_false_refuses_a_missing_file_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{where}"
    with pytest.raises(BrokerError) as info:
        async with open_broker(url, create=False):
            pass  # pragma: no cover
    assert str(info.value) == (
        f"no SQLite database at {str(tmp_path / where)!r} ({url}): "
        "inspection commands never create one; check the path"
    )
    assert not isinstance(info.value, BrokerUnavailable)
    assert list(await trio.Path(tmp_path).iterdir()) == []
    assert _sqlite_threads() == []


@pytest.mark.parametrize("content", [b"", None])
async def test_create_false_refuses_a_file_without_broker_tables_and_leaves_it(
    db_path: Path, content: bytes | None
) -> None:
    if content is None:  # another application's database
        other = sqlite3.connect(db_path)
        other.execute("CREATE TABLE invoices (id INTEGER)")
        other.commit()
        other.close()
    else:
        await trio.Path(db_path).write_bytes(content)
    before = await trio.Path(db_path).read_bytes()
    with pytest.raises(BrokerError, match="holds no job broker tables") as info:
        async with open_broker(f"sqlite:///{db_path}", create=False):
            pass  # pragma: no cover
    assert str(db_path) in str(info.value)
    assert await trio.Path(db_path).read_bytes() == before
    assert [p.name for p in await trio.Path(db_path.parent).iterdir()] == ["jobs.db"]


async def test_create_false_opens_an_existing_broker_database(make_url: UrlFactory) -> None:
    async with open_broker(make_url()) as broker:
        await broker.publish("q", _messages(["m"]))
    async with open_broker(make_url(), create=False) as broker:
        assert await broker.stats() == [QueueStats("q", queued=1, running=0, done=0, dead=0)]


# -- lifecycle ---------------------------------------------------------------------


async def test_no_thread_outlives_the_broker(make_url: UrlFactory) -> None:
    before = set(threading.enumerate())
    async with open_broker(make_url()) as broker:
        assert isinstance(broker, sqlite_broker.SqliteBroker)
        assert len(_sqlite_threads()) == 2  # one writer, one reader
        await broker.publish("q", _messages(["m"], reply_to="ch"))
        await broker.complete((await _take(broker, "q", 1))[0], b"r")
        with trio.move_on_after(0.05):
            await broker.consume("q", 1)  # the watcher polls meanwhile
        assert await _replies(broker, "ch", 1) == [Reply("m", body=b"r")]
    assert _sqlite_threads() == []
    # (trio's idle cached threads of other tests may have exited meanwhile: a subset)
    assert set(threading.enumerate()) <= before, set(threading.enumerate()) - before
    with pytest.raises(BrokerError, match="closed"):
        await broker.publish("q", _messages(["late"]))


async def test_bad_arguments_are_value_errors(make_url: UrlFactory) -> None:
    async with open_broker(make_url()) as broker:
        with pytest.raises(ValueError, match="delay"):
            await broker.publish("q", _messages(["m"]), delay=-1)
        with pytest.raises(ValueError, match="limit"):
            await broker.consume("q", 0)
        with pytest.raises(ValueError, match="limit"):
            await broker.receive_replies("ch", 0)
        await broker.publish("q", _messages(["m"]))
        [d] = await _take(broker, "q", 1)
        with pytest.raises(ValueError, match="delay"):
            await broker.abandon(d, delay=float("nan"))
        await broker.complete(d, None)  # the lease is intact


async def test_broker_is_usable_only_inside_open(make_url: UrlFactory) -> None:
    broker = sqlite_broker.SqliteBroker(
        sqlite_broker.parse_sqlite_url(make_url()), Path("unused.db")
    )
    with pytest.raises(BrokerError, match="inside open"):
        await broker.ping()


# -- durability --------------------------------------------------------------------


async def test_state_survives_close_and_reopen(make_url: UrlFactory) -> None:
    url, clock = make_url(lease=30), OffsetClock()
    async with sqlite_broker.open(url, clock=clock) as broker:
        await broker.publish("q", _messages(["done", "leased", "queued"], reply_to="ch"))
        await broker.publish("q", _messages(["later"]), delay=60)
        done, leased = await _take(broker, "q", 2)
        await broker.complete(done, b"result")
        assert leased.message.id == "leased"
    # "kill everything, start again": a new broker on the same file
    async with sqlite_broker.open(url, clock=clock) as broker:
        stats = await broker.stats()
        assert stats == [QueueStats("q", queued=2, running=1, done=1, dead=0, scheduled=1)]
        assert await _replies(broker, "ch", 1) == [Reply("done", body=b"result")]
        clock.advance(31)  # the lease runs out ("later" is still 29 s away)
        with pytest.raises(LockLost, match="lease expired"):
            await broker.complete(leased, b"stale")
        got = await _take(broker, "q", 2)
        assert [(d.message.id, d.deliveries) for d in got] == [("leased", 2), ("queued", 1)]
        for d in got:
            await broker.complete(d, None)
    async with sqlite_broker.open(url, clock=clock) as broker:
        assert await broker.stats() == [
            QueueStats("q", queued=1, running=0, done=3, dead=0, scheduled=1)
        ]
        assert await broker.purge() == 3
        assert await broker.stats() == [
            QueueStats("q", queued=1, running=0, done=0, dead=0, scheduled=1)
        ]


async def test_reply_and_dead_letters_survive_reopen(make_url: UrlFactory) -> None:
    url = make_url(max_deliveries=1)
    async with open_broker(url) as broker:
        await broker.publish("q", _messages(["bad"], reply_to="ch"))
        await broker.dead_letter((await _take(broker, "q", 1))[0], "cannot decode")
    async with open_broker(url) as broker:
        [dead] = await broker.dead_letters()
        assert (dead.message.id, dead.reason, dead.deliveries) == ("bad", "cannot decode", 1)
        assert await _replies(broker, "ch", 1) == [Reply("bad", dead_reason="cannot decode")]


# -- several brokers and processes on one file ------------------------------------


async def test_two_brokers_on_one_file_wake_each_other(make_url: UrlFactory) -> None:
    url = make_url(poll=0.02)
    async with (
        open_broker(url) as producer,
        open_broker(url) as worker,
        trio.open_nursery() as nursery,
    ):

        async def work() -> None:
            while True:
                for d in await worker.consume("q", 10):
                    await worker.complete(d, d.message.body.upper())

        nursery.start_soon(work)
        for round_ in range(3):
            await trio.sleep(0.05)  # let both go idle: the watcher backs off
            ids = [f"r{round_}m{i}" for i in range(5)]
            await producer.publish("q", _messages(ids, reply_to="ch"))
            with trio.fail_after(2):
                replies = await _replies(producer, "ch", 5)
            assert sorted(r.message_id for r in replies) == ids
        nursery.cancel_scope.cancel()


async def test_waiters_see_another_process_writes_through_the_watcher(
    make_url: UrlFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broker that does not wake its in-process neighbours stands in for another
    process: its writes reach the other broker's waiters only via data_version polls."""
    url = make_url(poll=0.05)
    async with open_broker(url) as remote, open_broker(url) as local:
        assert isinstance(remote, sqlite_broker.SqliteBroker)
        monkeypatch.setattr(remote, "_notify", lambda key: None)
        got: dict[str, object] = {}
        with trio.fail_after(5):
            await _serve_and_write(remote, local, got)
        assert got == {
            "consume": ["m"],
            "reply": [Reply("r", body=b"done")],
            "broadcast": b"run-1",
        }


async def _serve_and_write(remote: Broker, local: Broker, got: dict[str, object]) -> None:
    """Wait on ``local`` (consume, receive_replies, subscribe) while ``remote`` writes."""
    async with trio.open_nursery() as nursery:

        async def wait_consume() -> None:
            got["consume"] = [d.message.id for d in await local.consume("q", 5)]

        async def wait_reply() -> None:
            got["reply"] = await local.receive_replies("ch", 5)

        async def wait_broadcast(task_status: trio.TaskStatus[None]) -> None:
            async with local.subscribe("abort") as bodies:
                task_status.started()
                async for body in bodies:
                    got["broadcast"] = body
                    return

        nursery.start_soon(wait_consume)
        nursery.start_soon(wait_reply)
        await nursery.start(wait_broadcast)
        await trio.sleep(0.3)  # everyone idle: the watcher has backed off to `poll`
        await remote.publish("q", _messages(["m"]))
        await remote.publish("other", _messages(["r"], reply_to="ch"))
        [d] = await _take(remote, "other", 1)
        await remote.complete(d, b"done")
        await remote.broadcast("abort", b"run-1")


_CHILD = textwrap.dedent(
    """
    import sys, trio
    from wireframe.jobs.broker import open_broker

    async def main(url, count, complete):
        async with open_broker(url) as broker:
            print("ready", flush=True)
            taken = 0
            while taken < count:
                for d in await broker.consume("q", count - taken):
                    taken += 1
                    if complete:
                        await broker.complete(d, b"done by child " + d.message.body)
            print("leased" if not complete else "finished", flush=True)
            if not complete:
                await trio.sleep_forever()  # killed while holding the leases

    trio.run(main, sys.argv[1], int(sys.argv[2]), sys.argv[3] == "complete")
    """
)


def _child_env() -> dict[str, str]:
    """The environment of a child process that imports this checkout's wireframe."""
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


async def _read_line(process: trio.Process) -> str:
    assert process.stdout is not None
    data = b""
    with trio.fail_after(30):
        while not data.endswith(b"\n"):
            chunk = await process.stdout.receive_some(1)
            assert chunk, f"child exited early with {await process.wait()}"
            data += chunk
    return data.decode().strip()


@pytest.mark.slow
async def test_second_process_consumes_from_the_same_file(make_url: UrlFactory) -> None:
    url = make_url()
    async with open_broker(url) as broker:
        await broker.declare_queue("q")
        async with trio.open_nursery() as nursery:
            result: list[trio.CompletedProcess[bytes]] = []

            async def run_child() -> None:
                result.append(
                    await trio.run_process(
                        [sys.executable, "-c", _CHILD, url, "20", "complete"],
                        capture_stdout=True,
                        capture_stderr=True,
                        env=_child_env(),
                    )
                )

            nursery.start_soon(run_child)
            await broker.publish("q", _messages([f"m{i:02}" for i in range(20)], reply_to="ch"))
            replies = await _replies(broker, "ch", 20)
        assert sorted(r.body or b"" for r in replies) == [
            f"done by child body of m{i:02}".encode() for i in range(20)
        ]
        assert result[0].stdout.split() == [b"ready", b"finished"], result[0].stderr
        [stats] = await broker.stats()
        assert (stats.queued, stats.running, stats.done) == (0, 0, 20)


@pytest.mark.slow
async def test_leases_of_a_killed_process_run_out_and_redeliver(make_url: UrlFactory) -> None:
    url, clock = make_url(lease=30), OffsetClock()
    async with sqlite_broker.open(url, clock=clock) as broker:
        await broker.publish("q", _messages(["a", "b"], reply_to="ch"))
        process = await trio.lowlevel.open_process(
            [sys.executable, "-c", _CHILD, url, "2", "hold"],
            stdout=subprocess.PIPE,
            env=_child_env(),
        )
        try:
            assert await _read_line(process) == "ready"
            assert await _read_line(process) == "leased"
        finally:
            process.kill()
            await process.wait()
        [stats] = await broker.stats()
        assert (stats.queued, stats.running) == (0, 2)  # the dead child's leases hold...
        clock.advance(31)  # ...until they run out (the child leased on the real clock)
        got = await _take(broker, "q", 2)
        assert sorted((d.message.id, d.deliveries) for d in got) == [("a", 2), ("b", 2)]


# -- schema ------------------------------------------------------------------------


async def test_newer_schema_is_refused_and_the_file_left_alone(
    make_url: UrlFactory, db_path: Path
) -> None:
    async with open_broker(make_url()) as broker:
        await broker.publish("q", _messages(["m"]))
    raw = sqlite3.connect(db_path, isolation_level=None)
    raw.execute("UPDATE wf_schema SET version = 99")
    raw.close()
    before = await trio.Path(db_path).read_bytes()
    with pytest.raises(BrokerError) as info:
        async with open_broker(make_url()):
            pass  # pragma: no cover
    message = str(info.value)
    assert "version 99" in message and f"version {sqlite_broker.SCHEMA_VERSION}" in message
    assert str(db_path) in message
    assert await trio.Path(db_path).read_bytes() == before
    assert _sqlite_threads() == []


async def test_forward_migration_runs_once(
    make_url: UrlFactory, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_broker(make_url()) as broker:
        await broker.publish("q", _messages(["kept"]))
    after = sqlite_broker.SCHEMA_VERSION + 1
    monkeypatch.setattr(sqlite_schema, "SCHEMA_VERSION", after)  # what the migration reads
    monkeypatch.setitem(
        sqlite_broker.MIGRATIONS, after, ("ALTER TABLE wf_queues ADD COLUMN note TEXT",)
    )
    for _ in range(2):  # the second open finds the new version and migrates nothing
        async with open_broker(make_url()) as broker:
            assert [s.queued for s in await broker.stats()] == [1]
    raw = sqlite3.connect(db_path)
    assert raw.execute("SELECT version FROM wf_schema").fetchall() == [(after,)]
    columns = [row[1] for row in raw.execute("PRAGMA table_info(wf_queues)")]
    raw.close()
    assert "note" in columns


async def test_a_version_1_database_is_migrated_keeping_its_messages(
    make_url: UrlFactory, db_path: Path
) -> None:
    raw = sqlite3.connect(db_path, isolation_level=None)
    for statement in sqlite_broker.MIGRATIONS[1]:
        raw.execute(statement)
    raw.execute("UPDATE wf_schema SET version = 1")
    raw.execute("INSERT INTO wf_queues (name, created_at) VALUES ('q', 0)")
    raw.execute(
        "INSERT INTO wf_messages (queue, id, body, reply_to, visible_at) VALUES"
        " ('q', 'old', x'01', 'ch', 0)"
    )
    raw.close()
    async with open_broker(make_url()) as broker:
        delivery = await broker.consume("q", 1)
        assert [d.message.id for d in delivery] == ["old"]
        await broker.open_channel("run", 30)  # the tables version 2 added work
        await broker.keep_channel("run", 30)
    raw = sqlite3.connect(db_path)
    version = raw.execute("SELECT version FROM wf_schema").fetchall()
    raw.close()
    assert version == [(sqlite_broker.SCHEMA_VERSION,)]


async def test_a_version_2_database_is_migrated_keeping_messages_leases_and_delays(
    make_url: UrlFactory, db_path: Path
) -> None:
    now = time.time()
    raw = sqlite3.connect(db_path, isolation_level=None)
    for statement in (*sqlite_broker.MIGRATIONS[1], *sqlite_broker.MIGRATIONS[2]):
        raw.execute(statement)
    raw.execute("UPDATE wf_schema SET version = 2")
    raw.execute("INSERT INTO wf_queues (name, created_at, done) VALUES ('q', 0, 1)")
    raw.executemany(
        "INSERT INTO wf_messages (seq, queue, id, body, reply_to, visible_at, deliveries,"
        " lease_token, done_at) VALUES (?, 'q', ?, x'01', 'ch', ?, ?, ?, ?)",
        [
            (1, "visible", 0, 0, None, None),
            (2, "leased", now + 300, 1, "2.abc", None),  # a current lease
            (3, "delayed", now + 60, 0, None, None),
            (4, "done", 0, 1, None, now),
            (5, "expired", 1, 1, "5.old", None),  # a lease that ran out
        ],
    )
    raw.execute(
        "INSERT INTO wf_dead (queue, id, body, reply_to, reason, deliveries, died_at)"
        " VALUES ('q', 'dead', x'02', '', 'why', 5, 0)"
    )
    raw.close()
    clock = OffsetClock()
    async with sqlite_broker.open(make_url(), clock=clock) as broker:
        assert await broker.stats() == [
            QueueStats("q", queued=3, running=1, done=1, dead=1, scheduled=1)
        ]
        got = await _take(broker, "q", 2)
        assert [(d.message.id, d.deliveries) for d in got] == [("visible", 1), ("expired", 2)]
        leased = Delivery(Message("leased", b"\x01", "ch"), "q", 1, "2.abc", now + 300)
        await broker.complete(leased, b"kept its lease")
        await broker.publish("q", [Message("plain", b""), Message("urgent", b"", priority=5)])
        ordered = await _take(broker, "q", 2)
        assert [d.message.id for d in ordered] == ["urgent", "plain"]
        for d in [*got, *ordered]:
            await broker.complete(d, None)
        with trio.move_on_after(0.1):
            pytest.fail(f"delivered {await broker.consume('q', 1)} before its delay")
        clock.advance(61)
        assert [d.message.id for d in await _take(broker, "q", 1)] == ["delayed"]
        assert await broker.requeue_dead() == 1
        [revived] = await _take(broker, "q", 1)
        assert revived.message == Message("dead", b"\x02", "")
        assert await broker.job("dead") is None  # a message from before is not a tracked job
    raw = sqlite3.connect(db_path)
    assert raw.execute("SELECT version FROM wf_schema").fetchall() == [
        (sqlite_broker.SCHEMA_VERSION,)
    ]
    raw.close()


# -- locks, cancellation and group commit ------------------------------------------


async def test_write_lock_held_elsewhere_times_out_or_cancels(
    make_url: UrlFactory, db_path: Path
) -> None:
    async with open_broker(make_url(busy_timeout=0.5)) as broker:
        await broker.declare_queue("q")
        other = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            with pytest.raises(BrokerUnavailable, match="locked"):
                await broker.publish("q", _messages(["timed out"]))
            started = trio.current_time()
            with trio.move_on_after(0.05) as scope:
                await broker.publish("q", _messages(["cancelled"]))
            assert scope.cancelled_caught
            # dropped once it has waited 0.1 s for the lock, not after busy_timeout
            assert trio.current_time() - started < 0.4
        finally:
            other.execute("ROLLBACK")
            other.close()
        await broker.publish("q", _messages(["after"]))
        [d] = await _take(broker, "q", 1)
        assert d.message.id == "after", "a timed-out or cancelled publish wrote nothing"
        assert [s.queued for s in await broker.stats()] == [0]


async def test_waits_are_cancellable(make_url: UrlFactory) -> None:
    async with open_broker(make_url()) as broker:
        with trio.move_on_after(0.05) as scope:
            await broker.consume("q", 1)
        assert scope.cancelled_caught
        with trio.move_on_after(0.05) as scope:
            await broker.receive_replies("ch", 1)
        assert scope.cancelled_caught
        with trio.move_on_after(0.05) as scope:
            async with broker.subscribe("t") as bodies:
                async for _ in bodies:
                    pass  # pragma: no cover
        assert scope.cancelled_caught
        await broker.publish("q", _messages(["m"], reply_to="ch"))
        [d] = await _take(broker, "q", 1)
        assert d.deliveries == 1, "a cancelled consume claimed nothing"


class _StepCounter(trio.abc.Instrument):
    """Counts the steps of the tasks whose name contains ``part`` (a real trio hook)."""

    def __init__(self, part: str) -> None:
        self.part = part
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if self.part in task.name:
            self.steps += 1


async def test_an_idle_waiter_outlasts_any_backoff(
    make_url: UrlFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle worker must wait for days: its watcher's backoff stays bounded.

    With ``poll`` tiny, thousands of idle data_version polls (each one a step of
    the watcher task after its thread call and one after its sleep) pass in a
    fraction of a second; the backoff that once grew as 2 ** polls overflowed
    after ~1,030 of them and killed the broker. Afterwards another process's
    write still wakes the waiter: the watcher is alive and polling.
    """
    url = make_url(poll=0.00001)
    counter = _StepCounter("._watch")
    trio.lowlevel.add_instrument(counter)
    try:
        async with (
            open_broker(url) as remote,
            open_broker(url) as local,
            trio.open_nursery() as nursery,
        ):
            assert isinstance(remote, sqlite_broker.SqliteBroker)
            monkeypatch.setattr(remote, "_notify", lambda key: None)  # "another process"
            got: list[str] = []

            async def wait() -> None:
                got.extend(d.message.id for d in await local.consume("q", 1))

            nursery.start_soon(wait)
            with trio.fail_after(60):
                while counter.steps < 3 * 2 * 1100:  # > 3,000 idle polls of each watcher
                    await trio.sleep(0.01)
                await remote.publish("q", _messages(["after a long idle"]))
                while not got:
                    await trio.sleep(0.001)
            assert got == ["after a long idle"]
    finally:
        trio.lowlevel.remove_instrument(counter)


async def test_wake_up_state_does_not_grow_with_finished_waits(make_url: UrlFactory) -> None:
    """Every run has a channel of its own: once nobody waits on it, the broker keeps
    nothing for it (a long-lived orchestrator runs millions)."""
    async with open_broker(make_url()) as broker:
        assert isinstance(broker, sqlite_broker.SqliteBroker)
        for i in range(20):
            await broker.publish("q", _messages([f"m{i}"], reply_to=f"ch{i}"))
            [d] = await _take(broker, "q", 1)
            await broker.complete(d, b"r")
            assert await _replies(broker, f"ch{i}", 1) == [Reply(f"m{i}", body=b"r")]
            with trio.move_on_after(0.001):
                await broker.receive_replies(f"idle{i}", 1)
            with trio.move_on_after(0.001):
                await broker.consume(f"idle{i}", 1)
        assert broker._wake._signals == {}


async def test_subscription_ends_when_the_broker_closes(make_url: UrlFactory) -> None:
    received: list[bytes] = []
    async with open_broker(make_url()) as broker:

        async def listen(task_status: trio.TaskStatus[None]) -> None:
            async with broker.subscribe("abort") as bodies:
                task_status.started()
                async for body in bodies:
                    received.append(body)

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                await nursery.start(listen)
                await broker.broadcast("abort", b"one")
                while not received:
                    await trio.sleep(0.01)
                await broker.aclose()  # listen() returns: its iteration ended
    assert received == [b"one"]


async def test_consume_cancelled_mid_claim_gives_messages_back(
    make_url: UrlFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_broker(make_url()) as broker:
        assert isinstance(broker, sqlite_broker.SqliteBroker)
        await broker.publish("q", _messages(["m"], reply_to="ch"))
        started, release = threading.Event(), threading.Event()
        real_claim = broker._claim

        def slow_claim(queue: str, limit: int) -> Callable[[sqlite3.Connection], object]:
            claim = real_claim(queue, limit)

            def run(conn: sqlite3.Connection) -> object:
                result = claim(conn)
                started.set()
                release.wait(5)
                return result

            return run

        monkeypatch.setattr(broker, "_claim", slow_claim)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(broker.consume, "q", 1)
            await trio.to_thread.run_sync(started.wait, 5)
            nursery.cancel_scope.cancel()  # the claim is running: it cannot be dropped
            release.set()
        monkeypatch.undo()
        [d] = await _take(broker, "q", 1)
        assert (d.message.id, d.deliveries) == ("m", 1), "given back, and not counted"


async def test_receive_cancelled_mid_take_puts_replies_back(
    make_url: UrlFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_broker(make_url()) as broker:
        assert isinstance(broker, sqlite_broker.SqliteBroker)
        await broker.publish("q", _messages(["a", "b", "c"], reply_to="ch"))
        for d in await _take(broker, "q", 3):
            await broker.complete(d, d.message.id.encode())
        await cancel_receive_after_its_take(broker, "ch", monkeypatch)
        got = await _replies(broker, "ch", 3)
        assert [r.message_id for r in got] == ["a", "b", "c"], "put back in their order"


async def test_group_commit_keeps_each_completion_separate(make_url: UrlFactory) -> None:
    clock = OffsetClock()
    async with sqlite_broker.open(make_url(lease=30), clock=clock) as broker:
        await broker.publish("q", _messages(["stale"], reply_to="ch"))
        [stale] = await _take(broker, "q", 1)
        clock.advance(31)  # its lease runs out
        await broker.publish("q", _messages([f"m{i:02}" for i in range(30)], reply_to="ch"))
        fresh = await _take(broker, "q", 31)
        errors: list[BaseException] = []

        async def complete(d: Delivery) -> None:
            try:
                await broker.complete(d, d.message.id.encode())
            except LockLost as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:  # all queued at once: one group
            for d in [*fresh[:15], stale, *fresh[15:]]:
                nursery.start_soon(complete, d)
        assert [type(e) for e in errors] == [LockLost]
        replies = await _replies(broker, "ch", 31)
        assert sorted(r.message_id for r in replies) == sorted(d.message.id for d in fresh)
        assert [r for r in replies if r.message_id == "stale"] == [Reply("stale", body=b"stale")]
        [stats] = await broker.stats()
        assert (stats.queued, stats.running, stats.done) == (0, 0, 31)


async def test_brokers_opening_one_new_file_together_all_open(tmp_path: Path) -> None:
    """Preparing a fresh file (WAL switch, schema) while others do the same is retried."""
    for trial in range(20):
        url = f"sqlite:///{tmp_path}/together-{trial}.db"
        opened: list[bool] = []

        async def open_one(url: str = url, opened: list[bool] = opened) -> None:
            async with open_broker(url) as broker:
                await broker.declare_queue("q")
                opened.append(True)

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(open_one)
        assert opened == [True, True, True]
