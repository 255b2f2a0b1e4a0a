"""The orchestration worker as a service part: a layer that gives its loop as a task.

``durable.OrchestrationWorkerLayer(url)`` opens its own broker connection for
its lifetime and gives its loop as a :class:`~wireframe.jobs.WorkerTask`; the activities its
orchestrators call run on the ordinary job workers (``jobs.WorkerLayer``), on
the same broker.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import attrs

import wireframe as wf
from wireframe.durable.worker import OrchestrationWorker
from wireframe.jobs.broker import mask_password, open_broker
from wireframe.jobs.layers import WorkerTask
from wireframe.jobs.runtime import DEFAULT_URL

__all__ = ["OrchestrationWorkerLayer", "OrchestrationWorkerOutput"]


@attrs.frozen
class OrchestrationWorkerOutput:
    """What :class:`OrchestrationWorkerLayer` gives."""

    orchestrations: WorkerTask


@attrs.frozen
class OrchestrationWorkerLayer(wf.WiringLayer[None, OrchestrationWorkerOutput]):
    """Gives the orchestration worker of the broker ``url`` (``concurrency`` turns at once).

    Activities go to ``queue`` unless an orchestrator's ``ctx.call(queue=...)``
    says otherwise.
    """

    url: str | None = attrs.field(default=None, repr=lambda u: repr(u and mask_password(u)))
    concurrency: int = 64
    queue: str = "default"
    lease: float | None = None  # default: the broker URL's lease
    name: str = "orchestrations"

    def __attrs_post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(
                f"OrchestrationWorkerLayer concurrency must be at least 1, not {self.concurrency}"
            )

    async def wire(self, input: Any) -> AsyncIterator[OrchestrationWorkerOutput]:
        """Open the broker, yield the worker task, close the broker at shutdown."""
        async with open_broker(self.url or DEFAULT_URL) as broker:
            worker = OrchestrationWorker(
                broker, concurrency=self.concurrency, queue=self.queue, lease=self.lease
            )
            yield OrchestrationWorkerOutput(WorkerTask(worker, self.name))
