"""The coordinated result channel of one directive run.

The sender registers every job it publishes (:meth:`ResultChannel.expect`)
and finally :meth:`~ResultChannel.close`\\ s; the receiver takes replies in
batches. The stream ends exactly when the sender is closed **and** every
registered job has its reply. A reply for a job that was never registered or
already answered (at-least-once delivery may complete a job twice) is ignored.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import trio

from wireframe.jobs.broker import Broker, Reply

__all__ = ["ResultChannel"]


class ResultChannel:
    """Replies of one run on broker channel ``name``; one receiver, one sender."""

    def __init__(self, broker: Broker, name: str, *, batch: int = 1024) -> None:
        self.broker = broker
        self.name = name
        self.batch = batch
        self._pending: dict[str, Any] = {}
        self._closed = False
        self._wait_scope: trio.CancelScope | None = None
        self.duplicates = 0

    @property
    def pending(self) -> int:
        """How many registered jobs still lack a reply."""
        return len(self._pending)

    @property
    def closed(self) -> bool:
        """True once the sender said it sends nothing more."""
        return self._closed

    @property
    def done(self) -> bool:
        """True when the sender is closed and every registered job has its reply."""
        return self._closed and not self._pending

    def expect(self, items: Iterable[tuple[str, Any]]) -> None:
        """Register ``(job id, tag)`` pairs before publishing them; the tag comes back with the reply."""
        if self._closed:
            raise RuntimeError(f"result channel {self.name!r} is closed; nothing more can be sent")
        self._pending.update(items)

    def close(self) -> None:
        """The sender is done: the stream ends when the last pending reply arrives."""
        self._closed = True
        if not self._pending and self._wait_scope is not None:
            self._wait_scope.cancel()

    async def receive(self) -> list[tuple[Reply, Any]] | None:
        """The next batch of ``(reply, tag)``, or ``None`` when the stream has ended.

        Never returns an empty list; duplicate and unknown replies are dropped.
        """
        while not self.done:
            with trio.CancelScope() as scope:
                self._wait_scope = scope
                if self.done:  # closed between the check and the scope
                    break
                replies = await self.broker.receive_replies(self.name, self.batch)
            self._wait_scope = None
            if scope.cancelled_caught:
                continue
            out: list[tuple[Reply, Any]] = []
            pop = self._pending.pop
            missing = _MISSING
            for reply in replies:
                tag = pop(reply.message_id, missing)
                if tag is missing:
                    self.duplicates += 1
                else:
                    out.append((reply, tag))
            if out:
                return out
        return None


_MISSING: Any = object()
