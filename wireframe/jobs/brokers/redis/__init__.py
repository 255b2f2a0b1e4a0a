"""The Redis broker, ``redis://host:port/db``: the distributed engine, on Redis Streams.

A package, one module per idea; :mod:`.broker` holds the broker (see its doc).
``open_broker`` finds it by its scheme as ``wireframe.jobs.brokers.redis``.
"""

from __future__ import annotations

from wireframe.jobs.brokers.redis.broker import OPTIONS, RedisBroker, open
from wireframe.jobs.brokers.redis.broker import _tls_context as _tls_context

__all__ = ["OPTIONS", "RedisBroker", "open"]
