"""The job-queue runtime: operations, directives, the runtime, the worker and their layers.

```python
from wireframe import jobs

async with jobs.connect("memory://?workers=3") as rt:
    xs = await jobs.from_iter(range(100)).map(AddOne()).collect().run(rt)
```

Brokers are found by URL scheme (``memory://``, ``sqlite:///path``,
``redis://host:port/db``, or one a plug-in registers); nothing here depends on
a particular one.

``__all__`` is the user's API: what a service, a test or a tool that runs jobs
needs, including the broker names a user meets (``open_broker``, ``Broker``,
the messages, the errors). The API for writing a broker — the protocol's
roles, URL parsing, ``WorkerInfo`` — is ``wireframe.jobs.brokers``; the few
of its names that were importable from here still are (``BrokerURL``,
``WorkerInfo``, ``parse_broker_url``), for code written before. The runtime's
internals (its runs, channels, counters, layer outputs) are not re-exported:
import them from their modules where a test needs one.
"""

from __future__ import annotations

from wireframe.jobs.broker import (
    Broker,
    BrokerError,
    BrokerUnavailable,
    BrokerURLError,
    ChannelLost,
    DeadLetter,
    Delivery,
    LockLost,
    Message,
    QueueStats,
    Reply,
    mask_password,
    open_broker,
)
from wireframe.jobs.broker import BrokerURL as BrokerURL
from wireframe.jobs.broker import WorkerInfo as WorkerInfo
from wireframe.jobs.broker import parse_broker_url as parse_broker_url
from wireframe.jobs.cache import ResultCache
from wireframe.jobs.codec import UnknownOperation
from wireframe.jobs.directives import (
    Collect,
    Fold,
    LiteralValue,
    Map,
    MapItem,
    Source,
    Then,
    from_iter,
    literal,
)
from wireframe.jobs.errors import (
    CodecError,
    ErrorKind,
    Fatal,
    Ignore,
    JobFailed,
    JobsError,
    OperationError,
    RemoteError,
    Strategy,
    Terminate,
    Transient,
)
from wireframe.jobs.handles import JobAborted, JobHandle, JobStatus, UnknownJob
from wireframe.jobs.layers import BrokerReachable, JobRuntimeLayer, WorkerLayer, WorkerTask
from wireframe.jobs.limits import Limit, LimitError
from wireframe.jobs.middleware import JobContext, JobOutcome, Middleware, MiddlewareError
from wireframe.jobs.operations import Monoid, Operation, lookup_operation, registered_operations
from wireframe.jobs.progress import Progress, ProgressListener, add_progress_listener, track
from wireframe.jobs.retry import RetryPolicy
from wireframe.jobs.runtime import DEFAULT_URL, Runtime, RuntimeStatistics, RuntimeStats, connect
from wireframe.jobs.schedules import Schedule, SchedulerLayer, SchedulerTask
from wireframe.jobs.worker import Worker, WorkerStatistics

__all__ = [
    "DEFAULT_URL",
    "Broker",
    "BrokerError",
    "BrokerReachable",
    "BrokerURLError",
    "BrokerUnavailable",
    "ChannelLost",
    "CodecError",
    "Collect",
    "DeadLetter",
    "Delivery",
    "ErrorKind",
    "Fatal",
    "Fold",
    "Ignore",
    "JobAborted",
    "JobContext",
    "JobFailed",
    "JobHandle",
    "JobOutcome",
    "JobRuntimeLayer",
    "JobStatus",
    "JobsError",
    "Limit",
    "LimitError",
    "LiteralValue",
    "LockLost",
    "Map",
    "MapItem",
    "Message",
    "Middleware",
    "MiddlewareError",
    "Monoid",
    "Operation",
    "OperationError",
    "Progress",
    "ProgressListener",
    "QueueStats",
    "RemoteError",
    "Reply",
    "ResultCache",
    "RetryPolicy",
    "Runtime",
    "RuntimeStatistics",
    "RuntimeStats",
    "Schedule",
    "SchedulerLayer",
    "SchedulerTask",
    "Source",
    "Strategy",
    "Terminate",
    "Then",
    "Transient",
    "UnknownJob",
    "UnknownOperation",
    "Worker",
    "WorkerLayer",
    "WorkerStatistics",
    "WorkerTask",
    "add_progress_listener",
    "connect",
    "from_iter",
    "literal",
    "lookup_operation",
    "mask_password",
    "open_broker",
    "registered_operations",
    "track",
]
