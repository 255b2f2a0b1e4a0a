"""Malformed entries written straight into a broker's storage go to the dead letters (faults 4, 5).

Someone (a bug, an old version, a hand with ``redis-cli`` or ``sqlite3``) leaves
entries in a queue's storage that no publisher wrote: a Redis stream entry
without its ``i`` or ``b`` field, one whose delivery count is not a number,
garbage in the delayed set; a SQLite row whose body is TEXT, or whose delivery
count is TEXT. Each must go to the dead-letter store with a reason while the
good jobs around them complete; none may block its queue or kill a worker.

The poison is written twice: before a run starts and while it runs (its source
writes the second batch halfway through), so good jobs sit on both sides of it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import coredis
import pytest
import trio
from chaos_harness import Scene, open_runtime, open_scene, wait_drained
from chaos_ops import Work, render

from wireframe import jobs

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

N = 200


async def run_around_poison(
    scene: Scene, inject: Callable[[int], Awaitable[list[str]]]
) -> tuple[list[str], list[Any], list[str], int]:
    """Inject poison, run N good jobs (injecting again halfway), then look at the broker.

    Returns the run's values, the dead letters, the ids of the poison that has
    one, and the replies that reached the run twice.
    """
    named = await inject(0)

    async def source() -> AsyncIterator[int]:
        for i in range(N):
            if i == N // 2:
                named.extend(await inject(1))
            yield i

    op = Work(log=str(scene.log.path), pause=0.01)
    async with open_runtime(scene.url) as rt:
        values = await jobs.from_iter(source()).map(op).collect().run(rt)
        stats = await wait_drained(rt.broker)
        dead = await rt.broker.dead_letters()
        await scene.workers.roll_call(rt, scene.tmp)
        assert [s.queued for s in stats] == [0] * len(stats)
        return values, dead, named, rt.duplicates


def check_dead(dead: list[Any], poison: int, named: list[str]) -> None:
    """Exactly the poison is dead, each with a reason; the named ones under their ids."""
    reasons = [f"{d.message.id!r}: {d.reason}" for d in dead]
    assert len(dead) == poison, f"expected {poison} dead letters, got {reasons}"
    assert all(d.reason.strip() for d in dead), f"a dead letter without a reason: {reasons}"
    ids = {d.message.id for d in dead}
    assert set(named) <= ids, f"poison {sorted(set(named) - ids)} is not among {reasons}"


async def test_redis_poison_goes_to_the_dead_letters(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with open_scene(tmp_path, "redis") as scene:
            assert scene.redis is not None
            async with coredis.Redis(port=scene.redis.port) as admin:
                # the workers declared the queue: find its stream whatever the key prefix
                (ready,) = [k async for k in admin.scan_iter(match=b"*q:default:ready")]
                delayed = ready.removesuffix(b"ready") + b"delayed"

                async def inject(round: int) -> list[str]:
                    no_b, bad_n = f"poison-{round}-no-body", f"poison-{round}-bad-count"
                    await admin.xadd(ready, {b"b": b"\x93\x01\x02", b"r": b"", b"n": b"0"})
                    await admin.xadd(ready, {b"i": no_b.encode(), b"r": b"", b"n": b"0"})
                    entry = {b"i": bad_n.encode(), b"b": b"junk", b"r": b"", b"n": b"many"}
                    await admin.xadd(ready, entry)
                    # one member per round: a sorted set would fold equal ones into one
                    await admin.zadd(delayed, {b"\xc1 not msgpack %d" % round: 0})
                    return [no_b, bad_n]

                values, dead, named, duplicates = await run_around_poison(scene, inject)

    assert values == [render(i) for i in range(N)]
    assert duplicates == 0
    check_dead(dead, 8, named)


def insert_poison(db: Path, round: int) -> list[str]:
    """Two malformed rows in queue ``default``: a TEXT body, and a TEXT delivery count."""
    text_body, text_count = f"poison-{round}-text-body", f"poison-{round}-text-count"
    with sqlite3.connect(db, timeout=30) as conn:
        conn.executemany(
            "INSERT INTO wf_messages (queue, id, body, reply_to, visible_at, deliveries)"
            " VALUES ('default', ?, ?, '', 0, ?)",
            [(text_body, "a body that is TEXT", 0), (text_count, b"\x00junk", "many")],
        )
    conn.close()
    return [text_body, text_count]


async def test_sqlite_poison_goes_to_the_dead_letters(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with open_scene(tmp_path, "sqlite") as scene:

            async def inject(round: int) -> list[str]:
                return await trio.to_thread.run_sync(insert_poison, tmp_path / "jobs.db", round)

            values, dead, named, duplicates = await run_around_poison(scene, inject)

    assert values == [render(i) for i in range(N)]
    assert duplicates == 0
    check_dead(dead, 4, named)
