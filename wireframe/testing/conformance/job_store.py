"""The job store conformance: jobs kept by id, as every broker must keep them.

:class:`JobStoreConformance` checks the :class:`~wireframe.jobs.broker.JobStore` role's contract on
a broker: a tracked job's record follows its message (queued, scheduled,
running, done, dead, aborted), dedup keys, waiting for a job, aborting one,
priorities, ``result_ttl`` and ``purge``. Subclass it with a ``broker_url``
fixture as for :class:`~wireframe.testing.BrokerConformance` (which includes
it); it runs at the broker level (consume and complete by hand), with no worker.
"""

from __future__ import annotations

import trio

from wireframe.jobs.broker import Broker, JobRecord, Message, RecordStatus
from wireframe.testing import UrlFactory, with_options
from wireframe.testing.conformance.base import ConformanceBase, ids_of

__all__ = ["JobStoreConformance"]


def _job(job_id: str, priority: int = 0) -> Message:
    return Message(job_id, f"body of {job_id}".encode(), priority=priority)


class JobStoreConformance(ConformanceBase):
    """Jobs by id: part of :class:`~wireframe.testing.BrokerConformance` (see the module doc)."""

    async def record(self, broker: Broker, job_id: str) -> JobRecord:
        """The job's record, which must exist."""
        record = await broker.job(job_id)
        assert record is not None, f"the broker lost the record of job {job_id!r}"
        return record

    async def test_a_job_record_follows_its_message(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as broker:
            record, new = await broker.submit("q", _job("j1"), operation="op-name")
            assert new and record.id == "j1" and record.status is RecordStatus.QUEUED
            assert record.operation == "op-name" and record.queue == "q"
            assert await broker.job("j1") == record
            delivery = await self.take_one(broker, "q")
            running = await self.record(broker, "j1")
            assert running.status is RecordStatus.RUNNING and running.attempts == 1
            assert running.started_at is not None and running.worker
            await broker.complete(delivery, b"the result")
            done = await self.record(broker, "j1")
            assert done.status is RecordStatus.DONE and done.result == b"the result"
            assert done.final and done.finished_at is not None and done.expires_at is not None
            ttl = broker.url.result_ttl
            assert abs(done.expires_at - done.finished_at - ttl) < 1.0
            assert await broker.job("unknown") is None

    async def test_a_delayed_job_is_scheduled_until_it_is_due(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as broker:
            record, _ = await broker.submit("q", _job("later"), delay=self.lease)
            assert record.status is RecordStatus.SCHEDULED
            await self.assert_no_delivery(broker, "q", self.lease / 3)
            assert ids_of(await self.take(broker, "q", 1)) == ["later"]

    async def test_a_dedup_key_is_held_while_the_job_is_live(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as broker:
            _, new = await broker.submit("q", _job("a"), key="k")
            assert new
            again, new = await broker.submit("q", _job("b"), key="k")
            assert not new and again.id == "a"
            delivery = await self.take_one(broker, "q")
            again, new = await broker.submit("q", _job("c"), key="k")
            assert not new and again.id == "a", "a running job holds its key"
            await broker.complete(delivery, b"")
            fresh, new = await broker.submit("q", _job("d"), key="k")
            assert new and fresh.id == "d", "a finished job holds no key"
            await self.assert_no_delivery_of(broker, "q", {"b", "c"})

    async def test_a_known_id_is_submitted_once(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as broker:
            _, new = await broker.submit("q", _job("tick-1"))
            assert new
            again, new = await broker.submit("q", _job("tick-1"))
            assert not new and again.status is RecordStatus.QUEUED
            await broker.complete(await self.take_one(broker, "q"), b"")
            _, new = await broker.submit("q", _job("tick-1"))
            assert not new, "a finished job's id was submitted again"
            await self.assert_no_delivery(broker, "q", 0.1)

    async def assert_no_delivery_of(self, broker: Broker, queue: str, ids: set[str]) -> None:
        """Take what ``queue`` holds now: none of ``ids`` may be among it."""
        with trio.move_on_after(0.2):
            while True:
                got = ids_of(await broker.consume(queue, 100))
                assert not ids & set(got), f"published despite a held key: {got}"

    async def test_waiters_wake_when_the_job_finishes(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as broker, self.open(make_url()) as other:
            await broker.submit("q", _job("w"))
            assert (await other.wait_job("w", 0.05)).status is RecordStatus.QUEUED  # type: ignore[union-attr]
            assert await other.wait_job("missing", 0.05) is None
            seen: list[JobRecord | None] = []

            async def wait(b: Broker) -> None:
                seen.append(await b.wait_job("w", self.patience))

            delivery = await self.take_one(broker, "q")
            with trio.fail_after(self.patience):
                async with trio.open_nursery() as nursery:
                    for b in (broker, other, other):
                        nursery.start_soon(wait, b)
                    await trio.sleep(0.05)
                    await broker.complete(delivery, b"awaited")
            assert [r.result if r else None for r in seen] == [b"awaited"] * 3
            again = await other.wait_job("w", 0.05)
            assert again is not None and again.result == b"awaited", "a finished job waits no more"

    async def test_abort_a_queued_job_and_a_running_one(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as broker:
            await broker.submit("q", _job("running"))
            delivery = await self.take_one(broker, "q")
            await broker.submit("q", _job("queued"))
            aborted = await broker.abort_job("queued")
            assert aborted is not None and aborted.status is RecordStatus.ABORTED
            await self.assert_no_delivery(broker, "q", 0.2)
            cut = await broker.abort_job("running")
            assert cut is not None and cut.status is RecordStatus.ABORTED
            await broker.complete(delivery, b"too late")  # its worker had not heard yet
            kept = await self.record(broker, "running")
            assert kept.status is RecordStatus.ABORTED and kept.result is None
            assert await broker.abort_job("unknown") is None
            finished = await broker.abort_job("running")
            assert finished is not None and finished.status is RecordStatus.ABORTED

    async def test_a_dead_job_says_why_and_comes_back_when_requeued(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as broker:
            await broker.submit("q", _job("bad"))
            await broker.dead_letter(await self.take_one(broker, "q"), "cannot decode: nonsense")
            dead = await self.record(broker, "bad")
            assert dead.status is RecordStatus.DEAD and dead.error == "cannot decode: nonsense"
            assert await broker.requeue_dead("q") == 1
            assert (await self.record(broker, "bad")).status is RecordStatus.QUEUED
            await broker.complete(await self.take_one(broker, "q"), b"fixed")
            assert (await self.record(broker, "bad")).result == b"fixed"

    async def test_a_retry_or_a_lost_lease_makes_the_job_wait_again(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url(lease=self.lease)) as broker:
            await broker.submit("q", _job("again"))
            first = await self.take_one(broker, "q")
            await broker.abandon(first, delay=self.lease, body=b"attempt 2")
            assert (await self.record(broker, "again")).status is RecordStatus.SCHEDULED
            second = await self.take_one(broker, "q")
            assert second.message.body == b"attempt 2"
            await trio.sleep(self.lease * 1.5)  # the lease runs out: it waits again
            third = await self.take_one(broker, "q")
            record = await self.record(broker, "again")
            assert record.status is RecordStatus.RUNNING and record.attempts == 3
            await broker.complete(third, b"")

    async def test_priorities_higher_first_fifo_among_equals(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as broker:
            order = [("a0", 0), ("b0", 0), ("c5", 5), ("d-1", -1), ("e5", 5), ("f9", 9)]
            for job_id, priority in order[:3]:
                await broker.submit("q", _job(job_id, priority))
            await broker.publish("q", [_job(i, p) for i, p in order[3:]])
            taken = ids_of(await self.take(broker, "q", 6, limit=1))
            assert taken == ["f9", "c5", "e5", "a0", "b0", "d-1"]

    async def test_finished_records_expire_after_result_ttl_and_purge_removes_them(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        ttl = self.lease
        async with self.open(with_result_ttl(make_url(), ttl)) as broker:
            await broker.submit("q", _job("brief"))
            await broker.complete(await self.take_one(broker, "q"), b"")
            assert await broker.job("brief") is not None
            await trio.sleep(ttl * 1.5)
            assert await broker.job("brief") is None, "a record outlived result_ttl"
        async with self.open(make_url()) as broker:
            await broker.submit("q", _job("kept"))
            await broker.complete(await self.take_one(broker, "q"), b"")
            await broker.submit("q", _job("live"))
            await broker.purge()
            assert await broker.job("kept") is None, "purge left a finished record"
            assert await broker.job("live") is not None, "purge removed a live job"


def with_result_ttl(url: str, ttl: float) -> str:
    """``url`` with the ``result_ttl`` option set."""
    return with_options(url, result_ttl=ttl)
