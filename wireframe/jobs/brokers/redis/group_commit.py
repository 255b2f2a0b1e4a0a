"""A group commit: concurrent calls coalesced into batched calls, one round trip per batch.

A busy worker completes many jobs at once. Sent one by one, each completion would
pay a round trip to Redis; coalesced, the completions that arrive while one script
call is in flight go together in the next, so the cost per job falls as the load
rises, and a lone completion still goes at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import attrs
import trio

from wireframe.jobs.broker import BrokerError, BrokerUnavailable

__all__ = ["MAX_BATCH", "GroupCommit"]

Item = TypeVar("Item")

#: Most items one flush carries.
MAX_BATCH = 500


def _no_abort(_: object) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.FAILED  # not now: the cancel is delivered once woken


@attrs.define
class _Waiter(Generic[Item]):
    """One caller's item in a :class:`GroupCommit`, and how it ended."""

    item: Item
    outcome: object = None
    error: BaseException | None = None
    lead: bool = False
    woken: bool = False
    task: trio.lowlevel.Task | None = None

    def wake(self) -> None:
        """Its item's flush ended (or it leads the next): wake its caller."""
        self.woken = True
        if self.task is not None:
            task, self.task = self.task, None
            trio.lowlevel.reschedule(task)

    async def wait(self) -> None:
        """Until :meth:`wake`, not cancellable: a shielded wait, without the cost of a
        cancel scope per item (they were the largest part of a busy worker's trio
        overhead). A cancel that arrives meanwhile is delivered at the caller's next
        checkpoint, as after a shield."""
        if not self.woken:
            self.task = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(_no_abort)


class GroupCommit(Generic[Item]):
    """Coalesces concurrent calls into batched calls of ``flush`` (a group commit).

    The first caller flushes at once (no added latency); callers arriving while a
    flush is in flight queue up, and the first of them leads the next flush with
    everything queued by then. A waiting caller is shielded: its item is (or will
    be) sent, and it gets that item's real outcome rather than an unknown one.
    ``flush`` takes the items and returns one outcome per item, in order.
    """

    def __init__(
        self, flush: Callable[[list[Item]], Awaitable[list[object]]], most: int = MAX_BATCH
    ) -> None:
        self._flush = flush
        self._most = most  # items at most in one flush
        self._queue: list[_Waiter[Item]] = []
        self._busy = False

    async def submit(self, item: Item) -> object:
        """Send ``item`` in the next flush; its outcome (or the flush's error)."""
        me = _Waiter(item)
        self._queue.append(me)
        if self._busy:
            await me.wait()
            if not me.lead:
                if me.error is not None:
                    # the batch's error, as its kind: whether waiting can help is the same
                    kind = (
                        BrokerUnavailable
                        if isinstance(me.error, BrokerUnavailable)
                        else BrokerError
                    )
                    raise kind(str(me.error)) from me.error
                return me.outcome
        else:
            self._busy = True
        # the lead: flush the first batch (``me``'s with it), then hand the lead on
        batch, self._queue = self._queue[: self._most], self._queue[self._most :]
        try:
            outcomes = await self._flush([w.item for w in batch])
        except trio.Cancelled:
            # Nothing was sent (attempts are shielded; only a backoff sleep is
            # cancellable): hand the others back to the queue for the next leader.
            self._queue[:0] = [w for w in batch if w is not me]
            raise
        except BaseException as exc:
            for w in batch:
                w.error = exc
                w.wake()
            raise
        else:
            for w, outcome in zip(batch, outcomes, strict=True):
                w.outcome = outcome
                w.wake()
        finally:
            if self._queue:
                self._queue[0].lead = True
                self._queue[0].wake()
            else:
                self._busy = False
        return me.outcome
