"""The brokers, one module (or package) each, and the API for writing one.

``wireframe.jobs.brokers.memory``, ``.sqlite`` and ``.redis`` implement the
:class:`Broker` protocol. None of them is imported here:
:func:`open_broker` imports a broker's module only when a URL names its scheme,
so no broker (nor its client library) is a dependency of the runtime.

**Writing a broker.** The names below are the broker-author API (they live in
:mod:`wireframe.jobs.broker`; users find theirs in :mod:`wireframe.jobs`):

* the protocol by role — :class:`WorkQueue`, :class:`ReplyChannels`,
  :class:`Broadcast`, :class:`Presence`, :class:`BrokerAdmin`,
  :class:`BrokerConnection` — and :class:`Broker`, all of them, which is what
  a broker implements (their docstrings hold the semantics);
* what crosses it — :class:`Message`, :class:`Delivery`, :class:`Reply`,
  :class:`DeadLetter`, :class:`QueueStats`, :class:`WorkerInfo`, with
  :func:`count_workers` to fill a ``stats()`` answer's worker counts — and
  :data:`DEAD_CHANNEL_RETENTION`;
* the errors it raises — :class:`BrokerError`, :class:`BrokerUnavailable`,
  :class:`BrokerURLError`, :class:`LockLost`, :class:`ChannelLost` (never a
  third-party exception type);
* its URL — :func:`parse_broker_url` with the broker's own options as
  ``name -> (converter, default)``, the converters :func:`seconds_option` and
  :func:`count_option`, :class:`BrokerURL`, and :func:`mask_password` for
  every message that quotes a URL.

A broker module defines ``open(url: str, *, create: bool = True)`` returning an
async context manager that yields the open broker, and its distribution
registers the scheme in the :data:`ENTRY_POINT_GROUP` entry-point group::

    [project.entry-points."wireframe.brokers"]
    mybroker = "mypackage.mybroker"

Then ``jobs.connect("mybroker://...")``, ``wireframe worker --broker`` and the
CLI open it like a built-in one (:func:`known_schemes` lists what is found).
Test it with ``wireframe.testing.BrokerConformance`` (or one role's class,
``WorkQueueConformance``...).
"""

from __future__ import annotations

from wireframe.jobs.broker import (
    DEAD_CHANNEL_RETENTION,
    ENTRY_POINT_GROUP,
    FINAL,
    FIND_JOBS_SCAN,
    LIVE,
    Broadcast,
    Broker,
    BrokerAdmin,
    BrokerConnection,
    BrokerError,
    BrokerUnavailable,
    BrokerURL,
    BrokerURLError,
    ChannelLost,
    DeadLetter,
    Delivery,
    JobRecord,
    JobStore,
    LockLost,
    Message,
    Presence,
    QueueStats,
    RecordStatus,
    Reply,
    ReplyChannels,
    ScheduleInfo,
    WorkerInfo,
    WorkQueue,
    count_option,
    count_workers,
    known_schemes,
    mask_password,
    open_broker,
    parse_broker_url,
    seconds_option,
)

__all__ = [
    "DEAD_CHANNEL_RETENTION",
    "ENTRY_POINT_GROUP",
    "FINAL",
    "FIND_JOBS_SCAN",
    "LIVE",
    "Broadcast",
    "Broker",
    "BrokerAdmin",
    "BrokerConnection",
    "BrokerError",
    "BrokerURL",
    "BrokerURLError",
    "BrokerUnavailable",
    "ChannelLost",
    "DeadLetter",
    "Delivery",
    "JobRecord",
    "JobStore",
    "LockLost",
    "Message",
    "Presence",
    "QueueStats",
    "RecordStatus",
    "Reply",
    "ReplyChannels",
    "ScheduleInfo",
    "WorkQueue",
    "WorkerInfo",
    "count_option",
    "count_workers",
    "known_schemes",
    "mask_password",
    "open_broker",
    "parse_broker_url",
    "seconds_option",
]
