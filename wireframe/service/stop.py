"""One stop signal per service, seen by every task through a :class:`StopReceiver`.

The service owns the sending side; tasks only get the receiving side, so a
task cannot stop a service by accident — it stops it by returning (Task and
UnconstrainedTask kinds) or raising, which is the service's decision to make.
Whoever runs the service asks it to stop (``Service.stop()``, or a signal the
service handles itself); each such :class:`StopRequest` is told to the
service's stop listeners, so that a status view can say what happened.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import attrs
import trio

__all__ = ["StopReceiver", "StopRequest"]


@attrs.frozen
class StopRequest:
    """One request to stop a service, as its stop listeners hear it.

    ``number`` counts the requests (1 for the first); ``forced`` says the stop
    was already under way, so this request cut the grace period short and
    cancelled the tasks still running; ``signal`` names the signal that made
    the request (``"SIGINT"``), ``None`` for a ``Service.stop()`` call.
    """

    reason: str
    number: int
    forced: bool
    signal: str | None = None


class StopSignal:
    """The sending side: set once, remembered forever, with the reason why."""

    def __init__(self) -> None:
        self._event = trio.Event()
        self._scopes: set[trio.CancelScope] = set()
        self.reason: str | None = None

    @property
    def is_set(self) -> bool:
        """Whether the stop has been sent."""
        return self._event.is_set()

    def send(self, reason: str) -> bool:
        """Send the stop (first reason wins); True if this call sent it."""
        if self._event.is_set():
            return False
        self.reason = reason
        self._event.set()
        for scope in list(self._scopes):
            scope.cancel()
        return True

    def cancel_on_send(self, scope: trio.CancelScope) -> Callable[[], None]:
        """Cancel ``scope`` when the stop is sent (at once if it was); returns an unregister."""
        if self._event.is_set():
            scope.cancel()
        self._scopes.add(scope)
        return lambda: self._scopes.discard(scope)

    def receiver(self) -> StopReceiver:
        """A receiver tasks can wait on."""
        return StopReceiver(self)


class StopReceiver:
    """What a task sees of the service's stop signal.

    Three ways to use it, from the most to the least explicit::

        await stop.wait()                 # park until stop arrives
        while not stop.is_set: ...        # poll between units of work
        with stop.cancel_on_stop():       # cancel a block when stop arrives
            await serve_forever()
    """

    __slots__ = ("_signal",)

    def __init__(self, signal: StopSignal) -> None:
        self._signal = signal

    @property
    def is_set(self) -> bool:
        """Whether the stop has arrived."""
        return self._signal.is_set

    @property
    def reason(self) -> str | None:
        """Why the service is stopping, once it is (e.g. ``"task 'web' returned"``)."""
        return self._signal.reason

    async def wait(self) -> None:
        """Return once the stop has arrived (at once if it already has)."""
        await self._signal._event.wait()

    @contextmanager
    def cancel_on_stop(self) -> Iterator[trio.CancelScope]:
        """Run the ``with`` block, cancelling it when the stop arrives.

        The block ends quietly (the cancellation is caught by its own scope);
        check ``scope.cancelled_caught`` to tell the two endings apart.
        """
        with trio.CancelScope() as scope:
            unregister = self._signal.cancel_on_send(scope)
            try:
                yield scope
            finally:
                unregister()
