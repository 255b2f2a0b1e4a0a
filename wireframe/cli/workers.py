"""The service ``wireframe worker`` runs: worker loops, and the layers the imported modules declare.

An operation takes worker-side resources by type (a keyword-only parameter
of ``execute`` annotated with the resource class). In a service of your own,
``jobs.WorkerLayer(url, resources=(Database,))`` takes them from other layers.
For ``wireframe worker --import MODULE``, the module declares those layers::

    WIREFRAME_WORKER_LAYERS: list[wf.WiringLayer[Any, Any]] = [DatabaseLayer()]

Every layer listed there is added to the worker service (its tasks run and its
lifetime closes at shutdown, like any layer), and every resource class those
layers give is handed to the operations that ask for it. An operation asking
for a resource that no listed layer gives is named at start: its jobs would
fail on this worker.
"""

from __future__ import annotations

import gc
import sys
import typing
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import wireframe as wf
from wireframe.cli.target import TargetError
from wireframe.jobs.errors import OperationError
from wireframe.jobs.layers import WorkerLayer
from wireframe.jobs.operations import registered_operations, spec_of
from wireframe.jobs.threads import DEFAULT_THREADS

__all__ = [
    "WORKER_LAYERS",
    "declared_layers",
    "defines_orchestrators",
    "missing_resources",
    "tune_collector",
    "worker_builder",
]

#: The cyclic garbage collector's first threshold in a worker process (CPython's: 700).
GC_THRESHOLD = 10_000

#: The module attribute ``wireframe worker`` reads: a list of wiring layers.
WORKER_LAYERS = "WIREFRAME_WORKER_LAYERS"


def declared_layers(module: ModuleType) -> list[wf.WiringLayer[Any, Any]]:
    """The layers ``module`` lists in ``WIREFRAME_WORKER_LAYERS`` (none when it has none).

    Raises :class:`TargetError` naming the module and the item when the value is
    not a list (or tuple) of wiring layer instances.
    """
    value = getattr(module, WORKER_LAYERS, None)
    where = f"{module.__name__}.{WORKER_LAYERS}"
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise TargetError(
            f"{where} must be a list of wiring layers (instances), not a {type(value).__name__}"
        )
    for i, item in enumerate(value):
        if not isinstance(item, wf.WiringLayer):
            hint = ""
            if isinstance(item, type):
                hint = f" (a class: write {item.__name__}(), not {item.__name__})"
            raise TargetError(f"{where}[{i}] is a {type(item).__name__}, not a wiring layer{hint}")
    return list(value)


def _given_classes(plan: wf.WiringPlan) -> tuple[type, ...]:
    """The resource classes the plan's layers give (not the service's own, not ``Unique[...]``:
    an operation asks for a class, and a unique resource has one taker)."""
    return tuple(
        tp
        for tp in plan.providers
        if isinstance(tp, type) and not typing.get_args(tp) and tp is not wf.ServiceStatus
    )


def tune_collector() -> None:
    """Tune CPython's cyclic garbage collector for a worker process.

    Why: a busy worker allocates many short-lived containers (jobs, replies,
    history events) and keeps many long-lived ones (the orchestration worker's
    replay engines, a few KB per instance in flight). At CPython's default
    first threshold (700 allocations) the young passes ran so often that
    containers a turn was about to free by reference counting were promoted,
    and the full passes over the growing heap that this brings on took about
    a fifth of the CPU of ``bench/durable.py``'s worker. Young passes every
    :data:`GC_THRESHOLD` allocations cut that to a few percent; cycles are
    still collected, and the cyclic garbage held between passes stays small.
    (``gc.freeze()`` of the wired service measured no better, and would pin the
    objects of a test process that runs the command in-process.)
    """
    first, second, third = gc.get_threshold()
    gc.set_threshold(max(first, GC_THRESHOLD), second, third)


def worker_builder(
    broker: str,
    layers: Sequence[wf.WiringLayer[Any, Any]],
    *,
    queues: Sequence[str],
    concurrency: int,
    threads: int = DEFAULT_THREADS,
    graceful_shutdown_timeout: float,
    orchestrations: bool = False,
) -> tuple[wf.ServiceBuilder, tuple[type, ...]]:
    """The worker service: ``layers``, then one worker loop per queue taking what they give.

    With ``orchestrations`` (the imported modules define durable orchestrators,
    :func:`defines_orchestrators`), the service also runs an orchestration
    worker on the broker (activities go to the first queue).

    Returns the builder and the resource classes the workers hand to operations.
    Raises :class:`~wireframe.WiringError` when ``layers`` cannot be wired together.
    """
    resources = _given_classes(wf.plan_wiring(list(layers)))
    builder = wf.ServiceBuilder(graceful_shutdown_timeout=graceful_shutdown_timeout)
    for layer in layers:
        builder.add_layer(layer)
    for queue in queues:
        builder.add_layer(
            WorkerLayer(
                broker, concurrency=concurrency, queue=queue, resources=resources, threads=threads
            )
        )
    if orchestrations:
        from wireframe.durable.layers import OrchestrationWorkerLayer

        builder.add_layer(OrchestrationWorkerLayer(broker, queue=queues[0]))
    return builder, resources


def defines_orchestrators(modules: Sequence[ModuleType]) -> bool:
    """Whether any of ``modules`` defines a durable orchestrator (the worker then runs them)."""
    registry = sys.modules.get("wireframe.durable.registry")
    if registry is None:
        return False
    names = {m.__name__ for m in modules}
    return any(spec.fn.__module__ in names for spec in registry.orchestrator_specs())


def missing_resources(resources: Sequence[type]) -> list[str]:
    """One line per registered operation asking for a resource none of ``resources`` is."""
    lines = []
    for name, cls in sorted(registered_operations().items()):
        try:
            spec = spec_of(cls)
        except OperationError as exc:  # its jobs fail with this error; the others run
            lines.append(f"operation {name!r} cannot run on this worker: {exc}")
            continue
        for keyword, wanted in spec.resources:
            if not any(issubclass(have, wanted) for have in resources):
                lines.append(
                    f"operation {name!r} takes {keyword}: {wanted.__qualname__}, which no layer "
                    f"in an imported module's {WORKER_LAYERS} gives: its jobs fail on this worker"
                )
    return lines
