"""The wiring plan drawn three ways: a rich tree, Graphviz dot, and JSON — all without wiring.

Each layer shows what it takes (and from which layer), what it gives, and its
tasks grouped by kind. A task's id appears when its class declares it as a
class attribute; otherwise it is only known once ``wire()`` has run.
"""

from __future__ import annotations

from typing import Any

from rich.tree import Tree

import wireframe as wf
from wireframe.service.graph import type_name

__all__ = ["plan_dot", "plan_json", "plan_tree"]


def _kind(port: wf.Port) -> wf.TaskKind | None:
    kind = getattr(port.type, "kind", None)
    return kind if isinstance(kind, wf.TaskKind) else None


def _static_id(port: wf.Port) -> str | None:
    value = getattr(port.type, "id", None)
    return value if isinstance(value, str) else None


def _task_ports(node: wf.LayerNode) -> list[wf.Port]:
    return [p for p in node.outputs if p.role in (wf.PortRole.TASK, wf.PortRole.TASKS)]


def _layer_type(node: wf.LayerNode) -> str:
    return type(node.layer).__qualname__


def plan_json(plan: wf.WiringPlan) -> dict[str, Any]:
    """The plan as JSON-ready data: layers in wiring order and each resource's provider."""
    layers = []
    for order, node in enumerate(plan.layers):
        layers.append(
            {
                "name": node.name,
                "type": _layer_type(node),
                "wiring_order": order,
                "added": node.index,
                "takes": [
                    {
                        "field": p.field,
                        "resource": p.type_name,
                        "optional": p.optional,
                        "from": plan.providers.get(p.type),
                    }
                    for p in node.inputs
                ],
                "gives": [
                    {"field": p.field, "resource": p.type_name, "optional": p.optional}
                    for p in node.outputs
                    if p.role is wf.PortRole.RESOURCE
                ],
                "tasks": [
                    {
                        "field": p.field,
                        "type": p.type_name,
                        "kind": k.value if (k := _kind(p)) else None,
                        "id": _static_id(p),
                        "many": p.role is wf.PortRole.TASKS,
                        "optional": p.optional,
                    }
                    for p in _task_ports(node)
                ],
                "hooks": [
                    {"field": p.field, "many": p.role is wf.PortRole.HOOKS}
                    for p in node.outputs
                    if p.role in (wf.PortRole.HOOK, wf.PortRole.HOOKS)
                ],
                "health_checks": [
                    {"field": p.field, "many": p.role is wf.PortRole.CHECKS}
                    for p in node.outputs
                    if p.role in (wf.PortRole.CHECK, wf.PortRole.CHECKS)
                ],
            }
        )
    return {
        "layers": layers,
        "resources": {type_name(tp): name for tp, name in plan.providers.items()},
    }


def plan_tree(plan: wf.WiringPlan, *, title: str = "service") -> Tree:
    """Layers in wiring order; under each: takes, gives, tasks by kind, hooks."""
    count = len(plan.layers)
    root = Tree(f"[bold]{title}[/] — {count} layer{'s' if count != 1 else ''}, in wiring order")
    for node in plan.layers:
        branch = root.add(f"[bold cyan]{node.name}[/] [dim]({_layer_type(node)})[/]")
        if node.inputs:
            takes = branch.add("takes")
            for p in node.inputs:
                provider = plan.providers.get(p.type)
                source = f"from [cyan]{provider}[/]" if provider else "[yellow]not given[/]"
                optional = " [dim](optional)[/]" if p.optional else ""
                takes.add(f"{p.type_name} [dim]{p.field}[/]{optional} ← {source}")
        resources = [p for p in node.outputs if p.role is wf.PortRole.RESOURCE]
        if resources:
            gives = branch.add("gives")
            for p in resources:
                gives.add(f"{p.type_name} [dim]{p.field}[/]")
        by_kind: dict[str, list[wf.Port]] = {}
        for p in _task_ports(node):
            kind = _kind(p)
            by_kind.setdefault(kind.value if kind else "task", []).append(p)
        if by_kind:
            tasks = branch.add("tasks")
            for kind_name, ports in by_kind.items():
                group = tasks.add(f"[magenta]{kind_name}[/]")
                for p in ports:
                    ident = _static_id(p)
                    many = " [dim](several)[/]" if p.role is wf.PortRole.TASKS else ""
                    label = f"[green]{ident}[/] " if ident else ""
                    group.add(f"{label}{p.type_name} [dim]{p.field}[/]{many}")
        hooks = [p for p in node.outputs if p.role in (wf.PortRole.HOOK, wf.PortRole.HOOKS)]
        if hooks:
            hook_branch = branch.add("shutdown hooks")
            for p in hooks:
                hook_branch.add(f"[dim]{p.field}[/]")
        checks = [p for p in node.outputs if p.role in (wf.PortRole.CHECK, wf.PortRole.CHECKS)]
        if checks:
            check_branch = branch.add("health checks")
            for p in checks:
                check_branch.add(f"[dim]{p.field}[/]")
    return root


def _quote(text: str) -> str:
    return '"' + _escape(text) + '"'


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def _label(*lines: str) -> str:
    """A dot label of several lines (dot's own ``\\n`` escape between them)."""
    return '"' + "\\n".join(_escape(line) for line in lines) + '"'


def plan_dot(plan: wf.WiringPlan, *, title: str = "service") -> str:
    """A Graphviz digraph: layers (boxes) -> resources (ellipses) -> the layers taking them;
    layers -> their tasks (one shape per kind)."""
    shapes = {
        wf.TaskKind.TASK: "component",
        wf.TaskKind.ONESHOT: "cds",
        wf.TaskKind.PRECONDITION: "diamond",
        wf.TaskKind.UNCONSTRAINED: "doubleoctagon",
        wf.TaskKind.UNCONSTRAINED_ONESHOT: "octagon",
    }
    lines = [
        f"digraph {_quote(title)} {{",
        "  rankdir=LR;",
        '  node [fontname="Helvetica"];',
    ]
    resource_names = {
        p.type_name
        for n in plan.layers
        for p in (*n.inputs, *n.outputs)
        if p.role is wf.PortRole.RESOURCE
    }
    for name in sorted(resource_names):
        lines.append(f"  {_quote('resource:' + name)} [label={_quote(name)}, shape=ellipse];")
    for node in plan.layers:
        layer_id = _quote("layer:" + node.name)
        label = _label(node.name, f"({_layer_type(node)})")
        lines.append(f"  {layer_id} [label={label}, shape=box, style=bold];")
        for p in node.outputs:
            if p.role is wf.PortRole.RESOURCE:
                lines.append(f"  {layer_id} -> {_quote('resource:' + p.type_name)};")
        for p in node.inputs:
            style = ", style=dashed" if p.optional else ""
            lines.append(
                f"  {_quote('resource:' + p.type_name)} -> {layer_id} [label={_quote(p.field)}{style}];"
            )
        for p in _task_ports(node):
            kind = _kind(p)
            task_id = _quote(f"task:{node.name}.{p.field}")
            ident = _static_id(p) or p.field
            kind_name = kind.value if kind else "task"
            shape = shapes.get(kind, "box") if kind else "box"
            lines.append(f"  {task_id} [label={_label(ident, kind_name)}, shape={shape}];")
            lines.append(f"  {layer_id} -> {task_id} [style=dotted];")
    lines.append("}")
    return "\n".join(lines) + "\n"
