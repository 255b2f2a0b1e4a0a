"""Wiring that is wrong two ways (exit 2), and a layer whose wire() must never run under `check`.

``unwired`` gives its task only from ``wire()``, which records that it ran
(``WIRE_CALLS``) and, when the env var ``CLI_WIRE_MARKER`` names a file, creates
it, so a test in another process can tell.
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs

import wireframe as wf

WIRE_CALLS: list[str] = []


@attrs.frozen
class Database:
    url: str


@attrs.frozen
class Cache:
    size: int


@attrs.frozen
class NeedsDb:
    db: Database


@attrs.frozen
class ApiOut:
    cache: Cache


@attrs.frozen
class ApiLayer(wf.WiringLayer[NeedsDb, ApiOut]):
    """Takes a Database no layer gives."""

    name = "api"

    async def wire(self, input: NeedsDb) -> ApiOut:
        raise AssertionError("never wired: its input is missing")


@attrs.frozen
class CacheOut:
    cache: Cache


@attrs.frozen
class CacheLayer(wf.WiringLayer[None, CacheOut]):
    """Gives Cache, which ApiLayer gives too."""

    name = "cache"

    async def wire(self, input: None) -> CacheOut:
        return CacheOut(Cache(1))


@wf.task(kind=wf.TaskKind.TASK, id="serve")
async def serve(stop: wf.StopReceiver) -> None:
    """Would serve."""
    await stop.wait()


@attrs.frozen
class ServeOut:
    serve: wf.Task


@attrs.frozen
class TrapLayer(wf.WiringLayer[None, ServeOut]):
    """Its wire() must not run during `check` or `graph`."""

    name = "trap"

    async def wire(self, input: None) -> ServeOut:
        WIRE_CALLS.append(self.name)
        marker = os.environ.get("CLI_WIRE_MARKER")
        if marker:
            Path(marker).write_text("wire() ran")  # noqa: ASYNC240 (a test marker)
        raise RuntimeError("trap: wire() ran")


@attrs.frozen
class RaisingLayer(wf.WiringLayer[None, ServeOut]):
    """Its wire() raises: a wiring error found while running."""

    name = "flaky-db"

    async def wire(self, input: None) -> ServeOut:
        raise ConnectionError("database refused the connection")


broken = wf.ServiceBuilder().add_layer(ApiLayer()).add_layer(CacheLayer())
trap = wf.ServiceBuilder().add_layer(TrapLayer())
raising = wf.ServiceBuilder().add_layer(RaisingLayer())
