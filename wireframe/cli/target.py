"""Find the service a command line names: ``path/to/file.py`` or ``package.module``, then ``:attr``.

``:attr`` (dotted names allowed) may name a :class:`~wireframe.ServiceBuilder`,
a :class:`~wireframe.Service`, or a callable taking no arguments that returns
one. Without it, the module must define exactly one builder or service at
module level; none or several is a :class:`TargetError` that lists what it
found. A file is imported under its stem as module name (as ``python
file.py``'s neighbours would see it), with its folder first on ``sys.path``,
so ``wireframe run examples/x.py`` and ``wireframe worker --import
examples/x.py`` register the same operation names.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs

import wireframe as wf

__all__ = ["Target", "TargetError", "import_module", "load_target"]


class TargetError(Exception):
    """The TARGET (or an ``--import``) cannot be loaded; the message says what and where."""


@attrs.frozen
class Target:
    """What a TARGET named: its label, and a builder or an unbuilt service."""

    label: str
    builder: wf.ServiceBuilder | None = None
    service: wf.Service | None = None

    def plan(self) -> wf.WiringPlan:
        """The wiring plan without wiring anything; raises :class:`~wireframe.WiringError`."""
        if self.builder is not None:
            return self.builder.plan()
        assert self.service is not None
        return self.service.plan

    @property
    def graceful_shutdown_timeout(self) -> float:
        """The grace period the target itself asks for."""
        source = self.builder if self.builder is not None else self.service
        assert source is not None
        return source.graceful_shutdown_timeout

    def make_service(
        self,
        *,
        graceful_shutdown_timeout: float | None = None,
        handle_signals: bool = False,
        extra_layers: Sequence[wf.WiringLayer[Any, Any]] = (),
    ) -> wf.Service:
        """A fresh service to run, with ``extra_layers`` added (the CLI's ``--health-port``)
        unless the target has layers of their names already (the first wins, as in
        :meth:`~wireframe.ServiceBuilder.add_layer`).

        Raises :class:`~wireframe.WiringError` for bad wiring.
        """
        grace = (
            self.graceful_shutdown_timeout
            if graceful_shutdown_timeout is None
            else graceful_shutdown_timeout
        )
        if self.service is not None and self.service.phase != "new":
            raise TargetError(f"{self.label}: the service has already run; give a builder instead")
        plan = self.plan()
        names = {node.name for node in plan.layers}
        extra_layers = [layer for layer in extra_layers if layer.name not in names]  # first wins
        if extra_layers:
            added = sorted(plan.layers, key=lambda node: node.index)
            plan = wf.plan_wiring([*(node.layer for node in added), *extra_layers])
        if self.builder is not None or extra_layers:
            return wf.Service(plan, graceful_shutdown_timeout=grace, handle_signals=handle_signals)
        assert self.service is not None
        self.service.graceful_shutdown_timeout = grace
        self.service.handle_signals = handle_signals
        return self.service


def _split(spec: str) -> tuple[str, str | None]:
    """``'a/b.py:svc'`` -> ``('a/b.py', 'svc')``; a drive letter's colon is not an attr."""
    head, sep, tail = spec.rpartition(":")
    if sep and head and tail and all(part.isidentifier() for part in tail.split(".")):
        return head, tail
    return spec, None


def _is_path(text: str) -> bool:
    return text.endswith(".py") or os.sep in text or "/" in text


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise TargetError(f"no such file: {path}")
    path = path.resolve()
    name = path.stem if path.stem.isidentifier() else "wireframe_target"
    existing = sys.modules.get(name)
    if existing is not None:
        if Path(getattr(existing, "__file__", "") or "").resolve() == path:
            return existing
        name = f"wireframe_target_{abs(hash(str(path))):x}"
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise TargetError(f"cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # layers resolve their annotations through sys.modules
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def import_module(name: str) -> ModuleType:
    """Import ``package.module`` or the file ``path/to/file.py``; :class:`TargetError` if absent.

    Exceptions raised by the module's own code propagate unchanged (a
    :class:`~wireframe.WiringError` included), so the caller can show them.
    """
    if _is_path(name):
        return _import_file(Path(name))
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like ``python -m``: the current folder is importable
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            raise TargetError(
                f"no module named {name!r} (give a file path such as path/to/service.py, "
                "or a module importable from the current folder)"
            ) from None
        raise


def _describe(value: Any) -> str:
    return type(value).__name__


def _as_target(label: str, value: Any, *, call: bool = True) -> Target:
    if isinstance(value, wf.ServiceBuilder):
        return Target(label, builder=value)
    if isinstance(value, wf.Service):
        return Target(label, service=value)
    if call and callable(value) and not isinstance(value, type):
        try:
            result = value()
        except TypeError as exc:
            raise TargetError(
                f"{label}: calling it with no arguments failed ({exc}); "
                "name a ServiceBuilder, a Service, or a callable taking no arguments"
            ) from exc
        if isinstance(result, wf.ServiceBuilder | wf.Service):
            return _as_target(label, result, call=False)
        raise TargetError(
            f"{label}: calling it returned {_describe(result)}, not a ServiceBuilder or Service"
        )
    raise TargetError(
        f"{label} is {_describe(value)}; it must be a ServiceBuilder, a Service, "
        "or a callable returning one"
    )


def load_target(spec: str) -> Target:
    """Import TARGET and find its service (see the module docstring for the rules)."""
    where, attr = _split(spec)
    module = import_module(where)
    if attr is not None:
        value: Any = module
        for part in attr.split("."):
            try:
                value = getattr(value, part)
            except AttributeError:
                raise TargetError(f"{where} has no attribute {attr!r}") from None
        return _as_target(f"{where}:{attr}", value)
    found: dict[int, list[str]] = {}
    values: dict[int, Any] = {}
    for name, value in vars(module).items():
        if not name.startswith("_") and isinstance(value, wf.ServiceBuilder | wf.Service):
            found.setdefault(id(value), []).append(name)
            values[id(value)] = value
    if not found:
        raise TargetError(
            f"{where} defines no ServiceBuilder or Service at module level; "
            f"name one (or a function returning one) as {where}:NAME"
        )
    if len(found) > 1:
        listed = ", ".join(f"{names[0]} ({_describe(values[key])})" for key, names in found.items())
        raise TargetError(f"{where} defines several services: {listed}; choose one as {where}:NAME")
    ((key, names),) = found.items()
    return _as_target(f"{where}:{names[0]}", values[key], call=False)
