"""Wiring that is wrong two ways (exit 2), and a layer whose wire() must never run under `check`.

``broken`` is built from the service tests' shared layers (``tests/service/layerkit.py``).

``trap`` gives its task only from ``wire()``, which records that it ran
(``WIRE_CALLS``) and, when the env var ``CLI_WIRE_MARKER`` names a file, creates
it, so a test in another process can tell.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import attrs

import wireframe as wf

# The layers the service tests share: the CLI imports this file with only its own
# folder on the path (in another process too), so it puts theirs there itself.
_LAYERKIT = str(Path(__file__).resolve().parents[2] / "service")
if _LAYERKIT not in sys.path:
    sys.path.append(_LAYERKIT)

from layerkit import Cache, CacheLayer, CacheOut  # noqa: E402

WIRE_CALLS: list[str] = []


@attrs.frozen
class SpareCacheLayer(wf.WiringLayer[None, CacheOut]):
    """Gives Cache, which the layer named 'api' gives too."""

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


# 'api' takes a Database no layer gives (and gives Cache); 'cache' gives Cache again.
broken = wf.ServiceBuilder().add_layer(CacheLayer(name="api")).add_layer(SpareCacheLayer())
trap = wf.ServiceBuilder().add_layer(TrapLayer())
raising = wf.ServiceBuilder().add_layer(RaisingLayer())
