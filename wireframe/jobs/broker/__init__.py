"""The broker contract: the protocols a broker implements, what crosses them, and how a URL picks one.

Everything a broker is and says is named here, one idea a module:

* :mod:`.roles` — the protocols, by role (:class:`WorkQueue`,
  :class:`ReplyChannels`, :class:`Broadcast`, :class:`Presence`,
  :class:`JobStore`, :class:`BrokerAdmin`, :class:`BrokerConnection`) and :class:`Broker`, their
  union; the semantics every broker shares are written there, role by role,
  and checked by ``wireframe.testing``'s conformance suite;
* :mod:`.messages` — the data that crosses them (:class:`Message`,
  :class:`Delivery`, :class:`Reply`, :class:`DeadLetter`, :class:`QueueStats`,
  :class:`WorkerInfo`, :class:`JobRecord`);
* :mod:`.errors` — :class:`BrokerError` and its family;
* :mod:`.urls` — broker URLs, their common options and password masking;
* :mod:`.schemes` — :func:`open_broker`: the scheme picks a broker registered
  in the ``wireframe.brokers`` entry-point group.

Every name stays importable from ``wireframe.jobs.broker``, as before the
split. Users find the names they need in ``wireframe.jobs``; broker authors
find theirs in ``wireframe.jobs.brokers``.
"""

from __future__ import annotations

from wireframe.jobs.broker.errors import (
    BrokerError,
    BrokerUnavailable,
    BrokerURLError,
    ChannelLost,
    LockLost,
)
from wireframe.jobs.broker.messages import (
    DURABLE_INBOX_PREFIX,
    FINAL,
    LIVE,
    DeadLetter,
    Delivery,
    JobRecord,
    Message,
    QueueStats,
    RecordStatus,
    Reply,
    ScheduleInfo,
    WorkerInfo,
    count_workers,
)
from wireframe.jobs.broker.roles import (
    DEAD_CHANNEL_RETENTION,
    FIND_JOBS_SCAN,
    Broadcast,
    Broker,
    BrokerAdmin,
    BrokerConnection,
    JobStore,
    Presence,
    ReplyChannels,
    WorkQueue,
)
from wireframe.jobs.broker.schemes import ENTRY_POINT_GROUP, known_schemes, open_broker
from wireframe.jobs.broker.schemes import SCHEMES as SCHEMES
from wireframe.jobs.broker.urls import COMMON_OPTIONS as COMMON_OPTIONS
from wireframe.jobs.broker.urls import (
    BrokerURL,
    count_option,
    mask_password,
    parse_broker_url,
    seconds_option,
)

__all__ = [
    "DEAD_CHANNEL_RETENTION",
    "DURABLE_INBOX_PREFIX",
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
