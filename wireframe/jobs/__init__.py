"""The job-queue runtime: operations, directives, the runtime, the worker and their layers.

```python
from wireframe import jobs

async with jobs.connect("memory://?workers=3") as rt:
    xs = await jobs.from_iter(range(100)).map(AddOne()).collect().run(rt)
```

Brokers are found by URL scheme (``memory://``, ``sqlite:///path``,
``redis://host:port/db``); nothing here depends on a particular one.
"""

from __future__ import annotations

from wireframe.jobs.broker import (
    Broker,
    BrokerError,
    BrokerUnavailable,
    BrokerURL,
    BrokerURLError,
    ChannelLost,
    DeadLetter,
    Delivery,
    LockLost,
    Message,
    QueueStats,
    Reply,
    WorkerInfo,
    mask_password,
    open_broker,
    parse_broker_url,
)
from wireframe.jobs.cache import ResultCache
from wireframe.jobs.channel import ResultChannel
from wireframe.jobs.codec import JobResult, UnknownOperation
from wireframe.jobs.directives import (
    Collect,
    Fold,
    LiteralValue,
    Map,
    MapItem,
    MapStream,
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
from wireframe.jobs.layers import (
    BrokerReachable,
    JobRuntimeLayer,
    JobRuntimeOutput,
    WorkerLayer,
    WorkerOutput,
    WorkerTask,
)
from wireframe.jobs.operations import Monoid, Operation, lookup_operation, registered_operations
from wireframe.jobs.progress import Progress, ProgressListener, add_progress_listener, track
from wireframe.jobs.retry import RetryPolicy
from wireframe.jobs.runtime import (
    DEFAULT_URL,
    Run,
    Runtime,
    RuntimeStatistics,
    RuntimeStats,
    connect,
)
from wireframe.jobs.worker import Worker, WorkerStatistics

__all__ = [
    "DEFAULT_URL",
    "Broker",
    "BrokerError",
    "BrokerReachable",
    "BrokerURL",
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
    "JobFailed",
    "JobResult",
    "JobRuntimeLayer",
    "JobRuntimeOutput",
    "JobsError",
    "LiteralValue",
    "LockLost",
    "Map",
    "MapItem",
    "MapStream",
    "Message",
    "Monoid",
    "Operation",
    "OperationError",
    "Progress",
    "ProgressListener",
    "QueueStats",
    "RemoteError",
    "Reply",
    "ResultCache",
    "ResultChannel",
    "RetryPolicy",
    "Run",
    "Runtime",
    "RuntimeStatistics",
    "RuntimeStats",
    "Source",
    "Strategy",
    "Terminate",
    "Then",
    "Transient",
    "UnknownOperation",
    "Worker",
    "WorkerInfo",
    "WorkerLayer",
    "WorkerOutput",
    "WorkerStatistics",
    "WorkerTask",
    "add_progress_listener",
    "connect",
    "from_iter",
    "literal",
    "lookup_operation",
    "mask_password",
    "open_broker",
    "parse_broker_url",
    "registered_operations",
    "track",
]
