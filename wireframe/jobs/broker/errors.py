"""The errors a broker raises on purpose, one family under :class:`BrokerError`.

Callers catch :class:`BrokerError` whatever the broker: no broker lets a third-party
exception type (a Redis client's, ``sqlite3``'s) escape; it raises one of these,
carrying the backend's message, instead.
"""

from __future__ import annotations

__all__ = ["BrokerError", "BrokerURLError", "BrokerUnavailable", "ChannelLost", "LockLost"]


class BrokerError(Exception):
    """Base class of every error a broker raises on purpose."""


class BrokerUnavailable(BrokerError):
    """The broker's backing service cannot be reached (yet)."""


class BrokerURLError(BrokerError, ValueError):
    """A broker URL is malformed or names an option the broker does not know."""


class LockLost(BrokerError):
    """The lease on a delivery ran out (or was taken over) before this call.

    The message may already be running elsewhere; whatever this holder computed
    is stale and has been dropped.
    """

    def __init__(self, message_id: str, queue: str, detail: str = "") -> None:
        self.message_id = message_id
        self.queue = queue
        extra = f": {detail}" if detail else ""
        super().__init__(
            f"lease on message {message_id!r} of queue {queue!r} was lost{extra}; "
            "its result was dropped and the message will run (or ran) elsewhere"
        )


class ChannelLost(BrokerError):
    """A run's result channel is gone: its replies will never come.

    Either the broker lost its state (a Redis restarted without persistence, or
    its keys were deleted) and with it the run's queued jobs, or the channel
    expired because its run did not keep it alive in time (the process was
    stopped, or its event loop blocked), so workers now skip the run's jobs.
    """

    def __init__(self, channel: str, detail: str) -> None:
        self.channel = channel
        self.detail = detail
        super().__init__(f"result channel {channel!r} is gone: {detail}")
