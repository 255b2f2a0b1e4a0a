"""Orchestrators by name: ``@durable.orchestrator`` registers an ``async def`` under a stable name.

A history names the orchestrator that wrote it, so a worker must find the same
function again after a restart: by its ``__qualname__`` unless ``name=`` says
otherwise (the rule operations follow). Its input and output types are read
from its annotations, so the codec can rebuild them on replay.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar, overload

import attrs

from wireframe.durable.errors import OrchestratorError
from wireframe.jobs.convert import check_wire_type

__all__ = [
    "OrchestratorSpec",
    "orchestrator",
    "orchestrator_specs",
    "spec_named",
]

F = TypeVar("F", bound=Callable[..., Coroutine[Any, Any, Any]])


@attrs.frozen
class OrchestratorSpec:
    """A registered orchestrator: its name, function and declared input and output types."""

    name: str
    fn: Callable[..., Coroutine[Any, Any, Any]]
    input_type: Any
    output_type: Any


_BY_NAME: dict[str, OrchestratorSpec] = {}


@overload
def orchestrator(fn: F, /) -> F: ...
@overload
def orchestrator(*, name: str | None = None) -> Callable[[F], F]: ...


def orchestrator(fn: F | None = None, /, *, name: str | None = None) -> F | Callable[[F], F]:
    """Register an ``async def orchestrator(ctx, input)`` (by ``__qualname__``, or ``name``)."""

    def register(fn: F) -> F:
        spec = _spec(fn, name or fn.__qualname__)
        known = _BY_NAME.get(spec.name)
        if known is not None and not _same_function(known.fn, fn):
            raise OrchestratorError(
                f"orchestrator name {spec.name!r} is taken by {_where(known.fn)}; "
                f"give {_where(fn)} another with @durable.orchestrator(name=...)"
            )
        _BY_NAME[spec.name] = spec
        fn.__durable_name__ = spec.name  # type: ignore[attr-defined]
        return fn

    return register if fn is None else register(fn)


def _spec(fn: Callable[..., Any], name: str) -> OrchestratorSpec:
    where = f"orchestrator {name!r} ({_where(fn)})"
    if not inspect.iscoroutinefunction(fn):
        raise OrchestratorError(f"{where} must be an async def taking (ctx, input)")
    params = list(inspect.signature(fn).parameters.values())
    if len(params) not in (1, 2):
        raise OrchestratorError(f"{where} must take (ctx) or (ctx, input), not {len(params)}")
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        hints = {}
    input_type = hints.get(params[1].name, Any) if len(params) == 2 else type(None)
    output_type = hints.get("return", Any)
    for what, typ in (("input", input_type), ("output", output_type)):
        try:
            check_wire_type(typ, f"the {what} type of {where}")
        except TypeError as exc:
            raise OrchestratorError(str(exc)) from None
        except NameError:
            pass  # a forward reference: checked when an instance first decodes it
    return OrchestratorSpec(name, fn, input_type, output_type)


def _same_function(a: Callable[..., Any], b: Callable[..., Any]) -> bool:
    """The same definition loaded twice (a module run as a script and imported) counts as one."""
    code_a, code_b = getattr(a, "__code__", None), getattr(b, "__code__", None)
    return a is b or (
        code_a is not None
        and code_b is not None
        and (code_a.co_filename, code_a.co_firstlineno)
        == (code_b.co_filename, code_b.co_firstlineno)
    )


def _where(fn: Callable[..., Any]) -> str:
    code = getattr(fn, "__code__", None)
    at = f" in {code.co_filename}:{code.co_firstlineno}" if code is not None else ""
    return f"{fn.__module__}.{fn.__qualname__}{at}"


def name_of(fn: Callable[..., Any]) -> str:
    """The registered name of orchestrator function ``fn``; raises if it is not registered."""
    name = getattr(fn, "__durable_name__", None)
    if name is None or name not in _BY_NAME:
        raise OrchestratorError(
            f"{getattr(fn, '__qualname__', fn)!r} is not an orchestrator: "
            "decorate it with @durable.orchestrator"
        )
    return str(name)


def spec_named(name: str) -> OrchestratorSpec:
    """The orchestrator registered as ``name``; the error names those that are."""
    spec = _BY_NAME.get(name)
    if spec is None:
        known = ", ".join(sorted(_BY_NAME)) or "none"
        raise OrchestratorError(
            f"no orchestrator named {name!r} is registered in this worker (it knows: {known}); "
            "import the module that defines it (wireframe worker --import MODULE)"
        )
    return spec


def orchestrator_specs() -> list[OrchestratorSpec]:
    """Every registered orchestrator, by name."""
    return [_BY_NAME[name] for name in sorted(_BY_NAME)]
