"""What a turn's commit writes, held to the orchestration store's contract.

:class:`CommitConformance` is part of
:class:`~wireframe.testing.OrchestrationStoreConformance`: the history
appended and the row updated, payloads unchanged, the outbox (activity jobs on
their queues, timers visible at their time, events sent to other inboxes,
children created), an activity's completion or dead letter reaching its
instance's inbox through the broker's work queue, and continue-as-new.
"""

from __future__ import annotations

import trio

from wireframe.durable.history import (
    ChildCompleted,
    ChildCreated,
    ChildFailed,
    ContinuedAsNew,
    Event,
    EventRaised,
    EventSent,
    ExecutionCompleted,
    ExecutionResumed,
    ExecutionStarted,
    ExecutionSuspended,
    ExecutionTerminated,
    OrchestratorStarted,
    TaskCompleted,
    TaskFailed,
    TaskScheduled,
    TimerCreated,
    TimerFired,
)
from wireframe.durable.store import (
    Commit,
    Status,
)
from wireframe.testing import UrlFactory
from wireframe.testing.conformance.orchestration_base import (
    DATA,
    LONG,
    NAME,
    OrchestrationStoreBase,
    Taker,
    activity,
    row,
    started,
    turn,
)

__all__ = ["CommitConformance"]


class CommitConformance(OrchestrationStoreBase):
    """What a commit writes: part of :class:`~wireframe.testing.OrchestrationStoreConformance`."""

    async def test_a_commit_appends_history_and_updates_the_row(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as broker:
            store = self.store(broker)
            await self.create(store, "i", "in")
            created = await self.instance_of(store, "i")
            item = await self.take_turn(store)
            first = turn(item, TimerCreated(1, 5.0), custom_status={"step": 1})
            await store.commit(item, first)
            running = await self.instance_of(store, "i")
            assert (running.status, running.custom_status) == (Status.RUNNING, {"step": 1})
            assert (running.input, running.name, running.created_at) == (
                "in",
                NAME,
                created.created_at,
            )
            assert running.revision > created.revision
            assert running.updated_at >= created.updated_at
            assert await store.history("i") == list(first.appended)
            await store.send_event("i", EventRaised("go"))
            item = await self.take_turn(store)
            assert list(item.history) == list(first.appended)
            assert item.instance == running
            failed = turn(
                item,
                ExecutionCompleted("failed", None, "ValueError: no"),
                status=Status.FAILED,
                error="ValueError: no",
                custom_status={"step": 2},
            )
            await store.commit(item, failed)
            done = await self.instance_of(store, "i")
            assert (done.status, done.error, done.custom_status) == (
                Status.FAILED,
                "ValueError: no",
                {"step": 2},
            )
            assert done.revision > running.revision
            assert await store.history("i") == [*first.appended, *failed.appended]
            await self.assert_no_work(store, self.delay)

    async def test_every_event_and_payload_comes_back_as_it_was_written(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        events: list[Event] = [
            ExecutionStarted(NAME, DATA, "v1", "parent", 7),
            OrchestratorStarted(1_700_000_000.125),
            TaskScheduled(1, "op", b"\x00\xff body", "q"),
            TaskCompleted(1, b"\x80 result"),
            TaskFailed(2, "poison: why"),
            TimerCreated(3, 1_700_000_001.5),
            TimerFired(3, 1_700_000_001.5),
            EventRaised("e", DATA),
            EventRaised("none"),
            EventSent(4, "other", "e", [1, "two"]),
            ChildCreated(5, "kid", "parent:5", DATA),
            ChildCompleted(5, DATA, "parent:5"),
            ChildCompleted(5, DATA),
            ChildFailed(6, "ChildFailed: no", "parent:6"),
            ExecutionSuspended("why"),
            ExecutionResumed(),
            ExecutionTerminated({"by": "me"}),
            ContinuedAsNew([1, 2]),
            ExecutionCompleted("completed", DATA, None),
        ]
        raisable: list[Event] = [
            EventRaised("e", DATA),
            ExecutionSuspended("why"),
            ExecutionResumed(),
            ExecutionTerminated(DATA),
        ]
        async with self.open(make_url()) as broker:
            store = self.store(broker)
            await self.create(store, "i", DATA)
            item = await self.take_turn(store)
            appended = [*item.inbox, *events]
            await store.commit(
                item, Commit(appended, Status.RUNNING, output=DATA, custom_status=DATA)
            )
            assert await store.history("i") == appended
            inst = await self.instance_of(store, "i")
            assert (inst.input, inst.output, inst.custom_status) == (DATA, DATA, DATA)
            for event in raisable:
                await store.send_event("i", event)
            item = await self.take_turn(store)
            assert list(item.inbox) == raisable, "inbox events come back in the order sent"
            assert list(item.history) == appended

    async def test_a_commit_publishes_its_activities_to_their_queues(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as broker:
            store = self.store(broker)
            await self.create(store, "i")
            item = await self.take_turn(store)
            jobs = [
                ("orch-a", activity("i", 1, b"job 1")),
                ("orch-b", activity("i", 2, b"job 2")),
                ("orch-a", activity("i", 3, b"job 3")),
            ]
            await store.commit(item, turn(item, activities=jobs))
            got = await self.take(broker, "orch-a", 2)
            assert [d.message for d in got] == [jobs[0][1], jobs[2][1]]
            assert (await self.take_one(broker, "orch-b")).message == jobs[1][1]

    async def test_an_activity_completed_on_the_work_queue_lands_in_the_inbox(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as broker, self.open(make_url()) as worker:
            store = self.store(broker)
            await self.create(store, "i")
            item = await self.take_turn(store)
            jobs = [("orch-q", activity("i", 1, b"one")), ("orch-q", activity("i", 2, b"two"))]
            await store.commit(item, turn(item, activities=jobs))
            one, two = await self.take(worker, "orch-q", 2)
            await worker.complete(two, b"result two")
            item = await self.take_turn(store)
            assert list(item.inbox) == [TaskCompleted(2, b"result two")]
            await store.commit(item, turn(item))
            await worker.complete(one, b"")  # an empty result is a result
            item = await self.take_turn(store)
            assert list(item.inbox) == [TaskCompleted(1, b"")]
            await store.commit(item, turn(item))
            await self.assert_no_work(store, self.delay)

    async def test_a_dead_lettered_activity_lands_in_the_inbox_as_task_failed(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url(lease=self.lease, max_deliveries=1)) as broker:
            store = self.store(broker)
            await self.create(store, "i")
            item = await self.take_turn(store)
            jobs = [("orch-q", activity("i", 1)), ("orch-q", activity("i", 2))]
            await store.commit(item, turn(item, activities=jobs))
            first = await self.take_one(broker, "orch-q")
            await broker.dead_letter(first, "poison")
            item = await self.take_turn(store)
            assert list(item.inbox) == [TaskFailed(1, "poison")]
            await store.commit(item, turn(item))
            await self.take_one(broker, "orch-q")  # its lease runs out: over max_deliveries
            await self.pass_time(2 * self.lease)
            dead = await self.wait_dead(broker, "orch-q", 2)
            [reason] = [d.reason for d in dead if d.message.id == jobs[1][1].id]
            item = await self.take_turn(store)
            assert list(item.inbox) == [TaskFailed(2, reason)]

    async def test_the_completion_of_a_purged_instances_activity_goes_nowhere(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as broker:
            store = self.store(broker)
            await self.create(store, "i")
            item = await self.take_turn(store)
            jobs = [("orch-q", activity("i", 1))]
            await store.commit(item, turn(item, status=Status.COMPLETED, activities=jobs))
            assert await store.purge_instance("i")
            await broker.complete(await self.take_one(broker, "orch-q"), b"late")
            assert await store.instance("i") is None
            await self.assert_no_work(store, self.delay)

    async def test_the_completion_of_a_replaced_runs_activity_goes_nowhere(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as broker:
            store = self.store(broker)
            await self.create(store, "i", "old")
            item = await self.take_turn(store)
            old_job = [("orch-q", activity("i", 1, generation=item.instance.generation))]
            await store.commit(item, turn(item, status=Status.COMPLETED, activities=old_job))
            await self.create(store, "i", "new", replace=True)
            item = await self.take_turn(store)
            assert item.instance.generation > 0, "a replacement is a generation of its own"
            # the new run's first action: the same number as the old run's, still running
            new_job = [("orch-q", activity("i", 1, generation=item.instance.generation))]
            await store.commit(item, turn(item, activities=new_job))
            stale, fresh = await self.take(broker, "orch-q", 2)
            assert stale.message.id != fresh.message.id
            await broker.complete(stale, b"old run")
            await self.assert_no_work(store, self.delay)
            await broker.complete(fresh, b"new run")
            item = await self.take_turn(store)
            assert list(item.inbox) == [TaskCompleted(1, b"new run")]

    async def test_a_finished_instance_takes_no_more_turns(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as broker:
            store = self.store(broker)
            await self.create(store, "i")
            item = await self.take_turn(store)
            await store.send_event("i", EventRaised("during the last turn"))
            timers = [(broker.clock() + self.delay, TimerFired(1, 0.0))]
            await store.commit(item, turn(item, status=Status.COMPLETED, timers=timers))
            done = await self.instance_of(store, "i")
            history = await store.history("i")
            await store.send_event("i", EventRaised("after the end"))
            await store.send_event("i", ExecutionTerminated())
            await self.assert_no_work(store, 3 * self.delay)  # the timer came due meanwhile
            assert await store.instance("i") == done
            assert await store.history("i") == history

    async def test_a_commits_timers_show_in_the_inbox_at_their_time(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as one, self.open(make_url()) as two:
            a, b = self.store(one), self.store(two)
            await self.create(a, "i")
            item = await self.take_turn(a)
            async with trio.open_nursery() as nursery:
                taker = Taker(b, LONG)  # asleep while the instance is leased
                nursery.start_soon(taker.run)
                await trio.sleep(self.delay / 3)
                soon, later = one.clock() + self.delay, one.clock() + 3 * self.delay
                timers = [(later, TimerFired(2, 2.0)), (soon, TimerFired(1, 1.0))]
                await a.commit(item, turn(item, timers=timers))
                fired = await self.taken(taker)
            assert one.clock() >= soon and list(fired.inbox) == [TimerFired(1, 1.0)]
            await b.commit(fired, turn(fired))
            fired = await self.take_turn(a)
            assert one.clock() >= later and list(fired.inbox) == [TimerFired(2, 2.0)]

    async def test_a_commit_sends_events_to_other_instances(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as broker:
            store = self.store(broker)
            await self.create(store, "to")
            waiting = await self.take_turn(store)
            await store.commit(waiting, turn(waiting))
            await self.create(store, "from")
            item = await self.take_turn(store)
            sends = [
                ("to", EventRaised("hello", DATA)),
                ("to", ChildCompleted(3, "out")),
                ("nobody", EventRaised("lost")),  # an unknown instance: dropped, no error
            ]
            await store.commit(item, turn(item, sends=sends))
            got = await self.take_turn(store)
            assert got.instance.id == "to"
            assert list(got.inbox) == [EventRaised("hello", DATA), ChildCompleted(3, "out")]
            assert await store.instance("nobody") is None

    async def test_a_commit_creates_its_children(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as broker:
            store = self.store(broker)
            await self.create(store, "p")
            item = await self.take_turn(store)
            kids = [
                (row("p:1", DATA, parent_id="p"), started(DATA, parent_id="p", action=1)),
                (row("p:2", parent_id="p"), started(parent_id="p", action=2)),
            ]
            await store.commit(item, turn(item, children=kids))
            for child, _ in kids:
                inst = await self.instance_of(store, child.id)
                assert (inst.parent_id, inst.status, inst.input) == (
                    "p",
                    Status.PENDING,
                    child.input,
                )
            got = {i.instance.id: i for i in await self.take_turns(store, 2, limit=2)}
            assert {iid: list(i.inbox) for iid, i in got.items()} == {
                "p:1": [kids[0][1]],
                "p:2": [kids[1][1]],
            }

    async def test_a_child_whose_id_is_taken_fails_in_its_parents_inbox(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as broker:
            store = self.store(broker)
            await self.create(store, "taken", "first")
            await self.create(store, "p")
            got = {i.instance.id: i for i in await self.take_turns(store, 2, limit=2)}
            await store.commit(got["taken"], turn(got["taken"]))
            item = got["p"]
            kid = (
                row("taken", "second", parent_id="p"),
                started("second", parent_id="p", action=3),
            )
            await store.commit(item, turn(item, children=[kid]))
            failed = await self.take_turn(store)
            assert failed.instance.id == "p", "the parent hears that its child never started"
            [event] = failed.inbox
            assert isinstance(event, ChildFailed) and (event.action, event.instance_id) == (
                3,
                "taken",
            ), event
            assert "taken" in event.error
            taken = await self.instance_of(store, "taken")
            assert (taken.input, taken.parent_id) == ("first", None), "the child replaced it"

    async def test_a_restart_drops_the_old_generations_completions_and_keeps_raised_events(
        self, make_url: UrlFactory, broker_clock: trio.abc.Clock | None
    ) -> None:
        async with self.open(make_url()) as broker:
            store = self.store(broker)
            await self.create(store, "r", 0)
            item = await self.take_turn(store)
            jobs = [("orch-q", activity("r", 1)), ("orch-q", activity("r", 2))]
            due = broker.clock() + self.delay
            await store.commit(
                item, turn(item, activities=jobs, timers=[(due, TimerFired(3, 0.0))])
            )
            await store.send_event("r", EventRaised("go", 1))
            item = await self.take_turn(store)  # held while more arrives
            assert list(item.inbox) == [EventRaised("go", 1)]
            one, two = await self.take(broker, "orch-q", 2)
            await broker.complete(one, b"one")
            await store.send_event("r", EventRaised("kept", 2))
            await store.send_event("r", ExecutionSuspended("kept too"))
            await self.pass_time(2 * self.delay)  # the old generation's timer is due
            await store.commit(
                item,
                Commit(
                    [ContinuedAsNew(1)],
                    Status.RUNNING,
                    restart=True,
                    carryover=[started(1), EventRaised("carried", 3)],
                ),
            )
            await broker.complete(two, b"two")  # after the restart: the old generation's
            inst = await self.instance_of(store, "r")
            assert (inst.generation > 0, inst.status) == (True, Status.RUNNING), inst
            assert await store.history("r") == [ContinuedAsNew(1)], "the history starts afresh"
            item = await self.take_turn(store)
            assert item.instance.generation == inst.generation
            assert list(item.inbox) == [
                started(1),
                EventRaised("carried", 3),
                EventRaised("kept", 2),
                ExecutionSuspended("kept too"),
            ]
            await store.commit(item, turn(item))
            await self.assert_no_work(store, 2 * self.delay)
