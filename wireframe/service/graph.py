"""The wiring graph, read off the layers' declared types before anything runs.

``plan_wiring`` turns layers into a :class:`WiringPlan` — every layer with the
resources it takes and gives and the tasks it gives, in the order they must be
wired — or raises :class:`WiringError` listing *every* problem of *every*
layer: a missing resource, a resource given twice, a cycle, a field whose type
cannot name a resource. The CLI's ``check`` and ``graph`` commands are this
module, printed.
"""

from __future__ import annotations

import enum
import graphlib
import heapq
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from wireframe.service.health import HealthCheck
from wireframe.service.layers import ShutdownHook, WiringLayer
from wireframe.service.report import ErrorInfo
from wireframe.service.status import BUILT_IN, ServiceStatus
from wireframe.service.tasks import is_task_type

__all__ = [
    "LayerNode",
    "Port",
    "PortRole",
    "ResourceAlreadyProvided",
    "WiringError",
    "WiringPlan",
    "WiringProblem",
    "plan_wiring",
    "type_name",
]

_SEQUENCE_ORIGINS = (list, tuple, Sequence, typing.Sequence)
#: The resources the service gives itself, to every layer that takes them.
_SERVICE_GIVES: tuple[type, ...] = (ServiceStatus,)


class PortRole(enum.Enum):
    """What a layer's field stands for."""

    RESOURCE = "resource"
    TASK = "task"
    TASKS = "tasks"  # a sequence of tasks
    HOOK = "hook"
    HOOKS = "hooks"  # a sequence of shutdown hooks
    CHECK = "check"  # a health check
    CHECKS = "checks"  # a sequence of health checks


@attrs.frozen
class Port:
    """One field of a layer's Input or Output, classified."""

    field: str
    type: Any  # the resource's identity: a class, or an alias such as Unique[Conn]
    role: PortRole
    optional: bool = False

    @property
    def type_name(self) -> str:
        """A readable name for the type."""
        return type_name(self.type)


@attrs.frozen
class LayerNode:
    """A layer in the plan, with what it takes (inputs) and gives (outputs)."""

    name: str
    layer: WiringLayer[Any, Any]
    index: int  # position in add order
    input_type: type | None
    output_type: type | None
    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]


@attrs.frozen
class WiringProblem:
    """One thing wrong with the wiring, naming the layer and, where it applies, the resource."""

    layer: str
    message: str
    resource: str | None = None
    error: ErrorInfo | None = None  # the exception, when a wire() raised

    def __str__(self) -> str:
        return f"layer {self.layer!r}: {self.message}"


class WiringError(Exception):
    """The layers cannot be wired; ``problems`` lists every reason, each naming its layer."""

    def __init__(self, problems: Sequence[WiringProblem]) -> None:
        self.problems = tuple(problems)
        count = len(self.problems)
        super().__init__(
            f"{count} wiring problem{'s' if count != 1 else ''}:\n  "
            + "\n  ".join(str(p) for p in self.problems)
        )


class ResourceAlreadyProvided(WiringError):
    """Two layers give the same resource type (among possibly other problems)."""


@attrs.frozen
class WiringPlan:
    """Layers in wiring order, and which layer provides each resource."""

    layers: tuple[LayerNode, ...]
    providers: Mapping[Any, str]


def type_name(tp: Any) -> str:
    """``Database`` for a class, ``Unique[Conn]`` for an alias: short and readable."""
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__qualname__
    origin = typing.get_origin(tp)
    if origin is not None:
        args = ", ".join(type_name(a) for a in typing.get_args(tp))
        return f"{type_name(origin)}[{args}]"
    return str(tp).replace("typing.", "")


def _unwrap_optional(tp: Any) -> tuple[Any, bool, bool]:
    """``X | None`` -> (X, optional=True, ok); a union of several types -> ok=False."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        if len(args) != 1:
            return tp, optional, False
        return args[0], optional, True
    return tp, False, True


def _field_types(
    cls: type, layer: str, side: str, problems: list[WiringProblem]
) -> list[tuple[str, Any]]:
    if not attrs.has(cls):
        problems.append(
            WiringProblem(layer, f"its {side} type {cls.__qualname__} is not an attrs class")
        )
        return []
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation names something not importable: fall back per field
        hints = {}
    fields = []
    for f in attrs.fields(cls):
        tp = hints.get(f.name, f.type)
        if isinstance(tp, str) or tp is None:
            problems.append(
                WiringProblem(
                    layer,
                    f"cannot resolve the type {tp!r} of {side} field {cls.__qualname__}.{f.name}; "
                    "define the type at module level so it can be imported",
                )
            )
            continue
        fields.append((f.name, tp))
    return fields


def _single_type(side: str, name: str, tp: Any) -> tuple[Any, bool] | str:
    """``(type, optional)`` of a field that can name one resource, or why it cannot."""
    inner, optional, ok = _unwrap_optional(tp)
    if not ok:
        return f"{side} field {name!r} is a union of several types, which cannot name one resource"
    if inner is Any:
        return f"{side} field {name!r} is typed Any, which cannot name a resource"
    return inner, optional


def _classify_output(name: str, tp: Any) -> Port | str:
    single = _single_type("output", name, tp)
    if isinstance(single, str):
        return single
    inner, optional = single
    if is_task_type(inner):
        return Port(name, inner, PortRole.TASK, optional)
    if inner is ShutdownHook:
        return Port(name, inner, PortRole.HOOK, optional)
    if inner is HealthCheck:
        return Port(name, inner, PortRole.CHECK, optional)
    if typing.get_origin(inner) in _SEQUENCE_ORIGINS:
        args = [a for a in typing.get_args(inner) if a is not Ellipsis]
        if len(args) == 1 and is_task_type(args[0]):
            return Port(name, args[0], PortRole.TASKS, optional)
        if len(args) == 1 and args[0] is ShutdownHook:
            return Port(name, args[0], PortRole.HOOKS, optional)
        if len(args) == 1 and args[0] is HealthCheck:
            return Port(name, args[0], PortRole.CHECKS, optional)
    return Port(name, inner, PortRole.RESOURCE, optional)


def _classify_input(name: str, tp: Any) -> Port | str:
    single = _single_type("input", name, tp)
    if isinstance(single, str):
        return single
    inner, optional = single
    if is_task_type(inner) or inner is ShutdownHook or inner is HealthCheck:
        return (
            f"input field {name!r} asks for a task, hook or health check ({type_name(inner)}); "
            "inputs take resources"
        )
    return Port(name, inner, PortRole.RESOURCE, optional)


def _node(layer: WiringLayer[Any, Any], index: int, problems: list[WiringProblem]) -> LayerNode:
    name = str(getattr(layer, "name", type(layer).__name__))
    try:
        in_type, out_type = layer.input_type(), layer.output_type()
    except Exception as exc:
        problems.append(WiringProblem(name, str(exc)))
        return LayerNode(name, layer, index, None, None, (), ())
    ports: dict[str, list[Port]] = {"input": [], "output": []}
    for side, cls, classify in (
        ("input", in_type, _classify_input),
        ("output", out_type, _classify_output),
    ):
        if cls is None:
            continue
        for field, tp in _field_types(cls, name, side, problems):
            port = classify(field, tp)
            if isinstance(port, str):
                problems.append(WiringProblem(name, port))
            else:
                ports[side].append(port)
    return LayerNode(
        name, layer, index, in_type, out_type, tuple(ports["input"]), tuple(ports["output"])
    )


def plan_wiring(layers: Sequence[WiringLayer[Any, Any]]) -> WiringPlan:
    """Order ``layers`` for wiring, or raise :class:`WiringError` with every problem.

    Layers are wired after the layers that give what they take; among layers
    free to go, the one added first goes first.
    """
    problems: list[WiringProblem] = []
    nodes = [_node(layer, i, problems) for i, layer in enumerate(layers)]
    given, duplicate = _providers(nodes, problems)
    deps = _dependencies(nodes, given, problems)
    ordered, stuck = _wiring_order(nodes, deps)
    problems.extend(_cycle_problems(stuck, deps))
    if problems:
        raise (ResourceAlreadyProvided if duplicate else WiringError)(problems)
    providers: dict[Any, str] = dict.fromkeys(_SERVICE_GIVES, BUILT_IN)
    providers.update((tp, node.name) for tp, node in given.items())
    return WiringPlan(tuple(ordered), providers)


def _providers(
    nodes: Sequence[LayerNode], problems: list[WiringProblem]
) -> tuple[dict[Any, LayerNode], bool]:
    """The layer that gives each resource (the first that does), and whether two gave one.

    A second provider of a resource, or a layer giving what the service gives
    itself, is a problem.
    """
    given: dict[Any, LayerNode] = {}
    duplicate = False
    for node in nodes:
        for port in node.outputs:
            if port.role is not PortRole.RESOURCE:
                continue
            if port.type in _SERVICE_GIVES:
                message = "which the service gives itself; take it instead"
            else:
                first = given.setdefault(port.type, node)
                if first.name == node.name:
                    continue
                duplicate = True
                message = (
                    f"which layer {first.name!r} already gives (ResourceAlreadyProvided); "
                    "a resource type has one provider"
                )
            problems.append(
                WiringProblem(
                    node.name, f"gives resource {port.type_name}, {message}", port.type_name
                )
            )
    return given, duplicate


def _dependencies(
    nodes: Sequence[LayerNode], given: Mapping[Any, LayerNode], problems: list[WiringProblem]
) -> dict[int, set[int]]:
    """Which layers (by index) each layer waits on; a problem for each resource no one gives."""
    deps: dict[int, set[int]] = {}
    for node in nodes:
        deps[node.index] = set()
        for port in node.inputs:
            provider = given.get(port.type)
            if provider is not None:
                deps[node.index].add(provider.index)
            elif port.type not in _SERVICE_GIVES and not port.optional:
                problems.append(
                    WiringProblem(
                        node.name,
                        f"takes resource {port.type_name} (field {port.field!r}), which no layer gives; "
                        f"add a layer that gives it or make the field `{port.type_name} | None = None`",
                        port.type_name,
                    )
                )
    return deps


def _wiring_order(
    nodes: Sequence[LayerNode], deps: Mapping[int, set[int]]
) -> tuple[list[LayerNode], list[LayerNode]]:
    """The layers in wiring order, and those left over because they wait on a cycle.

    Among the layers whose providers are all wired, the first added goes first.
    """
    sorter = graphlib.TopologicalSorter(deps)
    try:
        sorter.prepare()
    except graphlib.CycleError:
        pass  # the sorter still gives every layer that does not wait on the cycle
    ready = list(sorter.get_ready())
    heapq.heapify(ready)
    ordered: list[LayerNode] = []
    while ready:
        index = heapq.heappop(ready)
        ordered.append(nodes[index])
        sorter.done(index)
        for later in sorter.get_ready():
            heapq.heappush(ready, later)
    placed = {node.index for node in ordered}
    return ordered, [node for node in nodes if node.index not in placed]


def _cycle_problems(
    stuck: Sequence[LayerNode], deps: Mapping[int, set[int]]
) -> list[WiringProblem]:
    """A problem naming each cycle among the layers that could not be ordered.

    A cycle of one layer is a layer that takes what it gives itself.
    """
    problems: list[WiringProblem] = []
    for group in _cycles(stuck, deps):
        if len(group) > 1:
            problems.append(WiringProblem(group[0].name, _cycle_message(group)))
            continue
        node = group[0]
        given = {p.type for p in node.outputs}
        problems.extend(
            WiringProblem(
                node.name,
                f"takes resource {port.type_name} (field {port.field!r}), which it "
                "gives itself; a layer cannot take its own output",
                port.type_name,
            )
            for port in node.inputs
            if port.type in given
        )
    return problems


def _cycles(stuck: Sequence[LayerNode], deps: Mapping[int, set[int]]) -> list[list[LayerNode]]:
    """The groups of layers that wait on each other (each holds a cycle), in add order.

    ``graphlib`` finds that there is a cycle but names only one; a group here
    is every layer on any cycle through its members, so that each cycle is
    reported once, whole. A layer that only waits on a cycle is in no group:
    the cycle is what to report.
    """
    within = {node.index for node in stuck}
    reach = {node.index: _waits_on(node.index, deps, within) for node in stuck}
    groups: list[list[LayerNode]] = []
    grouped: set[int] = set()
    for node in stuck:
        i = node.index
        if i in grouped or i not in reach[i]:
            continue
        group = [other for other in stuck if other.index in reach[i] and i in reach[other.index]]
        grouped.update(other.index for other in group)
        groups.append(group)
    return groups


def _waits_on(start: int, deps: Mapping[int, set[int]], within: set[int]) -> set[int]:
    """The layers (of ``within``) that layer ``start`` waits on, directly or through others."""
    found: set[int] = set()
    todo = [start]
    while todo:
        for dep in deps[todo.pop()] & within:
            if dep not in found:
                found.add(dep)
                todo.append(dep)
    return found


def _cycle_message(group: Sequence[LayerNode]) -> str:
    """``is in a dependency cycle:`` and every take between the group's layers."""
    edges = [
        f"{node.name!r} takes {port.type_name} from {other.name!r}"
        for node in group
        for port in node.inputs
        for other in group
        if any(p.type == port.type for p in other.outputs)
    ]
    return "is in a dependency cycle: " + "; ".join(edges)
