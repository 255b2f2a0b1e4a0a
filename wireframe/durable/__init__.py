"""Durable orchestrations: workflows whose progress survives any process dying.

An *orchestrator* is an ``async def`` whose every side effect goes through its
:class:`Context`; its progress is an append-only history of events
(:mod:`wireframe.durable.history`), replayed through the function by the
engine (:mod:`wireframe.durable.replay`) to carry on where it stopped.
*Activities* are ordinary :class:`wireframe.jobs.Operation` classes run as
jobs.

The engine (history, context, replay with non-determinism checks, the
registry), the store role a broker implements (:mod:`~wireframe.durable.store`;
the memory, SQLite and Redis brokers keep one), the orchestration worker and the
client.
"""

from wireframe.durable.client import Client, connect
from wireframe.durable.context import Context
from wireframe.durable.errors import (
    ActivityFailed,
    ChildFailed,
    DurableError,
    EventTimeout,
    NonDeterminismError,
    OrchestratorError,
)
from wireframe.durable.layers import OrchestrationWorkerLayer
from wireframe.durable.registry import orchestrator
from wireframe.durable.store import Instance, InstanceExists, Status, UnknownInstance
from wireframe.durable.worker import OrchestrationWorker

__all__ = [
    "ActivityFailed",
    "ChildFailed",
    "Client",
    "Context",
    "DurableError",
    "EventTimeout",
    "Instance",
    "InstanceExists",
    "NonDeterminismError",
    "OrchestrationWorker",
    "OrchestrationWorkerLayer",
    "OrchestratorError",
    "Status",
    "UnknownInstance",
    "connect",
    "orchestrator",
]
