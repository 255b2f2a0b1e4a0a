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
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

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


class PortRole(enum.Enum):
    """What a layer's field stands for."""

    RESOURCE = "resource"
    TASK = "task"
    TASKS = "tasks"  # a sequence of tasks
    HOOK = "hook"
    HOOKS = "hooks"  # a sequence of shutdown hooks


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


def _classify_output(name: str, tp: Any) -> Port | str:
    inner, optional, ok = _unwrap_optional(tp)
    if not ok:
        return f"output field {name!r} is a union of several types, which cannot name one resource"
    if inner is Any:
        return f"output field {name!r} is typed Any, which cannot name a resource"
    if is_task_type(inner):
        return Port(name, inner, PortRole.TASK, optional)
    if inner is ShutdownHook:
        return Port(name, inner, PortRole.HOOK, optional)
    if typing.get_origin(inner) in _SEQUENCE_ORIGINS:
        args = [a for a in typing.get_args(inner) if a is not Ellipsis]
        if len(args) == 1 and is_task_type(args[0]):
            return Port(name, args[0], PortRole.TASKS, optional)
        if len(args) == 1 and args[0] is ShutdownHook:
            return Port(name, args[0], PortRole.HOOKS, optional)
    return Port(name, inner, PortRole.RESOURCE, optional)


def _classify_input(name: str, tp: Any) -> Port | str:
    inner, optional, ok = _unwrap_optional(tp)
    if not ok:
        return f"input field {name!r} is a union of several types, which cannot name one resource"
    if inner is Any:
        return f"input field {name!r} is typed Any, which cannot name a resource"
    if is_task_type(inner) or inner is ShutdownHook:
        return f"input field {name!r} asks for a task or hook ({type_name(inner)}); inputs take resources"
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

    providers: dict[Any, str] = {ServiceStatus: BUILT_IN}
    duplicate = False
    for node in nodes:
        for port in node.outputs:
            if port.role is not PortRole.RESOURCE:
                continue
            first = providers.setdefault(port.type, node.name)
            if first == BUILT_IN:
                problems.append(
                    WiringProblem(
                        node.name,
                        f"gives resource {port.type_name}, which the service gives itself; "
                        "take it instead",
                        port.type_name,
                    )
                )
            elif first != node.name:
                duplicate = True
                problems.append(
                    WiringProblem(
                        node.name,
                        f"gives resource {port.type_name}, which layer {first!r} already gives "
                        "(ResourceAlreadyProvided); a resource type has one provider",
                        port.type_name,
                    )
                )

    by_name = {node.name: node for node in nodes}
    deps: dict[str, set[str]] = {}
    for node in nodes:
        deps[node.name] = set()
        for port in node.inputs:
            provider = providers.get(port.type)
            if provider == BUILT_IN:
                continue
            if provider is not None:
                deps[node.name].add(provider)
            elif not port.optional:
                problems.append(
                    WiringProblem(
                        node.name,
                        f"takes resource {port.type_name} (field {port.field!r}), which no layer gives; "
                        f"add a layer that gives it or make the field `{port.type_name} | None = None`",
                        port.type_name,
                    )
                )

    ordered: list[LayerNode] = []
    placed: set[str] = set()
    remaining = list(nodes)
    while remaining:
        ready = next((n for n in remaining if deps[n.name] <= placed), None)
        if ready is None:
            break
        ordered.append(ready)
        placed.add(ready.name)
        remaining.remove(ready)
    if remaining:
        problems.extend(_cycle_problems(remaining, deps, by_name))

    if problems:
        raise (ResourceAlreadyProvided if duplicate else WiringError)(problems)
    return WiringPlan(tuple(ordered), providers)


def _cycle_problems(
    remaining: list[LayerNode], deps: Mapping[str, set[str]], by_name: Mapping[str, LayerNode]
) -> list[WiringProblem]:
    """Name each cycle among the layers that could not be ordered (Tarjan's SCC)."""
    names = [n.name for n in remaining]
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(deps[v] & set(names)):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            components.append(component)

    for name in names:
        if name not in index:
            visit(name)

    problems = []
    for component in components:
        if len(component) == 1 and component[0] not in deps[component[0]]:
            continue  # only waits on a cycle; the cycle itself is reported
        members = sorted(component, key=lambda n: by_name[n].index)
        if len(members) == 1:  # a layer that takes what it gives itself
            node = by_name[members[0]]
            given = {p.type for p in node.outputs}
            for port in node.inputs:
                if port.type in given:
                    problems.append(
                        WiringProblem(
                            node.name,
                            f"takes resource {port.type_name} (field {port.field!r}), which it "
                            "gives itself; a layer cannot take its own output",
                            port.type_name,
                        )
                    )
            continue
        edges = []
        for name in members:
            for port in by_name[name].inputs:
                for other in members:
                    if any(p.type == port.type for p in by_name[other].outputs):
                        edges.append(f"{name!r} takes {port.type_name} from {other!r}")
        problems.append(
            WiringProblem(
                members[0],
                "is in a dependency cycle: " + "; ".join(edges),
                None,
            )
        )
    return problems
