"""Operations and monoids: the code a job names, registered by a stable name.

An operation is an attrs class whose fields are its parameters (they travel with
every job) and whose ``execute(self, input)`` computes the output. Defining the
class registers it under a stable name (``module.QualName`` unless the class
says ``name="..."``); the worker resolves names **only** through this registry,
so a message can never name arbitrary code. A second class with a name already
taken raises :class:`~wireframe.jobs.errors.OperationError` at import.

Where ``execute`` runs is the class's choice: ``async def execute`` runs on
trio; a plain ``def execute`` runs in a worker thread by default
(``executor="thread"``; it may call ``trio.from_thread.check_cancelled()`` to
notice an abort), in a trio-parallel process when the class says
``cpu_bound=True`` (killed on abort), or on the trio thread itself with
``executor="inline"`` (for cheap pure functions such as most monoids).

Worker-side resources are taken by type: a keyword-only parameter of
``execute`` annotated with a class, e.g.
``def execute(self, x: int, *, db: Database) -> int``, is filled from the
resources the worker was given.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, Generic, Literal, TypeVar

import attrs

from wireframe.jobs.errors import OperationError

__all__ = ["Monoid", "OpSpec", "Operation", "lookup_operation", "registered_operations", "spec_of"]

I = TypeVar("I")  # noqa: E741
O = TypeVar("O")  # noqa: E741
T = TypeVar("T")

Executor = Literal["thread", "process", "inline", "async"]

_REGISTRY: dict[str, type[Operation[Any, Any]]] = {}


class Operation(Generic[I, O]):
    """Base class of every operation: subclass as ``Operation[In, Out]`` and define ``execute``.

    Class keywords: ``name=`` (the stable registry name), ``cpu_bound=True``
    (run a sync ``execute`` in a process pool), ``executor="inline"`` (run a
    sync ``execute`` on the trio thread), ``abstract=True`` (an intermediate
    base class that is not registered).

    ``cache_key(input)`` may return a string: the runtime then answers equal
    (operation, parameters, key) jobs from its result cache without running them.
    """

    op_name: ClassVar[str]
    op_executor: ClassVar[Executor] = "thread"

    def __init_subclass__(
        cls,
        *,
        name: str | None = None,
        cpu_bound: bool = False,
        executor: Executor | None = None,
        abstract: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        if executor is not None:
            cls.op_executor = executor
        elif cpu_bound:
            cls.op_executor = "process"
        if abstract:
            return
        # attrs' slotted classes are rebuilt: the rebuilt class inherits the
        # explicit name through the registry entry of its predecessor.
        qual = f"{cls.__module__}.{cls.__qualname__}"
        if name is None:
            inherited = cls.__dict__.get("op_name")
            name = inherited if isinstance(inherited, str) else qual
        if not name:
            raise OperationError(f"operation {qual}: name must be a non-empty string")
        existing = _REGISTRY.get(name)
        if existing is not None and f"{existing.__module__}.{existing.__qualname__}" != qual:
            raise OperationError(
                f"operation name {name!r} of {qual} is already taken by "
                f"{existing.__module__}.{existing.__qualname__}; pass name='...' to choose another"
            )
        cls.op_name = name
        _REGISTRY[name] = cls
        _SPECS.pop(name, None)

    def cache_key(self, input: I) -> str | None:
        """A key under which this job's result may be cached, or ``None`` (never cached)."""
        return None


class Monoid(Operation[tuple[T, T], T], Generic[T], abstract=True, executor="inline"):
    """An associative ``combine`` with identity ``empty()``; usable as an operation on pairs.

    ``fold`` relies on associativity only (never on commutativity). ``combine``
    runs on the worker's trio thread by default (``executor="inline"``); pass
    ``executor="thread"`` or ``cpu_bound=True`` for an expensive one.
    """

    def empty(self) -> T:
        """The identity element: ``combine(empty(), x) == x == combine(x, empty())``."""
        raise NotImplementedError(f"{type(self).__qualname__} must define empty()")

    def combine(self, a: T, b: T) -> T:
        """Combine two values; must be associative."""
        raise NotImplementedError(f"{type(self).__qualname__} must define combine()")

    def execute(self, pair: tuple[T, T]) -> T:
        """Combine a pair: this is what a combine job runs."""
        return self.combine(pair[0], pair[1])


@attrs.frozen
class OpSpec:
    """What the worker and the codec need to know about one registered operation."""

    name: str
    cls: type[Operation[Any, Any]]
    input_type: Any
    output_type: Any
    executor: Executor
    resources: tuple[tuple[str, type], ...]  # (keyword, resource type)


_SPECS: dict[str, OpSpec] = {}


def _type_args(cls: type) -> tuple[Any, Any]:
    """The (input, output) types of an operation class, ``Any`` where unknown."""
    for klass in cls.__mro__:
        for base in getattr(klass, "__orig_bases__", ()):
            origin = typing.get_origin(base)
            args = typing.get_args(base)
            if origin is Monoid and len(args) == 1 and not isinstance(args[0], TypeVar):
                return tuple[args[0], args[0]], args[0]  # type: ignore[valid-type]
            if origin is Operation and len(args) == 2:
                inp, out = args
                if isinstance(inp, TypeVar) or isinstance(out, TypeVar):
                    continue
                return inp, out
    return Any, Any


def spec_of(cls: type[Operation[Any, Any]]) -> OpSpec:
    """The :class:`OpSpec` of a registered operation class (cached)."""
    name = cls.op_name
    spec = _SPECS.get(name)
    if spec is not None and spec.cls is cls:
        return spec
    execute = getattr(cls, "execute", None)
    if not callable(execute):
        raise OperationError(f"operation {name!r} ({cls.__qualname__}) defines no execute()")
    is_async = inspect.iscoroutinefunction(execute)
    executor: Executor = "async" if is_async else cls.op_executor
    resources: list[tuple[str, type]] = []
    sig = inspect.signature(execute)
    kw_only = [p for p in sig.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    if kw_only:
        try:
            hints = typing.get_type_hints(execute)
        except Exception as exc:
            raise OperationError(
                f"operation {name!r}: cannot resolve the annotations of execute(): {exc}"
            ) from exc
        for p in kw_only:
            hint = hints.get(p.name)
            if not isinstance(hint, type):
                raise OperationError(
                    f"operation {name!r}: keyword-only parameter {p.name!r} of execute() "
                    "must be annotated with a resource class"
                )
            resources.append((p.name, hint))
    if resources and executor == "process":
        raise OperationError(
            f"operation {name!r} is cpu_bound and takes resources; "
            "resources cannot cross into a process pool"
        )
    inp, out = _type_args(cls)
    spec = OpSpec(name, cls, inp, out, executor, tuple(resources))
    _SPECS[name] = spec
    return spec


def lookup_operation(name: str) -> OpSpec | None:
    """The registered operation named ``name``, or ``None``: the worker's allowlist."""
    cls = _REGISTRY.get(name)
    return None if cls is None else spec_of(cls)


def registered_operations() -> Mapping[str, type[Operation[Any, Any]]]:
    """A read-only view of the registry: name -> operation class."""
    return dict(_REGISTRY)


def call_kwargs(spec: OpSpec, resources: Mapping[type, object]) -> dict[str, object] | type:
    """The resource keywords for ``spec``'s execute, or the first missing resource type."""
    out: dict[str, object] = {}
    for keyword, typ in spec.resources:
        value = resources.get(typ)
        if value is None:
            for have_type, have in resources.items():
                if issubclass(have_type, typ):
                    value = have
                    break
        if value is None:
            return typ
        out[keyword] = value
    return out
