"""Helpers for users' own tests; importable without pytest.

A plain install of wireframe has no pytest, and a program may import
``wireframe.testing`` for :func:`fresh_memory_url` or :func:`with_options`
alone, so this package imports nothing of pytest itself. The broker
conformance suite, :class:`BrokerConformance`, is pytest tests: it lives in
:mod:`wireframe.testing.conformance`, one class per role of the broker
protocol (``WorkQueueConformance``, ``ReplyChannelConformance``,
``BroadcastConformance``, ``PresenceConformance``, ``JobStoreConformance``,
``LimitsConformance``, ``AdminConformance``), with the durable orchestration
store's ``OrchestrationStoreConformance`` beside them (not part of
``BrokerConformance``), and is loaded on first use of one of those names
(``from wireframe.testing import BrokerConformance`` keeps working), which is
when pytest is needed.
"""

from __future__ import annotations

import os
import time
import uuid
import warnings
from typing import TYPE_CHECKING, Any, NoReturn, Protocol
from urllib.parse import parse_qsl, urlencode

if TYPE_CHECKING:
    from wireframe.testing.conformance import (
        AdminConformance,
        BroadcastConformance,
        BrokerConformance,
        JobStoreConformance,
        LimitsConformance,
        OrchestrationStoreConformance,
        PresenceConformance,
        ReplyChannelConformance,
        WorkQueueConformance,
    )

__all__ = [
    "AdminConformance",
    "BroadcastConformance",
    "BrokerConformance",
    "JobStoreConformance",
    "LimitsConformance",
    "OffsetClock",
    "OrchestrationStoreConformance",
    "PresenceConformance",
    "ReplyChannelConformance",
    "UrlFactory",
    "WorkQueueConformance",
    "fresh_memory_url",
    "skip_or_fail_unavailable",
    "with_options",
]


def skip_or_fail_unavailable(reason: str) -> NoReturn:
    """Skip the test: a backing service (a Redis server, say) does not answer — or fail it in CI.

    A CI machine runs the services the tests need, so a skip there would hide
    a broken backend: when the environment variable ``CI`` is set, this fails
    the test instead, with the same reason.
    """
    import pytest  # here, not at module level: importing wireframe.testing needs no pytest

    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)")
    pytest.skip(reason)


def service_unavailable(reason: str) -> NoReturn:
    """Deprecated: the old name of :func:`skip_or_fail_unavailable`, which it calls.

    Renamed because it read like an exception class to raise; kept, warning,
    for code outside the repository that calls it.
    """
    warnings.warn(
        "wireframe.testing.service_unavailable is deprecated; call skip_or_fail_unavailable",
        DeprecationWarning,
        stacklevel=2,
    )
    skip_or_fail_unavailable(reason)


def with_options(url: str, **options: object) -> str:
    """``url`` with query ``options`` set (replacing same-named ones); None drops one.

    Plain string surgery, so ``memory://?x=1`` and ``sqlite:////abs/path`` keep
    their exact shape (``urlunsplit`` would not).
    """
    base, _, query = url.partition("?")
    pairs = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k not in options]
    pairs += [(k, str(v)) for k, v in options.items() if v is not None]
    return f"{base}?{urlencode(pairs)}" if pairs else base


def fresh_memory_url(**options: object) -> str:
    """A ``memory://`` URL with a name no one else uses, with query ``options``.

    For tests that want their own in-process broker (and, with ``workers=N``,
    emulated workers): ``jobs.connect(fresh_memory_url(workers=2))``.
    """
    return with_options(f"memory://test-{uuid.uuid4().hex}", **options)


class UrlFactory(Protocol):
    """The ``make_url`` fixture: the test's broker URL with suite options set."""

    def __call__(self, *, lease: float | None = None, max_deliveries: int | None = None) -> str:
        """The URL with ``lease``/``max_deliveries`` set where given."""
        ...


class OffsetClock:
    """Wall-clock seconds plus an offset a test moves forward: a clock to give a broker.

    For a broker that reads the time from a clock it is given (the SQLite
    broker's ``open(url, clock=...)``): moving the offset runs a lease out at
    once instead of after a real wait. Every broker on one store must read the
    same clock. Callable from any thread. (Not trio's ``MockClock`` with
    autojump for such a broker: it jumps while a task waits for the broker's
    threads, firing timeouts in the middle of a call.)
    """

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        """The wall clock's seconds since the epoch, plus the offset."""
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward (read from the broker's threads too)."""
        self.offset += seconds


#: The names :mod:`wireframe.testing.conformance` gives, loaded on first use.
_CONFORMANCE = frozenset(
    {
        "AdminConformance",
        "LimitsConformance",
        "BroadcastConformance",
        "BrokerConformance",
        "JobStoreConformance",
        "OrchestrationStoreConformance",
        "PresenceConformance",
        "ReplyChannelConformance",
        "WorkQueueConformance",
    }
)


def __getattr__(name: str) -> Any:
    """Load the conformance classes (and pytest with them) only when one is asked for."""
    if name in _CONFORMANCE:
        from wireframe.testing import conformance

        return getattr(conformance, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
