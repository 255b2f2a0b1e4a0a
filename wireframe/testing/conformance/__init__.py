"""The broker conformance suite: the behaviour every broker shares, as pytest tests, by role.

Every broker behind :class:`~wireframe.jobs.broker.Broker` must behave the same;
:class:`BrokerConformance` checks that it does. Subclass it in a test module and
give it a ``broker_url`` fixture returning a fresh, isolated URL per test::

    from wireframe.testing import BrokerConformance

    class TestMyBroker(BrokerConformance):
        @pytest.fixture
        def broker_url(self, tmp_path):
            return f"mybroker:///{tmp_path}/state"

The suite is organised as the protocol is, one class per role, each in a module
of its own, all sharing :class:`~wireframe.testing.conformance.base.ConformanceBase`:
:class:`WorkQueueConformance`, :class:`ReplyChannelConformance`,
:class:`BroadcastConformance`, :class:`PresenceConformance`,
:class:`JobStoreConformance`, :class:`LimitsConformance` and :class:`AdminConformance`. ``BrokerConformance`` is all of them; subclass one
role's class instead to run that role alone (while a broker is being written,
say). A role added to the protocol later brings its own class here, beside
these: :class:`OrchestrationStoreConformance` (the durable orchestration store,
:mod:`.orchestrations`) is one, and is *not* part of ``BrokerConformance``,
since not every broker keeps orchestrations yet; a broker that does subclasses
it beside ``BrokerConformance``.

This package imports pytest; :mod:`wireframe.testing` loads it only when
``BrokerConformance`` (or a role's class) is asked for, so the rest of
``wireframe.testing`` imports without pytest installed.

Each test opens its brokers with :meth:`ConformanceBase.open` (by default
:func:`~wireframe.jobs.broker.open_broker`) on that URL with extra query
options (a short ``lease``, a small ``max_deliveries``, see
:func:`~wireframe.testing.with_options`), so two brokers opened in one test
share the same store, as two processes would. The tests are marked
``@pytest.mark.trio`` and need pytest-trio but not its ``trio_mode``.

Time: brokers measuring leases on the wall clock (SQLite, Redis) run the suite
in real time, a few seconds in all (each wait is at most ~0.6 s). A broker that
measures on trio's clock (``memory://``) may override the ``broker_clock``
fixture to return ``trio.testing.MockClock(autojump_threshold=0)`` and run the
suite in virtual time. A broker that reads a clock it is given (the SQLite
broker's ``open(url, clock=...)``) may override :meth:`ConformanceBase.open`
to give it a :class:`~wireframe.testing.OffsetClock` and
:meth:`ConformanceBase.pass_time` to move that clock, which skips the waits
where only time has to pass. ``lease`` and ``patience`` are class attributes a
slow broker may raise.
"""

from __future__ import annotations

from wireframe.testing.conformance.admin import AdminConformance
from wireframe.testing.conformance.base import ConformanceBase
from wireframe.testing.conformance.broadcast import BroadcastConformance
from wireframe.testing.conformance.job_store import JobStoreConformance
from wireframe.testing.conformance.limits import LimitsConformance
from wireframe.testing.conformance.orchestrations import OrchestrationStoreConformance
from wireframe.testing.conformance.presence import PresenceConformance
from wireframe.testing.conformance.reply_channels import ReplyChannelConformance
from wireframe.testing.conformance.work_queue import WorkQueueConformance

__all__ = [
    "AdminConformance",
    "BroadcastConformance",
    "BrokerConformance",
    "ConformanceBase",
    "JobStoreConformance",
    "LimitsConformance",
    "OrchestrationStoreConformance",
    "PresenceConformance",
    "ReplyChannelConformance",
    "WorkQueueConformance",
]


class BrokerConformance(
    WorkQueueConformance,
    ReplyChannelConformance,
    BroadcastConformance,
    PresenceConformance,
    JobStoreConformance,
    LimitsConformance,
    AdminConformance,
):
    """The behaviour every broker shares, every role's; subclass it and provide ``broker_url``.

    See the package docstring for the fixtures, the hooks and how time is handled.
    """
