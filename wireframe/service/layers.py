"""Wiring layers: typed units that take resources and give resources, tasks and hooks.

A layer's Input and Output are attrs classes. Their field *types* are the
contract: an input field of type ``Database`` takes the ``Database`` resource,
``Cache | None`` takes it if someone gives it; an output field whose type is a
task class gives a task, one typed ``list[X]`` / ``tuple[X, ...]`` /
``Sequence[X]`` of a task class gives several, one typed :class:`ShutdownHook`
gives a hook, and any other field gives a resource. Because the types are
declared, the wiring graph is known before a single ``wire()`` runs.
"""

from __future__ import annotations

import sys
import typing
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Generic, TypeVar

import attrs

__all__ = ["ShutdownHook", "WiringLayer"]

I = TypeVar("I")  # noqa: E741
O = TypeVar("O")  # noqa: E741


@attrs.frozen
class ShutdownHook:
    """An async function to run once all tasks have ended, under its own timeout.

    Give one as a field of a layer's output. Hooks run in registration order
    (wiring order, then field order), before layer lifetimes close, so a hook
    may still use the resources of the service.
    """

    name: str
    fn: Callable[[], Awaitable[None]]
    timeout: float = 30.0


class WiringLayer(Generic[I, O]):
    """Base class of a wiring layer: subclass ``WiringLayer[Input, Output]``.

    Give ``name`` (a class attribute; defaults to the class name) and
    ``async def wire(self, input: Input) -> Output``. ``wire`` may instead be an
    async generator that yields its output once: the code after ``yield`` runs
    at shutdown, after every task has ended, in reverse wiring order — that is
    how a layer owns a resource's lifetime.

    Use ``None`` for a layer that takes (or gives) nothing. A layer whose
    inputs are only known at run time may override :meth:`input_type` /
    :meth:`output_type`.
    """

    name: str

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__ and not any("name" in b.__dict__ for b in cls.__mro__[1:-1]):
            cls.name = cls.__name__

    def wire(self, input: I) -> Awaitable[O] | AsyncIterator[O]:
        """Build this layer's output from its input (see the class docstring)."""
        raise NotImplementedError(f"layer {type(self).__name__} must define wire()")

    def input_type(self) -> type | None:
        """The Input class (``None``: the layer takes nothing)."""
        return _generic_args(type(self))[0]

    def output_type(self) -> type | None:
        """The Output class (``None``: the layer gives nothing)."""
        return _generic_args(type(self))[1]


def _generic_args(cls: type) -> tuple[type | None, type | None]:
    """Read ``I`` and ``O`` off ``class L(WiringLayer[I, O])`` anywhere in the MRO."""
    for klass in cls.__mro__:
        for base in klass.__dict__.get("__orig_bases__", ()):
            origin = typing.get_origin(base)
            if isinstance(origin, type) and issubclass(origin, WiringLayer):
                args = typing.get_args(base)
                if len(args) == 2 and not any(isinstance(a, TypeVar) for a in args):
                    module = sys.modules.get(klass.__module__)
                    ns = vars(module) if module else {}
                    return _as_type(args[0], ns), _as_type(args[1], ns)
    raise TypeError(
        f"layer {cls.__qualname__} does not say what it takes and gives: "
        "derive from WiringLayer[Input, Output] (use None for nothing), "
        "or override input_type()/output_type()"
    )


def _as_type(arg: object, ns: dict[str, Any]) -> type | None:
    if isinstance(arg, typing.ForwardRef):
        arg = eval(arg.__forward_arg__, ns)
    if arg is None or arg is type(None):
        return None
    if not isinstance(arg, type):
        raise TypeError(f"{arg!r} is not a class; a layer's Input and Output must be attrs classes")
    return arg
