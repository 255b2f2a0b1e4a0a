"""hello: the five task kinds, a resource with a lifetime, and a clean Ctrl-C.

Run it with ``python examples/hello.py`` (or ``wireframe run examples/hello.py``)
and stop it with Ctrl-C. What it shows:

* ``ConfigLayer`` gives a resource (``Greeting``) and owns its lifetime: its
  ``wire`` is an async generator, and the code after ``yield`` runs at shutdown.
* ``warm-up`` is a Precondition: ``greeter`` and ``announce`` wait for it.
* ``announce`` is a OneshotTask: it runs once, after the barrier lifts.
* ``greeter`` is a Task: it runs until the stop signal arrives.
* ``watchdog`` (UnconstrainedTask) and ``banner`` (UnconstrainedOneshotTask)
  start at once, without waiting for the precondition.

Set ``HELLO_SECONDS`` to stop by itself after that many seconds.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import attrs
import trio

import wireframe as wf


@attrs.frozen
class Greeting:
    """A resource: any class will do; its type is its identity."""

    text: str


@attrs.frozen
class ConfigOut:
    greeting: Greeting


@attrs.frozen
class ConfigLayer(wf.WiringLayer[None, ConfigOut]):
    """Gives the Greeting, and says goodbye when the service shuts down."""

    name = "config"

    async def wire(self, input: None) -> AsyncIterator[ConfigOut]:
        print("config: opened", flush=True)
        yield ConfigOut(Greeting("hello, world"))
        print("config: closed", flush=True)


@attrs.define
class WarmUp(wf.Precondition):
    """Returns after a short warm-up; gated tasks start after it."""

    id = "warm-up"

    async def run(self, stop: wf.StopReceiver) -> None:
        await trio.sleep(0.05)
        print("warm-up: done", flush=True)


@attrs.define
class Greeter(wf.Task):
    """Greets every second until the service stops."""

    greeting: Greeting
    id = "greeter"

    async def run(self, stop: wf.StopReceiver) -> None:
        print("ready: greeter running", flush=True)
        while not stop.is_set:
            print(f"greeter: {self.greeting.text}", flush=True)
            with trio.move_on_after(1.0):
                await stop.wait()
        print(f"greeter: stopping ({stop.reason})", flush=True)


@attrs.define
class Watchdog(wf.UnconstrainedTask):
    """Runs from the start; stops the service after HELLO_SECONDS if that is set."""

    seconds: float | None
    id = "watchdog"

    async def run(self, stop: wf.StopReceiver) -> None:
        if self.seconds is None:
            await stop.wait()
            return
        with stop.cancel_on_stop():
            await trio.sleep(self.seconds)
            print("watchdog: time is up", flush=True)  # returning stops the service


@wf.task(kind=wf.TaskKind.ONESHOT, id="announce")
async def announce(stop: wf.StopReceiver) -> None:
    """Runs once, after the precondition."""
    print("announce: the service is up", flush=True)


@wf.task(kind=wf.TaskKind.UNCONSTRAINED_ONESHOT, id="banner")
async def banner(stop: wf.StopReceiver) -> None:
    """Runs once, at once."""
    print("banner: starting hello", flush=True)


@attrs.frozen
class HelloIn:
    greeting: Greeting


@attrs.frozen
class HelloOut:
    warm_up: WarmUp
    greeter: Greeter
    watchdog: Watchdog
    announce: wf.OneshotTask
    banner: wf.UnconstrainedOneshotTask


@attrs.frozen
class HelloLayer(wf.WiringLayer[HelloIn, HelloOut]):
    """Takes the Greeting and gives one task of every kind."""

    name = "hello"

    async def wire(self, input: HelloIn) -> HelloOut:
        seconds = os.environ.get("HELLO_SECONDS")
        return HelloOut(
            warm_up=WarmUp(),
            greeter=Greeter(input.greeting),
            watchdog=Watchdog(float(seconds) if seconds else None),
            announce=announce,
            banner=banner,
        )


builder = wf.ServiceBuilder(graceful_shutdown_timeout=5.0)
builder.add_layer(HelloLayer()).add_layer(ConfigLayer())


if __name__ == "__main__":
    try:
        report = wf.run(builder)
    except wf.ServiceError as exc:
        print(exc)
        raise SystemExit(1) from None
    states = ", ".join(f"{t.id}={t.state.value}" for t in report.tasks.values())
    print(f"clean stop ({report.stop_reason}): {states}", flush=True)
