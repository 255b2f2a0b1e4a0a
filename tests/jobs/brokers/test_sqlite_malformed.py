"""Rows a hand edit or a damaged file broke, written straight into the SQLite file.

SQLite keeps any value in any column. Each test writes poison rows with
``sqlite3`` next to good ones and then goes through the broker: the good ones
must arrive, the poison must go to the dead-letter store (or reach its waiter as
a dead reply, or be skipped) with a reason naming the row, the column and what
it held — and nothing may raise on every read, which would block the queue.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import time
from pathlib import Path

import pytest
import trio
from sqlite_kit import cancel_receive_after_its_take

from wireframe.jobs.broker import Broker, Delivery, Message, Reply, open_broker
from wireframe.jobs.brokers.sqlite import SqliteBroker


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "jobs.db"


@pytest.fixture
def url(db_path: Path) -> str:
    return f"sqlite:///{db_path}"


def _poke(db_path: Path, *statements: tuple[str, tuple[object, ...]]) -> None:
    """Run statements on a connection of our own, as a hand edit would."""
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        for sql, args in statements:
            conn.execute(sql, args)
    finally:
        conn.close()


def _allow_null_deliveries(db_path: Path) -> None:
    """Drop the NOT NULL of wf_messages.deliveries, as a hand-edited schema could."""
    _poke(
        db_path,
        ("PRAGMA writable_schema = ON", ()),
        (
            "UPDATE sqlite_master SET sql = replace(sql, 'deliveries INTEGER NOT NULL DEFAULT 0',"
            " 'deliveries INTEGER DEFAULT 0') WHERE name = 'wf_messages'",
            (),
        ),
    )


_INSERT_MESSAGE = (
    "INSERT INTO wf_messages (seq, queue, id, body, reply_to, visible_at, deliveries, priority)"
    " VALUES (?, 'q', {id}, {body}, {reply_to}, {visible_at}, {deliveries}, {priority})"
)

#: seq -> (id, body, reply_to, visible_at, deliveries, priority) as SQL, and what the
#: reason says.
POISON: dict[int, tuple[dict[str, str], str]] = {
    11: ({"body": "'a text body'"}, "body holds TEXT 'a text body', expected a BLOB"),
    12: ({"deliveries": "'twice'"}, "deliveries holds TEXT 'twice', expected a whole number >= 0"),
    13: ({"deliveries": "NULL"}, "deliveries holds NULL, expected a whole number >= 0"),
    14: ({"deliveries": "-3"}, "deliveries holds INTEGER -3, expected a whole number >= 0"),
    15: ({"deliveries": "1.5"}, "deliveries holds REAL 1.5, expected a whole number >= 0"),
    16: ({"id": "x'ff00'"}, "id holds BLOB x'ff00', expected TEXT"),
    17: ({"id": "CAST(x'ff41' AS TEXT)"}, "id holds TEXT that is not valid UTF-8 (b'\\xffA')"),
    18: ({"reply_to": "x'7031'"}, "reply_to holds BLOB x'7031', expected TEXT"),
    19: ({"visible_at": "'soon'"}, "visible_at holds TEXT 'soon', expected a time in seconds"),
    20: ({"body": "42", "reply_to": "7"}, "body holds INTEGER 42, expected a BLOB"),
    21: ({"priority": "'high'"}, "priority holds TEXT 'high', expected a whole number"),
}


def _poison_statement(seq: int, columns: dict[str, str]) -> tuple[str, tuple[object, ...]]:
    values = {
        "id": f"'poison-{seq}'",
        "body": "x'00'",
        "reply_to": "'ch'",
        "visible_at": "0",
        "deliveries": "0",
        "priority": "0",
        **columns,
    }
    return _INSERT_MESSAGE.format(**values), (seq,)


async def _take(broker: Broker, queue: str, n: int) -> list[Delivery]:
    out: list[Delivery] = []
    with trio.fail_after(10):
        while len(out) < n:
            out += await broker.consume(queue, n - len(out))
    return out


async def test_malformed_messages_go_to_dead_letters_and_the_queue_goes_on(
    url: str, db_path: Path
) -> None:
    async with open_broker(url) as broker:
        await broker.publish("q", [Message("good-1", b"one", "ch")])
    _allow_null_deliveries(db_path)
    _poke(db_path, *(_poison_statement(seq, cols) for seq, (cols, _) in POISON.items()))
    async with open_broker(url) as broker:
        await broker.publish("q", [Message("good-2", b"two", "ch")])
        got = await _take(broker, "q", 2)
        assert [(d.message.id, d.message.body, d.deliveries) for d in got] == [
            ("good-1", b"one", 1),
            ("good-2", b"two", 1),
        ]
        for d in got:
            await broker.complete(d, b"done")
        letters = {_seq_of(d.reason): d for d in await broker.dead_letters()}
        assert sorted(letters) == sorted(POISON)
        for seq, (_, complaint) in POISON.items():
            letter = letters[seq]
            assert letter.reason.startswith(f"malformed message row (wf_messages seq {seq}): ")
            assert complaint in letter.reason, (seq, letter.reason)
            assert letter.queue == "q"
        # what could be read is kept, so a retry puts it back well formed
        assert letters[11].message.body == b"a text body"
        assert letters[11].message.id == "poison-11"
        assert letters[16].message.id == "<unreadable id of wf_messages seq 16>"
        assert letters[18].message.reply_to == "p1"  # a BLOB that is UTF-8 text
        assert letters[20].message.reply_to == "7"  # TEXT affinity made the number text
        # every readable reply channel got a dead reply with the reason
        replies = await _replies(broker, "ch", 2 + 9)
        assert {r.message_id: r.dead_reason for r in replies} == {
            "good-1": None,
            "good-2": None,
            **{letters[seq].message.id: letters[seq].reason for seq in (11, 12, 13, 14, 15)},
            **{letters[seq].message.id: letters[seq].reason for seq in (16, 17, 19, 21)},
        }
        assert await _replies(broker, "p1", 1) == [Reply("poison-18", None, letters[18].reason)]
        assert await _replies(broker, "7", 1) == [Reply("poison-20", None, letters[20].reason)]
        [stats] = await broker.stats()
        assert (stats.queued, stats.running, stats.done, stats.dead) == (0, 0, 2, len(POISON))


async def test_a_damaged_delayed_or_leased_row_is_dead_lettered_once_nothing_is_visible(
    url: str, db_path: Path
) -> None:
    """A held row (delayed: token ``''``, or leased) whose visible_at is not a number
    would never come due; a claim that finds nothing visible takes it out."""
    async with open_broker(url) as broker:
        await broker.declare_queue("q")
    _poke(
        db_path,
        (
            "INSERT INTO wf_messages (seq, queue, id, body, reply_to, visible_at, lease_token)"
            " VALUES (1, 'q', 'delayed', x'00', 'ch', 'soon', ''),"
            " (2, 'q', 'leased', x'00', 'ch', x'00', '2.abc')",
            (),
        ),
    )
    async with open_broker(url) as broker:
        await broker.publish("q", [Message("later", b"", "ch")], delay=3600)
        with trio.move_on_after(0.2):
            pytest.fail(f"delivered {await broker.consume('q', 5)}")
        letters = {d.message.id: d.reason for d in await broker.dead_letters()}
        assert letters == {
            "delayed": "malformed message row (wf_messages seq 1): visible_at holds TEXT 'soon',"
            " expected a time in seconds",
            "leased": "malformed message row (wf_messages seq 2): visible_at holds BLOB x'00',"
            " expected a time in seconds",
        }
        [stats] = await broker.stats()
        assert (stats.queued, stats.running, stats.dead) == (1, 0, 2)


def _seq_of(reason: str) -> int:
    match = re.match(r"malformed message row \(wf_messages seq (\d+)\)", reason)
    assert match, reason
    return int(match[1])


async def _replies(broker: Broker, channel: str, n: int) -> list[Reply]:
    out: list[Reply] = []
    with trio.fail_after(10):
        while len(out) < n:
            out += await broker.receive_replies(channel, n - len(out))
    return out


_INSERT_REPLY = "INSERT INTO wf_replies (channel, seq, message_id, body, dead_reason) VALUES"


async def test_malformed_replies_reach_their_waiter_as_dead_replies(
    url: str, db_path: Path
) -> None:
    async with open_broker(url) as broker:
        await broker.declare_queue("q")
        _poke(
            db_path,
            (f"{_INSERT_REPLY} ('rc', 'zzz', 'text-seq', x'01', NULL)", ()),
            (f"{_INSERT_REPLY} ('rc', -2, 'text-body', 'oops', NULL)", ()),
            (f"{_INSERT_REPLY} ('rc', -1, x'ff', x'01', NULL)", ()),
            (f"{_INSERT_REPLY} ('rc', 0, 'neither', NULL, NULL)", ()),
        )
        # a hand-edited TEXT seq must not make new replies collide (max(seq) + 1 was 1)
        await broker.publish("q", [Message(f"good-{i}", b"x", "rc") for i in range(2)])
        for d in await _take(broker, "q", 2):
            await broker.complete(d, b"result of " + d.message.id.encode())
        replies = await _replies(broker, "rc", 6)
    assert replies == [
        Reply(
            "text-body",
            dead_reason="malformed reply row (wf_replies channel 'rc' seq -2): "
            "body holds TEXT 'oops', expected a BLOB or NULL",
        ),
        Reply(
            "<unreadable message_id of wf_replies seq -1>",
            dead_reason="malformed reply row (wf_replies channel 'rc' seq -1): "
            "message_id holds BLOB x'ff', expected TEXT",
        ),
        Reply(
            "neither",
            dead_reason="malformed reply row (wf_replies channel 'rc' seq 0): "
            "neither body nor dead_reason is set",
        ),
        Reply("good-0", body=b"result of good-0"),
        Reply("good-1", body=b"result of good-1"),
        Reply("text-seq", body=b"\x01"),  # well formed but for its seq: it just sorts last
    ]


async def test_a_cancelled_take_of_malformed_replies_puts_them_back_first(
    url: str, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_broker(url) as broker:
        assert isinstance(broker, SqliteBroker)
        await broker.declare_queue("q")
        _poke(
            db_path,
            (f"{_INSERT_REPLY} ('rc', 'zzz', 'text-seq', x'01', NULL)", ()),
            (f"{_INSERT_REPLY} ('rc', 5, 'text-body', 'oops', NULL)", ()),
        )
        await broker.publish("q", [Message(f"good-{i}", b"x", "rc") for i in range(2)])
        for d in await _take(broker, "q", 2):
            await broker.complete(d, b"result")
        await cancel_receive_after_its_take(broker, "rc", monkeypatch)
        replies = await _replies(broker, "rc", 4)
    reason = (
        "malformed reply row (wf_replies channel 'rc' seq 5): "
        "body holds TEXT 'oops', expected a BLOB or NULL"
    )
    assert replies == [
        Reply("text-body", dead_reason=reason),
        Reply("good-0", body=b"result"),
        Reply("good-1", body=b"result"),
        Reply("text-seq", body=b"\x01"),
    ]


async def test_malformed_broadcasts_are_skipped_with_a_warning(
    url: str, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    received: list[bytes] = []
    async with open_broker(url) as broker, trio.open_nursery() as nursery:

        async def listen(task_status: trio.TaskStatus[None]) -> None:
            async with broker.subscribe("abort") as bodies:
                task_status.started()
                async for body in bodies:
                    received.append(body)

        await nursery.start(listen)
        _poke(
            db_path,
            (
                "INSERT INTO wf_broadcasts (topic, body, sent_at) VALUES ('abort', 'text', ?)",
                (time.time(),),
            ),
        )
        await broker.broadcast("abort", b"good")
        with trio.fail_after(10):
            while not received:
                await trio.sleep(0.001)
        _poke(
            db_path,
            ("INSERT INTO wf_broadcasts (topic, body, sent_at) VALUES ('other', x'00', 'x')", ()),
        )
        await broker.broadcast("abort", b"good again")
        with trio.fail_after(10):
            while len(received) < 2:
                await trio.sleep(0.001)
        nursery.cancel_scope.cancel()
    assert received == [b"good", b"good again"]
    [record] = [r for r in caplog.records if "wf_broadcasts" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert "body holds TEXT 'text', expected a BLOB" in record.getMessage()
    conn = sqlite3.connect(db_path)
    try:  # a sent_at that is not a time never expires by age: the next broadcast deletes it
        assert (
            conn.execute("SELECT topic FROM wf_broadcasts WHERE topic = 'other'").fetchall() == []
        )
    finally:
        conn.close()


async def test_malformed_dead_letters_are_listed_and_requeued_readably(
    url: str, db_path: Path
) -> None:
    async with open_broker(url) as broker:
        await broker.declare_queue("q")
    _poke(
        db_path,
        (
            "INSERT INTO wf_dead (seq, queue, id, body, reply_to, reason, deliveries, died_at)"
            " VALUES (5, 'q', x'6964', 'text', '', x'ff', 'many', 'then')",
            (),
        ),
    )
    async with open_broker(url) as broker:
        [letter] = await broker.dead_letters()
        assert (letter.message, letter.queue, letter.deliveries, letter.died_at) == (
            Message("id", b"text", ""),
            "q",
            0,
            0.0,
        )
        assert letter.reason == (
            "(no readable reason) [malformed dead-letter row (wf_dead seq 5): id holds BLOB "
            "x'6964'; body holds TEXT 'text'; reason holds BLOB x'ff'; deliveries holds TEXT "
            "'many'; died_at holds TEXT 'then']"
        )
        assert await broker.requeue_dead() == 1
        [d] = await _take(broker, "q", 1)
        assert (d.message, d.deliveries) == (Message("id", b"text", ""), 1)


async def test_a_malformed_job_record_reads_as_dead_saying_why(url: str, db_path: Path) -> None:
    async with open_broker(url) as broker:
        await broker.submit("q", Message("odd", b""), key="k")
        await broker.complete((await _take(broker, "q", 1))[0], b"result")
    _poke(
        db_path,
        (
            "UPDATE wf_jobs SET status = 'exploded', operation = x'ff', result = 'text',"
            " worker = CAST(x'ff41' AS TEXT) WHERE id = 'odd'",
            (),
        ),
    )
    async with open_broker(url) as broker:
        record = await broker.job("odd")
        assert record is not None and record.final
        assert (record.status.value, record.operation, record.result, record.worker) == (
            "dead",
            "",
            None,
            None,
        )
        assert record.error == "malformed job row (wf_jobs id 'odd'): status holds TEXT 'exploded'"
        _, new = await broker.submit("q", Message("next", b""), key="k")
        assert new, "a final record holds no key"
