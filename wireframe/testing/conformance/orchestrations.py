"""The orchestration store's conformance: instances, histories and inboxes under leased turns.

:class:`OrchestrationStoreConformance` holds a broker's
:class:`~wireframe.durable.store.OrchestrationStore` role to its contract (the
docstring of :mod:`wireframe.durable.store`), calling the store directly with
turns written by hand: no replay engine and no orchestration worker run. It
checks creating instances (``InstanceExists``, replacing a finished one, a
first event visible only later), ``take_work`` leasing each instance to one
taker and blocking until work is visible, ``commit`` writing history, row and
outbox in one step or, once its lease is lost, nothing at all (``LockLost``),
``release`` and ``extend_work``, continue-as-new, activity completions and
dead letters reaching the inbox through the broker's work queue, the read side
(``instance``, ``history``, ``instances``, ``wait_changed``) and
``purge_instance``.

It is not part of :class:`~wireframe.testing.BrokerConformance`, since not
every broker keeps orchestrations yet: a broker that does runs it beside that
suite, with the same ``broker_url`` fixture and hooks::

    from wireframe.testing import OrchestrationStoreConformance

    class TestMyBrokerOrchestrations(OrchestrationStoreConformance):
        @pytest.fixture
        def broker_url(self, tmp_path):
            return f"mybroker:///{tmp_path}/state"

Times handed to the store (``visible_at``, a timer's time) are readings of the
broker's clock (``Broker.clock``), as the orchestration worker gives them.
Waits use the class attributes ``lease`` and ``delay``, a few tenths of a
second each on a wall-clock broker; ``memory://`` runs in virtual time.
"""

from __future__ import annotations

import math
import time

import pytest
import trio

from wireframe.durable.history import (
    ChildCreated,
    EventRaised,
    EventSent,
    ExecutionCompleted,
    ExecutionStarted,
    TaskScheduled,
    TimerCreated,
    TimerFired,
)
from wireframe.durable.store import (
    Commit,
    Instance,
    InstanceExists,
    OrchestrationStore,
    Status,
    UnknownInstance,
    WorkItem,
)
from wireframe.jobs.broker import LockLost
from wireframe.testing import UrlFactory
from wireframe.testing.conformance.orchestration_base import (
    DATA,
    LONG,
    NAME,
    Taker,
    activity,
    row,
    started,
    turn,
)
from wireframe.testing.conformance.orchestration_commits import CommitConformance

__all__ = ["OrchestrationStoreConformance"]


class OrchestrationStoreConformance(CommitConformance):
    """The orchestration store role (see the module doc); subclass it and provide ``broker_url``."""

    # -- creating instances -------------------------------------------------------------
    async def test_a_new_instance_has_its_row_and_its_first_event_in_the_inbox(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as broker:
            store = self.store(broker)
            assert await store.instance("i") is None
            assert await store.history("i") == []
            before = time.time()
            await store.create_instance(
                Instance("i", NAME, Status.PENDING, DATA, version="v2"),
                ExecutionStarted(NAME, DATA, "v2"),
                visible_at=-math.inf,
                replace=False,
            )
            inst = await self.instance_of(store, "i")
            assert (inst.id, inst.name, inst.status, inst.input) == (
                "i",
                NAME,
                Status.PENDING,
                DATA,
            )
            assert (inst.version, inst.generation, inst.parent_id) == ("v2", 0, None)
            assert (inst.output, inst.error, inst.custom_status) == (None, None, None)
            assert before - 5 <= inst.created_at <= inst.updated_at <= time.time() + 5, inst
            assert await store.history("i") == [], "the first event waits in the inbox"
            item = await self.take_turn(store)
            assert item.instance == inst
            assert (list(item.history), list(item.inbox)) == (
                [],
                [ExecutionStarted(NAME, DATA, "v2")],
            )

    async def test_an_existing_id_raises_instance_exists_unless_finished_and_replaced(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as broker:
            store = self.store(broker)
            await self.create(store, "i", "first")
            with pytest.raises(InstanceExists):
                await self.create(store, "i", "again")
            with pytest.raises(InstanceExists):
                await self.create(store, "i", "again", replace=True)  # not finished
            await self.finish(store, "i", "done")
            with pytest.raises(InstanceExists):
                await self.create(store, "i", "again")  # finished, but not replaced
            old = await self.instance_of(store, "i")
            await self.create(store, "i", "second", replace=True)
            new = await self.instance_of(store, "i")
            assert (new.status, new.input, new.output) == (Status.PENDING, "second", None)
            assert new.revision > old.revision, "a replacement's revision goes on from the old"
            assert new.generation > old.generation, "a replacement is a generation of its own"
            assert await store.history("i") == [], "the old history went with it"
            item = await self.take_turn(store)
            assert list(item.history) == [] and list(item.inbox) == [started("second")]

    async def test_visible_at_delays_the_first_turn(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as broker:
            store = self.store(broker)
            at = broker.clock() + 2 * self.delay
            await self.create(store, "later", visible_at=at)
            await self.create(store, "now")
            assert (await self.take_turn(store)).instance.id == "now"
            await self.assert_no_work(store, self.delay)
            item = await self.take_turn(store)
            assert item.instance.id == "later" and broker.clock() >= at
            assert list(item.inbox) == [started()]

    # -- leases -------------------------------------------------------------------------
    async def test_an_instance_is_leased_to_one_taker_at_a_time(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as one, self.open(make_url()) as two:
            a, b = self.store(one), self.store(two)
            await self.create(a, "i")
            item = await self.take_turn(a)
            await b.send_event("i", EventRaised("during", 1))
            await self.assert_no_work(b, self.delay)
            await self.assert_no_work(a, self.delay)
            done = turn(item)
            await a.commit(item, done)
            again = await self.take_turn(b)
            assert list(again.inbox) == [EventRaised("during", 1)], "an event sent meanwhile waits"
            assert list(again.history) == list(done.appended)

    async def test_concurrent_takers_share_instances_without_overlap(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        ids = [f"i{n}" for n in range(7)]
        seen: list[str] = []
        async with self.open(make_url()) as one, self.open(make_url()) as two:
            for iid in ids:
                await self.create(self.store(one), iid)

            async def take(store: OrchestrationStore) -> None:
                while len(seen) < len(ids):  # a store handing out twice must not spin forever
                    items = await store.take_work(2, LONG)
                    assert 1 <= len(items) <= 2, items
                    seen.extend(i.instance.id for i in items)

            with trio.fail_after(self.patience):
                async with trio.open_nursery() as nursery:
                    for broker in (one, two, two):
                        nursery.start_soon(take, self.store(broker))
                    while len(seen) < len(ids):
                        await trio.sleep(0.01)
                    await self.assert_no_work(self.store(one), self.delay)
                    nursery.cancel_scope.cancel()
        assert sorted(seen) == ids, "each instance goes to exactly one taker"

    async def test_take_work_blocks_until_an_event_is_sent(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as one, self.open(make_url()) as two:
            a, b = self.store(one), self.store(two)
            await self.create(a, "i")
            first = await self.take_turn(a)
            done = turn(first)
            await a.commit(first, done)
            async with trio.open_nursery() as nursery:
                taker = Taker(a, LONG)
                nursery.start_soon(taker.run)
                await trio.sleep(self.delay)
                assert not taker.done.is_set(), f"take_work returned {taker.items}"
                await b.send_event("i", EventRaised("go", DATA))
                item = await self.taken(taker)
            assert item.instance.id == "i" and list(item.inbox) == [EventRaised("go", DATA)]
            assert list(item.history) == list(done.appended)
            with pytest.raises(UnknownInstance):
                await b.send_event("nobody", EventRaised("go"))

    async def test_a_commit_after_the_lease_ran_out_raises_lock_lost_and_writes_nothing(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as broker:
            store = self.store(broker)
            await self.create(store, "other")
            other = await self.take_turn(store)
            await store.commit(other, turn(other))  # waits for events from now on
            await self.create(store, "i", "in")
            item = await self.take_turn(store, lease=self.lease)
            before = await self.instance_of(store, "i")
            await self.pass_time(2 * self.lease)
            stale = turn(
                item,
                TaskScheduled(1, "op", b"job"),
                TimerCreated(2, 0.0),
                EventSent(3, "other", "hi"),
                ChildCreated(4, NAME, "i:4"),
                ExecutionCompleted("completed", "out"),
                status=Status.COMPLETED,
                output="out",
                custom_status="stale",
                activities=[("orch-q", activity("i", 1, b"job"))],
                timers=[(broker.clock(), TimerFired(2, 0.0))],
                sends=[("other", EventRaised("hi"))],
                children=[(row("i:4", parent_id="i"), started(parent_id="i", action=4))],
            )
            with pytest.raises(LockLost):
                await store.commit(item, stale)
            assert await store.instance("i") == before, "a lost commit changed the row"
            assert await store.history("i") == []
            assert await store.instance("i:4") is None, "a lost commit created a child"
            again = await self.take_turn(store)
            assert again.instance.id == "i" and list(again.inbox) == [started("in")]
            await self.assert_no_work(store, self.delay)  # no timer, no send to "other"
            await self.assert_no_delivery(broker, "orch-q", self.delay)
            with pytest.raises(LockLost):
                await store.extend_work(item, LONG)
            await store.commit(again, turn(again))

    async def test_a_turn_taken_over_cannot_commit_but_its_successor_can(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as one, self.open(make_url()) as two:
            a, b = self.store(one), self.store(two)
            await self.create(a, "i")
            stale = await self.take_turn(a, lease=self.lease)
            await self.pass_time(2 * self.lease)
            fresh = await self.take_turn(b)
            assert list(fresh.inbox) == list(stale.inbox) == [started()]
            assert fresh.lease_token != stale.lease_token
            with pytest.raises(LockLost):
                await a.commit(stale, turn(stale, TimerCreated(1, 0.0)))
            try:
                await a.release(stale, 0.0)  # a stale release may raise or do nothing...
            except LockLost:
                pass
            with pytest.raises(LockLost):
                await a.extend_work(stale, LONG)
            await self.assert_no_work(a, self.delay)  # ...but never frees the new holder's lease
            done = turn(fresh, TimerCreated(1, 5.0))
            await b.commit(fresh, done)
            assert await a.history("i") == list(done.appended)

    async def test_turns_committed_at_once_each_stand_alone(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        """Commits that run together (a store may group them into one write) each hold
        to the contract: the stale one raises LockLost and writes nothing, the rest land."""
        async with self.open(make_url()) as broker:
            store = self.store(broker)
            await self.create(store, "i")
            stale = await self.take_turn(store, lease=self.lease)
            await self.pass_time(2 * self.lease)
            for iid in ("a", "b"):
                await self.create(store, iid)
            fresh = {item.instance.id: item for item in await self.take_turns(store, 3, limit=3)}
            assert set(fresh) == {"i", "a", "b"}
            commits = {iid: turn(item, TimerCreated(1, 5.0)) for iid, item in fresh.items()}
            outcomes: dict[str, BaseException | None] = {}

            async def commit(key: str, item: WorkItem, c: Commit) -> None:
                try:
                    await store.commit(item, c)
                    outcomes[key] = None
                except LockLost as exc:
                    outcomes[key] = exc

            async with trio.open_nursery() as nursery:  # the first may go alone, the rest together
                for iid, item in fresh.items():
                    nursery.start_soon(commit, iid, item, commits[iid])
                    if iid == "a":
                        nursery.start_soon(
                            commit, "stale", stale, turn(stale, TimerCreated(1, 0.0))
                        )
            assert isinstance(outcomes.pop("stale"), LockLost)
            assert outcomes == {"i": None, "a": None, "b": None}
            for iid, c in commits.items():
                assert await store.history(iid) == list(c.appended), iid
            await self.assert_no_work(store, self.delay)

    async def test_extend_work_keeps_the_lease(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as one, self.open(make_url()) as two:
            a, b = self.store(one), self.store(two)
            await self.create(a, "i")
            item = await self.take_turn(a, lease=self.lease)
            for _ in range(4):
                await self.pass_time(0.6 * self.lease)
                await a.extend_work(item, self.lease)
            await self.assert_no_work(b, self.lease / 3)
            await a.commit(item, turn(item))
            assert len(await b.history("i")) == 2

    async def test_release_gives_the_events_back_now_or_after_a_delay(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as broker:
            store = self.store(broker)
            await self.create(store, "i")
            item = await self.take_turn(store)
            await store.release(item, 0.0)
            again = await self.take_turn(store)
            assert list(again.inbox) == [started()] and again.lease_token != item.lease_token
            with pytest.raises(LockLost):
                await store.commit(item, turn(item))  # released: that lease is gone
            at = broker.clock() + 2 * self.delay
            await store.release(again, 2 * self.delay)
            await self.assert_no_work(store, self.delay)
            last = await self.take_turn(store)
            assert broker.clock() >= at and list(last.inbox) == [started()]
            done = turn(last)
            await store.commit(last, done)
            assert await store.history("i") == list(done.appended)

    # -- reading ----------------------------------------------------------------------
    async def test_instances_are_listed_most_recently_updated_first(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as broker:
            store = self.store(broker)
            for iid in "abc":
                await self.create(store, iid)
                await trio.sleep(0.02)  # apart on any clock a store may stamp rows with
            item = await self.take_turns(store, 3, limit=3)
            by_id = {i.instance.id: i for i in item}
            await store.release(by_id["a"], LONG)
            await store.release(by_id["c"], LONG)
            await store.commit(by_id["b"], turn(by_id["b"], status=Status.COMPLETED))

            async def ids(status: Status | None, limit: int = 10) -> list[str]:
                return [i.id for i in await store.instances(status, limit)]

            assert await ids(None) == ["b", "c", "a"]
            assert await ids(None, 2) == ["b", "c"]
            assert await ids(Status.PENDING) == ["c", "a"]
            assert await ids(Status.PENDING, 1) == ["c"]
            assert await ids(Status.COMPLETED) == ["b"]
            assert await ids(Status.RUNNING) == []

    async def test_wait_changed_blocks_until_the_instance_changes(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as one, self.open(make_url()) as two:
            a, b = self.store(one), self.store(two)
            with pytest.raises(UnknownInstance):
                await a.wait_changed("nobody", 0)
            await self.create(a, "i")
            created = await self.instance_of(a, "i")
            if created.revision > 0:
                older = await a.wait_changed("i", created.revision - 1)
                assert older == created, "a revision already passed returns at once"
            seen: list[Instance] = []

            async def wait(store: OrchestrationStore, revision: int) -> None:
                seen.append(await store.wait_changed("i", revision))

            with trio.fail_after(self.patience):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(wait, a, created.revision)
                    nursery.start_soon(wait, b, created.revision)
                    await trio.sleep(self.delay)
                    await a.send_event("i", EventRaised("not a change of the row"))
                    await trio.sleep(self.delay)
                    assert not seen, "wait_changed returned without a change"
                    item = await self.take_turn(a)
                    await a.commit(item, turn(item, custom_status="changed"))
            assert [(i.custom_status, i.revision > created.revision) for i in seen] == [
                ("changed", True)
            ] * 2

    async def test_wait_changed_sees_a_replacement_and_a_purge(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as broker:
            store = self.store(broker)
            await self.create(store, "i", "old")
            await self.finish(store, "i")
            done = await self.instance_of(store, "i")
            seen: list[Instance] = []
            errors: list[Exception] = []

            async def wait() -> None:
                try:
                    seen.append(await store.wait_changed("i", done.revision))
                except UnknownInstance as exc:
                    errors.append(exc)

            with trio.fail_after(self.patience):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(wait)
                    await trio.sleep(self.delay)
                    await self.create(store, "i", "new", replace=True)
            assert [(i.input, i.status) for i in seen] == [("new", Status.PENDING)]
            await self.finish(store, "i")
            done = await self.instance_of(store, "i")
            with trio.fail_after(self.patience):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(wait)
                    await trio.sleep(self.delay)
                    assert await store.purge_instance("i")
            assert len(errors) == 1, "a waiter on a purged instance hears UnknownInstance"

    async def test_purge_removes_only_a_finished_instance(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as broker:
            store = self.store(broker)
            assert not await store.purge_instance("nobody")
            await self.create(store, "i")
            assert not await store.purge_instance("i"), "an unfinished instance was purged"
            assert (await self.instance_of(store, "i")).status is Status.PENDING
            await self.finish(store, "i", "out")
            assert await store.history("i")
            assert await store.purge_instance("i")
            assert await store.instance("i") is None
            assert await store.history("i") == []
            assert await store.instances(None, 10) == []
            assert not await store.purge_instance("i")
            await self.create(store, "i", "again")  # a purged id is free
            assert list((await self.take_turn(store)).inbox) == [started("again")]
