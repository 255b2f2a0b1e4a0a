"""Limits on the SQLite broker, beyond the conformance: storage, cost, waking, damage.

A file of schema version 3 migrates keeping its messages; a dead letter keeps
its limit through a requeue; a cancelled claim gives its tokens back; defining
a limit again writes nothing; a claim never walks the messages a limit holds
back; a held consumer sleeps (it does not claim again and again) until a token
accrues or another process frees a slot; damaged limit names and limit rows
neither block a queue nor fail a read.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from sqlite_kit import claim_cost

from wireframe.jobs.broker import Broker, Delivery, Message, open_broker
from wireframe.jobs.brokers import sqlite as sqlite_broker
from wireframe.jobs.brokers.sqlite import SqliteBroker
from wireframe.jobs.brokers.sqlite import queues as sqlite_queues
from wireframe.jobs.limits import Limit

UrlFactory = Callable[..., str]


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


def _limited(ids: str, limit: str = "L") -> list[Message]:
    return [Message(i, f"body of {i}".encode(), limit=limit) for i in ids]


async def _take(broker: Broker, queue: str, n: int = 1) -> list[Delivery]:
    out: list[Delivery] = []
    with trio.fail_after(5):
        while len(out) < n:
            out += await broker.consume(queue, n - len(out))
    return out


async def _nothing_delivered(broker: Broker, queue: str, seconds: float = 0.2) -> None:
    with trio.move_on_after(seconds):
        got = await broker.consume(queue, 10)
        pytest.fail(f"delivered {[d.message.id for d in got]}")


def _poke(db_path: Path, *statements: tuple[str, tuple[object, ...]]) -> None:
    """Run statements on a connection of our own, as a hand edit would."""
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        for sql, args in statements:
            conn.execute(sql, args)
    finally:
        conn.close()


class _Claims:
    """Counts the claim and peek transactions the brokers of this process run."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.claims = self.peeks = 0
        claim, peek = sqlite_queues.claim, sqlite_queues.peek

        def counted_claim(*args: object, **kwargs: object) -> sqlite_queues.Claim:
            self.claims += 1
            return claim(*args, **kwargs)  # type: ignore[arg-type]

        def counted_peek(*args: object, **kwargs: object) -> sqlite_queues.Peek:
            self.peeks += 1
            return peek(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(sqlite_queues, "claim", counted_claim)
        monkeypatch.setattr(sqlite_queues, "peek", counted_peek)


# -- storage ---------------------------------------------------------------------


async def test_a_version_3_database_is_migrated_keeping_its_messages(
    make_url: UrlFactory, db_path: Path
) -> None:
    raw = sqlite3.connect(db_path, isolation_level=None)
    for version in (1, 2, 3):
        for statement in sqlite_broker.MIGRATIONS[version]:
            raw.execute(statement)
    raw.execute("UPDATE wf_schema SET version = 3")
    raw.execute("INSERT INTO wf_queues (name, created_at) VALUES ('q', 0)")
    raw.execute(
        "INSERT INTO wf_messages (queue, id, body, reply_to, visible_at, priority) VALUES"
        " ('q', 'old', x'01', 'ch', 0, 0), ('q', 'urgent', x'02', 'ch', 0, 5)"
    )
    raw.execute(
        "INSERT INTO wf_dead (queue, id, body, reply_to, reason, deliveries, died_at)"
        " VALUES ('q', 'dead', x'03', '', 'why', 5, 0)"
    )
    raw.close()
    async with open_broker(make_url()) as broker:
        got = await _take(broker, "q", 2)
        assert [d.message for d in got] == [
            Message("urgent", b"\x02", "ch", 5),
            Message("old", b"\x01", "ch"),
        ]
        [letter] = await broker.dead_letters()
        assert letter.message == Message("dead", b"\x03", "")
        await broker.define_limit(Limit("L", concurrency=1))
        await broker.publish("q", _limited("ab"))
        [a] = await _take(broker, "q")
        assert a.message == _limited("a")[0]
        await _nothing_delivered(broker, "q")
    raw = sqlite3.connect(db_path)
    assert raw.execute("SELECT version FROM wf_schema").fetchall() == [
        (sqlite_broker.SCHEMA_VERSION,)
    ]
    raw.close()


async def test_a_dead_letter_keeps_its_limit_through_a_requeue(make_url: UrlFactory) -> None:
    async with open_broker(make_url()) as broker:
        await broker.define_limit(Limit("L", concurrency=1))
        await broker.publish("q", _limited("ab"))
        [a] = await _take(broker, "q")
        await broker.dead_letter(a, "poison")
        [b] = await _take(broker, "q")
        [letter] = await broker.dead_letters()
        assert letter.message == _limited("a")[0]
        assert await broker.requeue_dead() == 1
        await _nothing_delivered(broker, "q")  # "a" is back within its limit: b runs
        await broker.complete(b, b"")
        [again] = await _take(broker, "q")
        assert again.message == _limited("a")[0]


async def test_a_cancelled_claim_gives_its_tokens_back(make_url: UrlFactory) -> None:
    async with open_broker(make_url()) as broker:
        assert isinstance(broker, SqliteBroker)
        await broker.define_limit(Limit("R", rate=1, per=3600))
        await broker.publish("q", _limited("ab", "R"))
        got = await _take(broker, "q")
        await broker._give_back(got)  # what a consume cancelled after its claim does
        [a] = await _take(broker, "q")
        assert (a.message.id, a.deliveries) == ("a", 1)
        await _nothing_delivered(broker, "q")


async def test_defining_a_limit_again_writes_nothing_and_a_new_rate_caps_the_tokens(
    make_url: UrlFactory, db_path: Path
) -> None:
    async with open_broker(make_url()) as broker:
        await broker.define_limit(Limit("R", rate=5, per=3600))
        await broker.publish("q", _limited("abcdef", "R"))
        assert len(await _take(broker, "q", 2)) == 2  # 3 tokens left
        watcher = sqlite3.connect(db_path)
        before = watcher.execute("PRAGMA data_version").fetchone()
        await broker.define_limit(Limit("R", rate=5, per=3600))
        assert watcher.execute("PRAGMA data_version").fetchone() == before, "it wrote"
        watcher.close()
        await broker.define_limit(Limit("R", rate=2, per=3600))  # 3 tokens capped at 2
        assert len(await _take(broker, "q", 2)) == 2
        await _nothing_delivered(broker, "q")


async def test_stats_count_the_held_messages_of_each_queue(make_url: UrlFactory) -> None:
    async with open_broker(make_url()) as broker:
        await broker.define_limit(Limit("L", concurrency=1))
        await broker.publish("q1", _limited("abc"))
        await broker.publish("q2", [*_limited("de"), Message("free", b"", limit="undefined")])
        await _take(broker, "q1")
        by_queue = {s.queue: s for s in await broker.stats()}
        assert (by_queue["q1"].queued, by_queue["q1"].held) == (2, 2)
        assert (by_queue["q2"].queued, by_queue["q2"].held) == (3, 2)


# -- cost --------------------------------------------------------------------------


async def test_a_claim_never_walks_the_messages_a_limit_holds_back(
    make_url: UrlFactory, db_path: Path
) -> None:
    """20,000 messages of a full limit ahead of one without a limit: a claim costs
    what it costs on a queue without them, found or not."""
    async with open_broker(make_url()) as broker:
        assert isinstance(broker, SqliteBroker)
        await broker.define_limit(Limit("L", concurrency=1))
        await broker.publish("crowded", _limited("x"))
        await _take(broker, "crowded")  # the limit is full from now on
        for base in range(0, 20_000, 2_000):
            batch = [Message(f"h{i}", b"held", limit="L") for i in range(base, base + 2_000)]
            await broker.publish("crowded", batch)
        await broker.publish("crowded", [Message("now", b"x")])
        await broker.publish("plain", [Message("now", b"x")])
        await broker.publish("idle", _limited("y"))
        claims = {queue: broker._claim(queue, 1) for queue in ("crowded", "plain", "idle")}
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        crowded, plain = claim_cost(conn, claims["crowded"]), claim_cost(conn, claims["plain"])
        assert crowded < plain + 50, (crowded, plain)  # 20,000 rows walked: 20,000+
        conn.execute("DELETE FROM wf_messages WHERE id = 'now'")
        nothing_free = claim_cost(conn, claims["crowded"])
        assert nothing_free < claim_cost(conn, claims["idle"]) + 50, nothing_free
    finally:
        conn.close()


# -- waiting -----------------------------------------------------------------------


async def test_a_consumer_held_by_a_rate_sleeps_until_the_next_token(
    make_url: UrlFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_broker(make_url()) as broker:
        await broker.define_limit(Limit("R", rate=1, per=0.5))
        await broker.publish("q", _limited("ab", "R"))
        await _take(broker, "q")
        counted = _Claims(monkeypatch)
        started = trio.current_time()
        [b] = await _take(broker, "q")
        waited = trio.current_time() - started
    assert b.message.id == "b"
    assert 0.4 < waited < 1.0, waited
    # the first look, the look again once its limit's signal is entered, the token's
    assert counted.claims <= 4, counted.claims


async def test_a_slot_freed_in_another_process_wakes_a_held_consumer(
    make_url: UrlFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broker that does not wake its in-process neighbours stands in for another
    process: its complete reaches the held consumer only through the watcher."""
    url = make_url(poll=0.05)
    async with open_broker(url) as remote, open_broker(url) as local:
        assert isinstance(remote, SqliteBroker)
        monkeypatch.setattr(remote, "_notify", lambda key: None)
        await remote.define_limit(Limit("L", concurrency=1))
        await remote.publish("q", _limited("ab"))
        [a] = await _take(remote, "q")
        counted = _Claims(monkeypatch)
        got: list[Delivery] = []
        async with trio.open_nursery() as nursery:

            async def consume() -> None:
                got.extend(await local.consume("q", 10))

            nursery.start_soon(consume)
            await trio.sleep(0.5)
            assert not got
            # a claim, another once its limit's signal is entered, a peek for the
            # remote's writes before it waited (the watcher's first look): no more
            held = (counted.claims, counted.peeks)
            assert held[0] <= 2 and held[1] <= 1, f"a held consumer looked {held} times"
            await remote.complete(a, b"")
            with trio.fail_after(2):
                while not got:
                    await trio.sleep(0.01)
        assert [d.message.id for d in got] == ["b"]


# -- damage ------------------------------------------------------------------------


async def test_damaged_limit_names_are_dead_lettered_not_blocking(
    make_url: UrlFactory, db_path: Path
) -> None:
    async with open_broker(make_url()) as broker:
        await broker.define_limit(Limit("L", concurrency=5))
        await broker.publish("q", _limited("ab"))
    now = time.time()
    insert = (
        "INSERT INTO wf_messages (queue, id, body, reply_to, visible_at, limit_name)"
        " VALUES ('q', ?, x'00', '', ?, {})"
    )
    _poke(
        db_path,
        (insert.format("x'4c'"), ("blob", now)),  # a BLOB
        (insert.format("CAST(x'ff4c' AS TEXT)"), ("not-utf8", now)),
        (insert.format("'Z'"), ("after", now)),
    )
    async with open_broker(make_url()) as broker:
        by_queue = {s.queue: s for s in await broker.stats()}  # reads, does not fail
        assert by_queue["q"].queued == 5
        got = await _take(broker, "q", 3)
        assert sorted(d.message.id for d in got) == ["a", "after", "b"]
        letters = {x.message.id: x for x in await broker.dead_letters()}
        assert sorted(letters) == ["blob", "not-utf8"]
        assert "limit_name holds BLOB" in letters["blob"].reason
        assert "limit_name holds TEXT that is not valid UTF-8" in letters["not-utf8"].reason


async def test_a_limit_row_nobody_can_read_holds_nothing_back(
    make_url: UrlFactory, db_path: Path
) -> None:
    async with open_broker(make_url()) as broker:
        await broker.define_limit(Limit("L", rate=1, per=3600))
        await broker.publish("q", _limited("abc"))
    _poke(db_path, ("UPDATE wf_limits SET rate = 0, tokens = 'many'", ()))
    async with open_broker(make_url()) as broker:
        assert len(await _take(broker, "q", 3)) == 3
        await broker.define_limit(Limit("L", rate=1, per=3600))  # repaired: a full bucket
        await broker.publish("q", _limited("de"))
        assert [d.message.id for d in await _take(broker, "q")] == ["d"]
        await _nothing_delivered(broker, "q")
