"""Schedules: cron and every-N ticks fired once however many schedulers run, on MockClock."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import attrs
import pytest
import trio

from wireframe import jobs

TICKS: Counter[str] = Counter()


@attrs.frozen
class Beat(jobs.Operation[str, None], name="schedules-beat"):
    async def execute(self, who: str) -> None:
        TICKS[who] += 1


async def _schedulers(
    rt: jobs.Runtime, schedules: list[jobs.Schedule], replicas: int, seconds: float
) -> list[jobs.SchedulerTask]:
    """Run ``replicas`` scheduler tasks for ``seconds`` (trio clock), then stop them."""
    tasks = [jobs.SchedulerTask(rt, schedules, f"scheduler-{i}") for i in range(replicas)]
    async with trio.open_nursery() as nursery:
        for task in tasks:
            nursery.start_soon(_run_for, task, seconds)
    return tasks


async def _just_after_a_whole_minute(rt: jobs.Runtime) -> None:
    """Sleep (trio's clock) to 1 s past a whole minute of the wall clock it maps to.

    Ticks fall on whole periods of that wall clock, which is today's time: without
    this, how many ticks a test window holds would depend on the second it ran.
    """
    wall = rt.broker.clock() + rt.wall_offset
    await trio.sleep(60 - wall % 60 + 1)


async def _run_for(task: jobs.SchedulerTask, seconds: float) -> None:
    with trio.move_on_after(seconds):
        await task.run(_NeverStop())  # type: ignore[arg-type]


class _NeverStop:
    """A stop receiver whose stop never comes (the test cancels the task instead)."""

    is_set = False

    async def wait(self) -> None:
        await trio.sleep_forever()

    def cancel_on_stop(self) -> trio.CancelScope:
        return trio.CancelScope()


@pytest.fixture
def url() -> str:
    TICKS.clear()
    return f"memory://schedules-{uuid.uuid4().hex[:8]}?workers=1"


async def test_every_fires_each_tick_once_with_three_replicas(
    autojump_clock: trio.abc.Clock, url: str
) -> None:
    schedule = jobs.Schedule("heartbeat", every=30.0, op=Beat(), input="hb")
    async with jobs.connect(url) as rt:
        await _just_after_a_whole_minute(rt)
        tasks = await _schedulers(rt, [schedule], replicas=3, seconds=95)
        await trio.sleep(5)  # the last jobs run
    # the latest due tick at start, then one every 30 s for 95 s: 4 ticks in all
    assert TICKS["hb"] == 4, TICKS
    assert sum(t.fired["heartbeat"] for t in tasks) >= TICKS["hb"]


async def test_a_restart_fires_a_missed_tick_once_not_once_per_missed_tick(
    autojump_clock: trio.abc.Clock, url: str
) -> None:
    schedule = jobs.Schedule("report", every=60.0, op=Beat(), input="r")
    async with jobs.connect(url) as rt:
        await _just_after_a_whole_minute(rt)
        await _schedulers(rt, [schedule], replicas=1, seconds=1)
        await trio.sleep(1)
        assert TICKS["r"] == 1  # the latest due tick, fired at start
        await trio.sleep(600)  # ten ticks pass while no scheduler runs
        await _schedulers(rt, [schedule], replicas=1, seconds=1)
        await trio.sleep(1)
        assert TICKS["r"] == 2, "missed ticks fired more than once"
        await _schedulers(rt, [schedule], replicas=1, seconds=1)
        await trio.sleep(1)
        assert TICKS["r"] == 2, "a restart fired a tick that had fired already"


def test_cron_ticks_follow_the_time_zone_across_daylight_saving() -> None:
    paris = jobs.Schedule("nightly", cron="30 2 * * *", op=Beat(), tz="Europe/Paris")
    before = datetime(2026, 3, 28, 12, tzinfo=UTC)
    ticks = [paris.next_after(before)]
    ticks.append(paris.next_after(ticks[-1]))
    ticks.append(paris.next_after(ticks[-1]))
    local = [t.astimezone(ZoneInfo("Europe/Paris")) for t in ticks]
    # 02:30 does not exist on 29 March 2026 in Paris (clocks jump 02:00 -> 03:00)
    assert [(t.day, t.hour, t.minute) for t in local] == [(29, 3, 0), (30, 2, 30), (31, 2, 30)]
    last = paris.last_at_or_before(datetime(2026, 3, 30, 12, tzinfo=UTC))
    assert last.astimezone(ZoneInfo("Europe/Paris")).day == 30


def test_every_ticks_are_whole_periods_since_the_epoch() -> None:
    s = jobs.Schedule("s", every=60.0, op=Beat())
    moment = datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC)
    assert s.next_after(moment) == datetime(2026, 1, 1, 12, 1, tzinfo=UTC)
    assert s.last_at_or_before(moment) == datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert s.job_id(moment) == "schedule:s@2026-01-01T12:00:30+00:00"


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [
        ({"cron": "61 * * * *"}, "cron='61 \\* \\* \\* \\*' does not parse"),
        ({"cron": "* * *"}, "does not parse"),
        ({}, "give cron= or every=, exactly one"),
        ({"cron": "* * * * *", "every": 5.0}, "exactly one"),
        ({"every": 0}, "every=0 must be positive"),
        ({"every": 5.0, "tz": "Mars/Olympus"}, "tz='Mars/Olympus' is not a known time zone"),
    ],
)
def test_bad_schedules_are_refused_when_made(arguments: dict[str, object], complaint: str) -> None:
    with pytest.raises((ValueError, TypeError), match=complaint):
        jobs.Schedule("bad", op=Beat(), **arguments)  # type: ignore[arg-type]


def test_schedule_names_are_checked() -> None:
    with pytest.raises(ValueError, match="must be 1 to"):
        jobs.Schedule("", every=1.0, op=Beat())
    with pytest.raises(ValueError, match="must be unique"):
        jobs.SchedulerTask(None, [jobs.Schedule("a", every=1.0, op=Beat())] * 2, "s")  # type: ignore[arg-type]


async def test_schedulers_announce_their_schedules(
    autojump_clock: trio.abc.Clock, url: str
) -> None:
    nightly = jobs.Schedule("nightly", cron="0 3 * * *", op=Beat(), input="n", tz="Europe/Paris")
    often = jobs.Schedule("often", every=45.0, op=Beat(), input="o", queue="side")
    async with jobs.connect(url) as rt:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_run_for, jobs.SchedulerTask(rt, [nightly, often], "s1"), 50)
            await trio.sleep(1)
            listed = {s.name: s for s in await rt.broker.schedules()}
            assert set(listed) == {"nightly", "often"}
            assert listed["nightly"].schedule == "cron 0 3 * * * Europe/Paris"
            assert listed["often"].schedule == "every 45 s" and listed["often"].queue == "side"
            assert listed["often"].operation == "schedules-beat"
            assert listed["often"].scheduler == "s1"
            now = rt.broker.clock() + rt.wall_offset
            assert now < listed["often"].next_at <= now + 45
            assert listed["often"].last_at is not None and listed["often"].last_at <= now
        await trio.sleep(120)  # nobody announces them any more: they drop out
        assert await rt.broker.schedules() == []
