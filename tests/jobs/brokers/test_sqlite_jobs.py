"""Jobs by id on the SQLite broker: what the job store conformance tests cannot reach.

Waiting on one job from two processes (the other process is woken through the
data_version watcher), a claim that does not walk the delayed rows at the head
of its queue, a tracked job dying in a claim, an abort while the job runs and
its lease then runs out, records expiring and swept, damaged records, and the
handles of the runtime on a real worker. Leases run on the wall clock; a test
that needs one to run out moves an :class:`OffsetClock` instead of waiting.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import pytest
import trio
from sqlite_kit import claim_cost

from wireframe import jobs
from wireframe.jobs.broker import (
    Delivery,
    JobRecord,
    Message,
    RecordStatus,
    open_broker,
)
from wireframe.jobs.brokers import sqlite as sqlite_broker
from wireframe.jobs.brokers.sqlite import jobs as sqlite_jobs
from wireframe.jobs.brokers.sqlite import queues as sqlite_queues

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "jobs.db"


@pytest.fixture
def make_url(db_path: Path) -> Callable[..., str]:
    def make(**options: object) -> str:
        query = "&".join(f"{k}={v}" for k, v in options.items())
        return f"sqlite:///{db_path}" + (f"?{query}" if query else "")

    return make


class OffsetClock:
    """Wall-clock seconds plus an offset the test moves forward (see test_sqlite.py)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def _job(job_id: str, priority: int = 0) -> Message:
    return Message(job_id, f"body of {job_id}".encode(), priority=priority)


async def _take(broker: jobs.Broker, queue: str, n: int = 1) -> list[Delivery]:
    out: list[Delivery] = []
    with trio.fail_after(10):
        while len(out) < n:
            out += await broker.consume(queue, n - len(out))
    return out


async def _nothing_delivered(broker: jobs.Broker, queue: str) -> None:
    with trio.move_on_after(0.2):
        got = await broker.consume(queue, 10)
        pytest.fail(f"delivered {[d.message.id for d in got]}")


# -- a claim and the delayed rows at the head of its queue --------------------------


async def test_a_claim_does_not_walk_the_delayed_rows_at_the_head(
    make_url: Callable[..., str], db_path: Path
) -> None:
    """20,000 delayed messages ahead of one visible message: a claim costs what it
    costs on a queue without them, found or not (issue 11, item 4)."""
    async with sqlite_broker.open(make_url()) as broker:
        for base in range(0, 20_000, 2_000):
            batch = [Message(f"d{i}", b"later") for i in range(base, base + 2_000)]
            await broker.publish("crowded", batch, delay=3600)
        await broker.publish("crowded", [Message("now", b"x")])
        await broker.publish("plain", [Message("now", b"x")])
        await broker.publish("idle", [Message("later", b"x")], delay=3600)
        claims = {queue: broker._claim(queue, 1) for queue in ("crowded", "plain", "idle")}
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        crowded, plain = claim_cost(conn, claims["crowded"]), claim_cost(conn, claims["plain"])
        assert crowded < plain + 50, (crowded, plain)  # 20,000 rows walked: 20,000+
        conn.execute("DELETE FROM wf_messages WHERE id = 'now'")
        nothing_due = claim_cost(conn, claims["crowded"])
        assert nothing_due < claim_cost(conn, claims["idle"]) + 50, nothing_due
        for sql in (sqlite_queues._RELEASE_DUE, sqlite_queues._CLAIMABLE, sqlite_queues._EARLIEST):
            args = ("q", 1)[: sql.count("?")]
            plan = " / ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", args))
            assert plan.startswith("SEARCH wf_messages USING INDEX"), plan
            assert "TEMP B-TREE" not in plan, plan  # the index gives the order
        plan = conn.execute(f"EXPLAIN QUERY PLAN {sqlite_queues._RELEASE_DUE}", ("q", 1))
        assert "(queue=? AND visible_at<?)" in plan.fetchone()[3]
    finally:
        conn.close()


# -- waiting, from two processes ----------------------------------------------------

_WAITER = textwrap.dedent(
    """
    import sys, trio
    from wireframe.jobs.broker import open_broker

    async def main(url, job_id):
        async with open_broker(url) as broker:
            record = await broker.job(job_id)
            print("waiting", record.status.value, flush=True)
            done = await broker.wait_job(job_id, 30)
            print("woken", done.status.value, done.result.decode(), flush=True)

    trio.run(main, sys.argv[1], sys.argv[2])
    """
)


async def _line(process: trio.Process) -> str:
    assert process.stdout is not None
    data = b""
    with trio.fail_after(30):
        while not data.endswith(b"\n"):
            chunk = await process.stdout.receive_some(1)
            assert chunk, f"child exited early with {await process.wait()}"
            data += chunk
    return data.decode().strip()


@pytest.mark.slow
async def test_a_job_waited_on_from_two_processes_wakes_both(make_url: Callable[..., str]) -> None:
    url = make_url(poll=0.05)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    async with open_broker(url) as broker, open_broker(url) as neighbour:
        await broker.submit("q", _job("shared"))
        [delivery] = await _take(broker, "q")
        process = await trio.lowlevel.open_process(
            [sys.executable, "-c", _WAITER, url, "shared"], stdout=subprocess.PIPE, env=env
        )
        try:
            assert await _line(process) == "waiting running"
            seen: list[JobRecord | None] = []

            async def wait(on: jobs.Broker) -> None:
                seen.append(await on.wait_job("shared", 30))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(wait, broker)
                nursery.start_soon(wait, neighbour)
                await broker.complete(delivery, b"the answer")
            assert await _line(process) == "woken done the answer"
            assert [r.result if r else None for r in seen] == [b"the answer"] * 2
        finally:
            with trio.CancelScope(shield=True):
                if process.returncode is None:
                    process.kill()
                await process.wait()


async def test_another_process_finishing_a_job_wakes_its_waiters_only(
    make_url: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broker that does not wake its in-process neighbours stands in for another
    process. Of 40 handles waiting, only the finished job's waiter reads again (the
    watcher finds which finished in one read), not all 40 after every change."""
    url = make_url(poll=0.05)
    async with open_broker(url) as remote, open_broker(url) as local:
        assert isinstance(remote, sqlite_broker.SqliteBroker)
        assert isinstance(local, sqlite_broker.SqliteBroker)
        monkeypatch.setattr(remote, "_notify", lambda key: None)
        for i in range(40):
            await remote.submit("q", _job(f"w{i}"))
        [delivery] = await _take(remote, "q")  # w0
        reads, all_waiting = 0, trio.Event()
        read = local._read

        async def counted(fn: Callable[[sqlite3.Connection], object]) -> object:
            nonlocal reads
            reads += 1
            if reads == 40:
                all_waiting.set()
            return await read(fn)

        monkeypatch.setattr(local, "_read", counted)
        seen: list[JobRecord | None] = []
        woken = trio.Event()

        async def wait(job_id: str) -> None:
            seen.append(await local.wait_job(job_id, 30))
            woken.set()

        async with trio.open_nursery() as nursery:
            for i in range(40):
                nursery.start_soon(wait, f"w{i}")
            await all_waiting.wait()
            await remote.complete(delivery, b"first")
            with trio.fail_after(5):
                await woken.wait()
            nursery.cancel_scope.cancel()
        assert [r.id for r in seen if r] == ["w0"]
        assert reads - 40 <= 6, f"{reads - 40} reads after one job finished elsewhere"


# -- the record through the claim, abort, expiry ------------------------------------


async def test_a_tracked_job_delivered_too_often_dies_and_wakes_its_waiter(
    make_url: Callable[..., str],
) -> None:
    clock = OffsetClock()
    async with sqlite_broker.open(make_url(lease=30, max_deliveries=1), clock=clock) as broker:
        await broker.submit("q", _job("fragile"))
        await _take(broker, "q")
        async with trio.open_nursery() as nursery:
            waited: list[JobRecord | None] = []

            async def wait() -> None:
                waited.append(await broker.wait_job("fragile", 10))

            nursery.start_soon(wait)
            clock.advance(31)  # its worker died: the lease runs out
            await _nothing_delivered(broker, "q")  # the claim dead-letters it instead
        [record] = waited
        assert record is not None and record.status is RecordStatus.DEAD
        assert record.error == "delivered 1 times without completing (max_deliveries=1)"
        assert record.attempts == 1 and record.finished_at is not None


async def test_a_job_aborted_while_it_runs_is_not_delivered_again(
    make_url: Callable[..., str], db_path: Path
) -> None:
    clock = OffsetClock()
    async with sqlite_broker.open(make_url(lease=30), clock=clock) as broker:
        await broker.submit("q", _job("cut"))
        [delivery] = await _take(broker, "q")
        aborted = await broker.abort_job("cut")
        assert aborted is not None and aborted.status is RecordStatus.ABORTED
        await broker.extend(delivery)  # its worker has not heard yet: the lease is still its
        [stats] = await broker.stats()
        assert (stats.queued, stats.running, stats.done) == (0, 0, 1)
        clock.advance(31)  # the worker never completes it: the lease runs out...
        await _nothing_delivered(broker, "q")  # ...and it is not run again
        with pytest.raises(jobs.LockLost, match="aborted by id"):
            await broker.complete(delivery, b"too late")
        assert (await broker.job("cut")) == aborted
        assert await broker.purge() == 1
        assert await broker.job("cut") is None


async def test_purge_leaves_the_message_of_a_job_aborted_while_it_runs(
    make_url: Callable[..., str],
) -> None:
    async with open_broker(make_url()) as broker:
        await broker.submit("q", _job("cut"))
        [delivery] = await _take(broker, "q")
        await broker.abort_job("cut")
        assert await broker.purge() == 0, "purge deleted a leased message"
        await broker.complete(delivery, None)  # its worker cancelled it: no LockLost
        assert await broker.purge() == 1
        await broker.submit("q", _job("retried"))
        [delivery] = await _take(broker, "q")
        await broker.abort_job("retried")
        await broker.abandon(delivery, delay=60)  # its worker retries it, not knowing
        assert await broker.purge() == 1, "purge kept an aborted job's message its worker gave back"
        await _nothing_delivered(broker, "q")


async def test_finished_records_are_swept_every_so_many_submits(
    make_url: Callable[..., str], db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_jobs, "SWEEP_EVERY", 4)
    clock = OffsetClock()
    async with sqlite_broker.open(make_url(result_ttl=60), clock=clock) as broker:
        await broker.submit("q", _job("old"))
        await broker.complete((await _take(broker, "q"))[0], b"")
        clock.advance(61)
        assert await broker.job("old") is None, "an expired record is unknown"
        await broker.submit("q", _job("old"))  # its id is free again
        await broker.abort_job("old")
        clock.advance(61)
        await broker.submit("q", _job("live"))
        assert _count(db_path, "SELECT count(*) FROM wf_jobs") == 2  # not yet swept
        await broker.submit("q", _job("third"))  # the 4th submit sweeps
        assert _count(db_path, "SELECT count(*) FROM wf_jobs") == 2
        assert await broker.job("old") is None and await broker.job("live") is not None


def _count(db_path: Path, sql: str) -> int:
    conn = sqlite3.connect(db_path)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


async def test_a_known_id_makes_no_new_job_and_a_tracked_job_has_no_reply_channel(
    make_url: Callable[..., str],
) -> None:
    async with open_broker(make_url()) as broker:
        await broker.submit("q", _job("once"))
        known, new = await broker.submit("other", _job("once"))
        assert not new and known.queue == "q", "a second job was made of a known id"
        with pytest.raises(ValueError, match="reply_to must be ''"):
            await broker.submit("q", Message("replying", b"", reply_to="ch"))
        with pytest.raises(ValueError, match="delay=-1"):
            await broker.submit("q", _job("never"), delay=-1)
        [stats] = await broker.stats()
        assert stats.queued == 1


async def test_a_requeued_dead_job_whose_key_was_taken_runs_without_it(
    make_url: Callable[..., str],
) -> None:
    async with open_broker(make_url()) as broker:
        await broker.submit("q", _job("first"), key="k")
        await broker.dead_letter((await _take(broker, "q"))[0], "cannot decode")
        _, new = await broker.submit("q", _job("second"), key="k")
        assert new, "a dead job holds no key"
        assert await broker.requeue_dead() == 1
        revived = await broker.job("first")
        assert revived is not None and revived.status is RecordStatus.QUEUED
        assert revived.key is None and revived.error is None and revived.expires_at is None
        held, new = await broker.submit("q", _job("third"), key="k")
        assert not new and held.id == "second"


async def test_a_live_record_whose_message_is_gone_reads_dead_and_frees_its_key(
    make_url: Callable[..., str], db_path: Path
) -> None:
    async with open_broker(make_url()) as broker:
        await broker.submit("q", _job("lost"), key="k")
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("DELETE FROM wf_messages WHERE id = 'lost'")  # a hand edit
    conn.close()
    async with open_broker(make_url()) as broker:
        record = await broker.job("lost")
        assert record is not None and record.status is RecordStatus.DEAD
        assert (
            record.error is not None and "its message (wf_messages seq 1) is gone" in record.error
        )
        with trio.fail_after(5):
            assert await broker.wait_job("lost", 30) == record  # never a hang
        fresh, new = await broker.submit("q", _job("fresh"), key="k")
        assert new and fresh.id == "fresh"


# -- the runtime's handles on a real worker -----------------------------------------


@attrs.frozen
class Nap(jobs.Operation[float, str], name="sqlite-jobs-nap"):
    """Sleeps ``x`` seconds, then says so."""

    async def execute(self, x: float) -> str:
        await trio.sleep(x)
        return f"slept {x}"


@asynccontextmanager
async def _runtime_and_worker(url: str) -> AsyncIterator[tuple[jobs.Runtime, jobs.Worker]]:
    async with jobs.connect(url) as rt, trio.open_nursery() as nursery:
        worker = jobs.Worker(rt.broker, concurrency=2)
        await nursery.start(worker.serve)
        yield rt, worker
        worker.stop()


async def test_handles_on_a_worker_result_status_abort(make_url: Callable[..., str]) -> None:
    async with _runtime_and_worker(make_url(lease=5)) as (rt, worker):
        with trio.fail_after(20):
            quick = await rt.submit(Nap(), 0.0)
            assert await quick.result(timeout=10) == "slept 0.0"
            assert await quick.status() is jobs.JobStatus.SUCCEEDED
            record = await quick.record()
            assert record.attempts == 1 and record.worker and record.operation == "sqlite-jobs-nap"
            async with jobs.open_broker(str(rt.broker.url.raw)) as other:
                assert await jobs.Runtime(other).handle(quick.id).result() == "slept 0.0"
            long = await rt.submit(Nap(), 600.0)
            while await long.status() is not jobs.JobStatus.RUNNING:
                await trio.sleep(0.01)
            assert await long.abort() is jobs.JobStatus.ABORTED
            with pytest.raises(jobs.JobAborted):
                await long.result(timeout=10)
            while worker.running:  # the worker cancels it and completes it with no reply
                await trio.sleep(0.01)
            assert await long.status() is jobs.JobStatus.ABORTED
            later = await rt.submit(Nap(), 0.0, delay=3600)
            assert await later.status() is jobs.JobStatus.SCHEDULED
            assert await later.abort() is jobs.JobStatus.ABORTED


# -- the first look of a wait on a job submitted here (wakeups.FirstLooks) -----------------


async def test_a_job_ended_elsewhere_before_its_wait_began_is_still_seen(
    make_url: Callable[..., str],
) -> None:
    """The end came through another connection, and the watcher had already handled
    that change (for another waiter) before this wait began: the wait must look."""
    url = make_url()
    async with open_broker(url) as here, open_broker(url) as there:
        assert isinstance(here, sqlite_broker.SqliteBroker)
        await here.submit("q", _job("other"))
        await here.submit("q", _job("mine"))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(here.wait_job, "other", 10.0)  # keeps the watcher polling
            for d in await _take(there, "q", 2):
                if d.message.id == "mine":
                    await there.complete(d, b"done")
            await trio.sleep(0.2)  # the watcher saw the change, with nobody waiting on "mine"
            with trio.fail_after(5):
                record = await here.wait_job("mine", 10.0)
            assert record is not None and record.status is RecordStatus.DONE
            assert record.result == b"done"
            nursery.cancel_scope.cancel()


async def test_a_job_ended_by_the_same_broker_before_its_wait_began_is_still_seen(
    make_url: Callable[..., str],
) -> None:
    async with open_broker(make_url()) as broker:
        await broker.submit("q", _job("completed"))
        await broker.submit("q", _job("aborted"))
        [d] = [d for d in await _take(broker, "q", 2) if d.message.id == "completed"]
        await broker.complete(d, b"done")
        await broker.abort_job("aborted")
        with trio.fail_after(5):
            done = await broker.wait_job("completed", 10.0)
            aborted = await broker.wait_job("aborted", 10.0)
        assert done is not None and done.status is RecordStatus.DONE
        assert aborted is not None and aborted.status is RecordStatus.ABORTED


async def test_a_wait_that_skips_its_first_look_is_woken_by_the_end(
    make_url: Callable[..., str],
) -> None:
    url = make_url()
    async with open_broker(url) as here, open_broker(url) as there:
        assert isinstance(here, sqlite_broker.SqliteBroker)
        await here.submit("q", _job("j"))
        looks: list[list[str]] = []
        real = sqlite_jobs.not_live

        def counted(conn: sqlite3.Connection, ids: list[str], now: float) -> object:
            looks.append(list(ids))
            return real(conn, ids, now)

        async def finish_later() -> None:
            await trio.sleep(0.1)
            [d] = await _take(there, "q")
            await there.complete(d, b"late")

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(sqlite_jobs, "not_live", counted)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(finish_later)
                with trio.fail_after(5):
                    record = await here.wait_job("j", 10.0)
        assert record is not None and record.result == b"late"
        assert looks and looks[0] == ["j"], "only the watcher read it, once it changed"
        assert all(ids == ["j"] for ids in looks)


def test_first_looks_keep_a_bounded_number_of_notes() -> None:
    from wireframe.jobs.brokers.sqlite.wakeups import _FRESH_KEPT, FirstLooks

    looks = FirstLooks()
    mark = looks.submitting()
    for i in range(_FRESH_KEPT + 5):
        looks.submitted(f"j{i}", mark)
    assert not looks.may_skip("j0"), "the oldest notes were dropped"
    assert looks.may_skip(f"j{_FRESH_KEPT + 4}")
    assert not looks.may_skip(f"j{_FRESH_KEPT + 4}"), "a note is used once"
    looks.submitted("a", looks.submitting())
    looks.finished += 1  # this broker ended some job meanwhile
    assert not looks.may_skip("a")
    looks.submitted("b", looks.submitting())
    looks.polls += 1
    looks.changed_at = looks.polls  # another connection wrote meanwhile
    assert not looks.may_skip("b")
