"""Layer lifetimes may hold nurseries and cancel scopes across their ``yield``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import attrs
import pytest
import trio
import trio.testing
from layerkit import TasksLayer, TasksOut, forever, make_task, returns

import wireframe as wf

K = wf.TaskKind


@attrs.frozen
class Ticker:
    ticks: list[int]


@attrs.frozen
class TickerOut:
    ticker: Ticker


@attrs.frozen
class TickerLayer(wf.WiringLayer[None, TickerOut]):
    """Owns a background task in a nursery that stays open while the service runs."""

    log: list[str]
    fail_after_ticks: int | None = None
    name = "ticker"

    async def wire(self, input: None) -> AsyncIterator[TickerOut]:
        ticker = Ticker([])

        async def tick() -> None:
            while True:
                await trio.sleep(1)
                ticker.ticks.append(len(ticker.ticks))
                if len(ticker.ticks) == self.fail_after_ticks:
                    raise ConnectionError("ticker lost its connection")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(tick)
            self.log.append("ticker open")
            try:
                yield TickerOut(ticker)
            finally:
                nursery.cancel_scope.cancel()
                self.log.append("ticker closed")


@attrs.frozen
class UsesTicker:
    ticker: Ticker


@attrs.frozen
class WaitForTicks(wf.WiringLayer[UsesTicker, TasksOut]):
    count: int
    name = "waiter"

    async def wire(self, input: UsesTicker) -> TasksOut:
        async def wait(stop: wf.StopReceiver) -> None:
            while len(input.ticker.ticks) < self.count and not stop.is_set:
                await trio.sleep(0.5)

        return TasksOut([make_task(K.TASK, "waiter", wait, [])])


async def test_a_layer_holds_a_nursery_across_its_yield(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[str] = []
    builder = wf.ServiceBuilder(handle_signals=False)
    report = await builder.add_layer(WaitForTicks(3)).add_layer(TickerLayer(log)).build().run()
    assert report.ok
    assert log == ["ticker open", "ticker closed"]
    assert report.shutdown[0].state is wf.TaskState.FINISHED


async def test_a_lifetime_failing_while_held_stops_the_service_failed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[str] = []
    builder = wf.ServiceBuilder(handle_signals=False)
    service = builder.add_layer(WaitForTicks(100)).add_layer(TickerLayer(log, 2)).build()
    with pytest.raises(wf.ServiceError, match="teardown 'ticker' failed") as info:
        await service.run()
    report = info.value.report
    assert report.stop_reason is not None
    assert "layer 'ticker' failed while running" in report.stop_reason
    assert "ticker lost its connection" in str(report.shutdown[0].error)
    assert report.tasks["waiter"].state is wf.TaskState.STOPPED
    assert log == ["ticker open", "ticker closed"]


async def test_a_stop_during_a_lifetime_setup_cancels_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    @attrs.frozen
    class SlowOpen(wf.WiringLayer[None, TickerOut]):
        name = "slow-open"

        async def wire(self, input: None) -> AsyncIterator[TickerOut]:
            await trio.sleep(1000)
            yield TickerOut(Ticker([]))

    service = (
        wf.ServiceBuilder(handle_signals=False)
        .add_layer(SlowOpen())
        .add_layer(TasksLayer([make_task(K.TASK, "t", forever, [])]))
        .build()
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(service.run)
        await trio.sleep(1)
        assert service.phase == "wiring"
        service.stop("impatient")
    report = service.status()
    assert report.ok and report.stop_reason == "impatient"
    assert report.tasks == {}  # nothing was wired past the slow layer


async def test_a_lifetime_that_fails_before_yield_is_a_wiring_error() -> None:
    @attrs.frozen
    class BadOpen(wf.WiringLayer[None, TickerOut]):
        name = "bad-open"

        async def wire(self, input: None) -> AsyncIterator[TickerOut]:
            async with trio.open_nursery():
                raise PermissionError("no access")
            yield TickerOut(Ticker([]))  # pragma: no cover

    service = (
        wf.ServiceBuilder(handle_signals=False)
        .add_layer(BadOpen())
        .add_layer(TasksLayer([make_task(K.TASK, "t", returns, [])]))
        .build()
    )
    with pytest.raises(wf.WiringError, match="layer 'bad-open': wire\\(\\) raised") as info:
        await service.run()
    assert "no access" in str(info.value)
