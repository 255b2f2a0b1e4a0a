"""Schedules: an operation submitted on a cron expression or every N seconds.

A :class:`Schedule` says what to submit and when; :class:`SchedulerLayer` gives
a :class:`SchedulerTask` that fires each schedule's ticks. Any number of
scheduler replicas may run: each tick is submitted with a job id made of the
schedule's name and the tick's time, and a broker makes one job of an id it
knows (live, or finished within ``result_ttl``), so every tick fires once.
A tick missed while no scheduler ran is fired once when one starts — the
latest due tick only, not one per missed tick.

Time: ticks are wall-clock moments (cron in the schedule's ``tz``, via the
kept parser cronsim and the stdlib ``zoneinfo``, which handle daylight-saving
changes; ``every`` ticks are whole multiples of the period since the epoch, so
replicas agree on them). The runtime maps the broker's clock to wall time once
(:attr:`~wireframe.jobs.Runtime.wall_offset`) and the task sleeps until the next
tick, so on ``memory://`` the whole thing runs on trio's ``MockClock`` in tests.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
import cronsim
import trio

import wireframe as wf
from wireframe.jobs.broker import BrokerError, BrokerUnavailable, ScheduleInfo, open_broker
from wireframe.jobs.handles import MAX_NAME_LENGTH
from wireframe.jobs.layers import BrokerReachable
from wireframe.jobs.operations import Operation
from wireframe.jobs.runtime import DEFAULT_URL, Runtime

__all__ = ["Schedule", "SchedulerLayer", "SchedulerOutput", "SchedulerTask"]

#: Seconds between two announcements of a scheduler's schedules in the broker.
_ANNOUNCE_EVERY = 10.0

_log = logging.getLogger(__name__)


@attrs.frozen
class Schedule:
    """Submit ``op`` with ``input`` on ``cron`` (in ``tz``) or ``every`` seconds.

    ``name`` identifies the schedule across replicas and restarts (it is part of
    each tick's job id); ``queue`` and ``priority`` are the submitted jobs'.
    Every field is checked when the schedule is made.
    """

    name: str
    op: Operation[Any, Any]
    input: Any = None
    cron: str | None = None
    every: float | None = None
    tz: str = "UTC"
    queue: str | None = None
    priority: int = 0
    zone: ZoneInfo = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        where = f"schedule {self.name!r}"
        if not isinstance(self.name, str) or not self.name or len(self.name) > MAX_NAME_LENGTH:
            raise ValueError(f"schedule name {self.name!r} must be 1 to {MAX_NAME_LENGTH} chars")
        if not isinstance(self.op, Operation):
            raise TypeError(f"{where}: op must be an Operation instance, not {self.op!r}")
        if (self.cron is None) == (self.every is None):
            raise ValueError(f"{where}: give cron= or every=, exactly one of them")
        try:
            object.__setattr__(self, "zone", ZoneInfo(self.tz))
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"{where}: tz={self.tz!r} is not a known time zone ({exc})") from None
        if self.every is not None:
            every = self.every
            if isinstance(every, bool) or not isinstance(every, int | float):
                raise TypeError(f"{where}: every={every!r} must be a number of seconds")
            if not math.isfinite(every) or every <= 0:
                raise ValueError(f"{where}: every={every!r} must be positive and finite")
        else:
            try:
                cronsim.CronSim(str(self.cron), datetime.now(self.zone))
            except cronsim.CronSimError as exc:
                raise ValueError(
                    f"{where}: cron={self.cron!r} does not parse ({exc}); five fields: "
                    "minute hour day-of-month month day-of-week, e.g. '0 3 * * *'"
                ) from None

    def next_after(self, moment: datetime) -> datetime:
        """The first tick strictly after ``moment`` (an aware datetime)."""
        if self.every is not None:
            seconds = moment.timestamp()
            tick = (math.floor(seconds / self.every) + 1) * self.every
            return datetime.fromtimestamp(tick, UTC)
        return next(cronsim.CronSim(str(self.cron), moment.astimezone(self.zone)))

    def last_at_or_before(self, moment: datetime) -> datetime:
        """The latest tick at or before ``moment`` (an aware datetime)."""
        if self.every is not None:
            tick = math.floor(moment.timestamp() / self.every) * self.every
            return datetime.fromtimestamp(tick, UTC)
        later = moment.astimezone(self.zone) + timedelta(seconds=1)
        return next(cronsim.CronSim(str(self.cron), later, reverse=True))

    def describe(self) -> str:
        """When it fires, in words: ``cron 0 3 * * * Europe/Paris`` or ``every 30 s``."""
        if self.every is not None:
            return f"every {self.every:g} s"
        return f"cron {self.cron} {self.tz}"

    def job_id(self, tick: datetime) -> str:
        """The id of the job that fires ``tick``: the same in every replica."""
        return f"schedule:{self.name}@{tick.astimezone(UTC).isoformat()}"


class SchedulerTask(wf.Task):
    """Fires the ticks of ``schedules`` through ``runtime`` until the stop.

    On start it fires each schedule's latest due tick (one a stopped scheduler
    may have missed; a tick that already fired makes no second job), then
    sleeps until the next tick of any schedule.
    """

    def __init__(self, runtime: Runtime, schedules: Sequence[Schedule], id: str) -> None:
        names = [s.name for s in schedules]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"scheduler {id!r}: schedule names must be unique, not {twice}")
        self.runtime = runtime
        self.schedules = tuple(schedules)
        self.id = id
        #: Ticks this task submitted, by schedule name (for the live view and tests).
        self.fired: dict[str, int] = dict.fromkeys(names, 0)
        self._due: dict[str, datetime] = {}  # each schedule's next tick
        self._last: dict[str, datetime] = {}  # each schedule's last tick fired here

    async def run(self, stop: wf.StopReceiver) -> None:
        """Fire ticks until the stop; announce the schedules in the broker meanwhile."""
        now = self._now()
        self._due = {s.name: s.last_at_or_before(now) for s in self.schedules}
        with stop.cancel_on_stop():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._announce_every, _ANNOUNCE_EVERY)
                while True:
                    for schedule in self.schedules:
                        tick = self._due[schedule.name]
                        if tick <= now and await self._fired(schedule, tick):
                            self._due[schedule.name] = schedule.next_after(tick)
                            self._last[schedule.name] = tick
                            await self._announce(schedule)
                    await trio.sleep(max(0.0, (min(self._due.values()) - now).total_seconds()))
                    now = self._now()

    def _now(self) -> datetime:
        """Wall time as the broker's clock tells it (trio's clock, for memory://)."""
        runtime = self.runtime
        return datetime.fromtimestamp(runtime.broker.clock() + runtime.wall_offset, UTC)

    async def _announce_every(self, seconds: float) -> None:
        """Tell the broker about the schedules every ``seconds`` (and after each fire)."""
        while True:
            await trio.sleep(seconds)
            for schedule in self.schedules:
                await self._announce(schedule)

    async def _announce(self, schedule: Schedule) -> None:
        """Tell the broker when ``schedule`` fires next (``wireframe jobs schedules``)."""
        broker = self.runtime.broker
        last = self._last.get(schedule.name)
        info = ScheduleInfo(
            name=schedule.name,
            schedule=schedule.describe(),
            operation=type(schedule.op).op_name,
            queue=schedule.queue or self.runtime.queue,
            next_at=self._due[schedule.name].timestamp(),
            last_at=None if last is None else last.timestamp(),
            scheduler=self.id,
        )
        try:
            await broker.announce_schedule(info, max(3 * _ANNOUNCE_EVERY, broker.url.lease))
        except BrokerError as exc:  # passing: the next round tries again
            _log.debug("scheduler %s: cannot announce %r: %s", self.id, schedule.name, exc)

    async def _fired(self, schedule: Schedule, tick: datetime) -> bool:
        """Fire ``tick``; False (after a pause) if the broker is away: it stays due."""
        try:
            await self._fire(schedule, tick)
            return True
        except BrokerUnavailable as exc:
            _log.warning("scheduler %s: cannot fire %r now: %s", self.id, schedule.name, exc)
            await trio.sleep(1.0)
            return False

    async def _fire(self, schedule: Schedule, tick: datetime) -> None:
        await self.runtime.submit(
            schedule.op,
            schedule.input,
            queue=schedule.queue,
            priority=schedule.priority,
            job_id=schedule.job_id(tick),
        )
        self.fired[schedule.name] += 1


@attrs.frozen
class SchedulerOutput:
    """What :class:`SchedulerLayer` gives."""

    scheduler: SchedulerTask
    broker_ready: BrokerReachable


@attrs.frozen
class SchedulerLayer(wf.WiringLayer[None, SchedulerOutput]):
    """Gives a :class:`SchedulerTask` firing ``schedules`` on the broker ``url``.

    Run it in as many services as you like: every tick still fires once.
    """

    url: str | None = None
    schedules: tuple[Schedule, ...] = attrs.field(default=(), converter=tuple)
    name: str = "scheduler"

    async def wire(self, input: None) -> AsyncIterator[SchedulerOutput]:
        """Open the broker, yield the scheduler task, close the broker at shutdown."""
        async with open_broker(self.url or DEFAULT_URL) as broker:
            yield SchedulerOutput(
                SchedulerTask(Runtime(broker), self.schedules, self.name),
                BrokerReachable(broker, f"{self.name}:broker"),
            )
