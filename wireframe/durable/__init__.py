"""Durable orchestrations: workflows whose progress survives any process dying.

An *orchestrator* is an ``async def`` whose every side effect goes through its
:class:`Context`; its progress is an append-only history of events
(:mod:`wireframe.durable.history`), replayed through the function by the
engine (:mod:`wireframe.durable.replay`) to carry on where it stopped.
*Activities* are ordinary :class:`wireframe.jobs.Operation` classes run as
jobs.

This package holds the engine: the history, the context and its awaitables,
replay with non-determinism checks, and the orchestrator registry. The stores
on each broker, the orchestration worker and the client build on it.
"""

from wireframe.durable.context import Context
from wireframe.durable.errors import (
    ActivityFailed,
    ChildFailed,
    DurableError,
    EventTimeout,
    NonDeterminismError,
    OrchestratorError,
)
from wireframe.durable.registry import orchestrator

__all__ = [
    "ActivityFailed",
    "ChildFailed",
    "Context",
    "DurableError",
    "EventTimeout",
    "NonDeterminismError",
    "OrchestratorError",
    "orchestrator",
]
