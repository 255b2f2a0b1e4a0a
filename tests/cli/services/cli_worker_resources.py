"""Operations that take worker-side resources, and the layer giving them, for ``wireframe worker``.

``WIREFRAME_WORKER_LAYERS`` lists :class:`GreetingLayer`: ``wireframe worker
--import`` this file wires it into the worker service, and :class:`Greet` gets
its ``Greeting``. :class:`Audit` takes a resource no layer gives: the worker
warns about it at start.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import attrs

import wireframe as wf
from wireframe import jobs


@attrs.frozen
class Greeting:
    """A worker-side resource."""

    text: str


@attrs.frozen
class AuditLog:
    """A resource no layer here gives."""


@attrs.frozen
class GreetingOut:
    greeting: Greeting


@attrs.frozen
class GreetingLayer(wf.WiringLayer[None, GreetingOut]):
    """Gives a Greeting (text from $GREETING); says when its lifetime closes."""

    name = "greeting"

    async def wire(self, input: None) -> AsyncIterator[GreetingOut]:
        yield GreetingOut(Greeting(os.environ.get("GREETING", "hello")))
        print("greeting layer closed", flush=True)


@attrs.frozen
class Greet(jobs.Operation[str, str], name="tests.cli.greet"):
    """Greets ``who`` with the worker's Greeting."""

    async def execute(self, who: str, *, greeting: Greeting) -> str:
        return f"{greeting.text}, {who}"


@attrs.frozen
class Audit(jobs.Operation[str, None], name="tests.cli.audit"):
    """Takes an AuditLog, which no worker layer here gives."""

    async def execute(self, entry: str, *, log: AuditLog) -> None:
        return None


WIREFRAME_WORKER_LAYERS: list[wf.WiringLayer[Any, Any]] = [GreetingLayer()]
