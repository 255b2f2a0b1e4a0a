"""A service whose task raises (exit 1), and ones whose task ignores the stop (timed out, exit 1)."""

from __future__ import annotations

import attrs
import trio

import wireframe as wf


@wf.task(kind=wf.TaskKind.TASK, id="boom")
async def boom(stop: wf.StopReceiver) -> None:
    """Fails at once."""
    raise ValueError("boom: the disk is full\nsecond line of the message")


@wf.task(kind=wf.TaskKind.TASK, id="returns")
async def returns(stop: wf.StopReceiver) -> None:
    """Returns at once, which stops the service."""


@wf.task(kind=wf.TaskKind.UNCONSTRAINED, id="stubborn")
async def stubborn(stop: wf.StopReceiver) -> None:
    """Ignores the stop signal; only cancellation ends it."""
    await trio.sleep_forever()


@attrs.frozen
class BoomOut:
    boom: wf.Task


@attrs.frozen
class BoomLayer(wf.WiringLayer[None, BoomOut]):
    name = "boom"

    async def wire(self, input: None) -> BoomOut:
        return BoomOut(boom)


@attrs.frozen
class StubbornOut:
    returns: wf.Task
    stubborn: wf.UnconstrainedTask


@attrs.frozen
class StubbornLayer(wf.WiringLayer[None, StubbornOut]):
    name = "stubborn"

    async def wire(self, input: None) -> StubbornOut:
        return StubbornOut(returns, stubborn)


failing = wf.ServiceBuilder(graceful_shutdown_timeout=1.0).add_layer(BoomLayer())


def make_stubborn() -> wf.ServiceBuilder:
    """A factory: the CLI calls it to get the builder."""
    return wf.ServiceBuilder(graceful_shutdown_timeout=30.0).add_layer(StubbornLayer())


@attrs.frozen
class DeafOut:
    stubborn: wf.UnconstrainedTask


@attrs.frozen
class DeafLayer(wf.WiringLayer[None, DeafOut]):
    name = "deaf"

    async def wire(self, input: None) -> DeafOut:
        return DeafOut(stubborn)


#: Only a task that ignores the stop: nothing but a signal stops it, and only a
#: second one (or the end of an hour's grace period) ends it.
deaf = wf.ServiceBuilder(graceful_shutdown_timeout=3600.0).add_layer(DeafLayer())
