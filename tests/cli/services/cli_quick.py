"""A service that ends by itself at once: one precondition, one oneshot, one Task that returns."""

from __future__ import annotations

import attrs

import wireframe as wf


@wf.task(kind=wf.TaskKind.PRECONDITION, id="ready-check")
async def ready_check(stop: wf.StopReceiver) -> None:
    """Returns at once."""


@wf.task(kind=wf.TaskKind.ONESHOT, id="setup")
async def setup(stop: wf.StopReceiver) -> None:
    """Runs once after the barrier."""


@wf.task(kind=wf.TaskKind.TASK, id="main")
async def main_task(stop: wf.StopReceiver) -> None:
    """Returns at once, which stops the service cleanly."""
    print("main: ran", flush=True)


@attrs.frozen
class QuickOut:
    ready: wf.Precondition
    setup: wf.OneshotTask
    main: wf.Task


@attrs.frozen
class QuickLayer(wf.WiringLayer[None, QuickOut]):
    name = "quick"

    async def wire(self, input: None) -> QuickOut:
        return QuickOut(ready_check, setup, main_task)


builder = wf.ServiceBuilder(graceful_shutdown_timeout=2.0).add_layer(QuickLayer())
