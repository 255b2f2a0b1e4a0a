"""Operations and monoids: the code a job names, registered by a stable name.

An operation is an attrs class whose fields are its parameters (they travel with
every job) and whose ``execute(self, input)`` computes the output. Defining the
class registers it under a stable name: the class's ``__qualname__``
(``AddOne``) unless the class says ``name="..."``. The name crosses the wire,
so it must not depend on how the module was imported (``python svc.py`` makes
it ``__main__``, ``wireframe worker --import svc.py`` makes it ``svc``, a
package makes it ``pkg.svc``): the module is never part of it. The worker
resolves names **only** through this registry, so a message can never name
arbitrary code. A different class claiming a name already taken raises
:class:`~wireframe.jobs.errors.OperationError` at import, and so does an input
or output type the codec cannot carry (see :mod:`wireframe.jobs.convert`).

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
import math
import os
import sys
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, Generic, Literal, TypeVar

import attrs

from wireframe.jobs.convert import check_wire_type
from wireframe.jobs.errors import OperationError
from wireframe.jobs.limits import Limit, LimitError, operation_limit

__all__ = ["Monoid", "OpSpec", "Operation", "lookup_operation", "registered_operations", "spec_of"]

I = TypeVar("I")  # noqa: E741
O = TypeVar("O")  # noqa: E741
T = TypeVar("T")

Executor = Literal["thread", "process", "inline", "async"]

_REGISTRY: dict[str, type[Operation[Any, Any]]] = {}


class Operation(Generic[I, O]):
    """Base class of every operation: subclass as ``Operation[In, Out]`` and define ``execute``.

    Class keywords: ``name=`` (the registry name; default the class's
    ``__qualname__``), ``cpu_bound=True``
    (run a sync ``execute`` in a process pool), ``executor="inline"`` (run a
    sync ``execute`` on the trio thread), ``time_limit=60.0`` (seconds a job may
    run before it fails with ``ErrorKind.TIME_LIMIT``; a submit may set its own),
    ``rate_limit="10/s"`` (or ``/m``, ``/h``) and ``concurrency_limit=2``
    (limits across every worker on the broker, see :mod:`wireframe.jobs.limits`),
    ``abstract=True`` (an intermediate base class that is not registered).

    ``cache_key(input)`` may return a string: the runtime then answers equal
    (operation, parameters, key) jobs from its result cache without running them.
    """

    op_name: ClassVar[str]
    op_executor: ClassVar[Executor] = "thread"
    #: Seconds a job of this operation may run, unless its submit says otherwise.
    op_time_limit: ClassVar[float | None] = None
    #: The rate and concurrency limit its jobs are handed out within, if any.
    op_limit: ClassVar[Limit | None] = None
    #: Set in the class's own ``__dict__`` by ``abstract=True`` (see ``__init_subclass__``).
    _op_abstract: ClassVar[bool] = False
    #: The file the class was defined in (see ``_same_class``), recorded at definition.
    _op_source: ClassVar[str]

    def __init_subclass__(
        cls,
        *,
        name: str | None = None,
        cpu_bound: bool = False,
        executor: Executor | None = None,
        abstract: bool = False,
        time_limit: float | None = None,
        rate_limit: str | None = None,
        concurrency_limit: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        if time_limit is not None:
            cls.op_time_limit = check_time_limit(time_limit, f"operation {_where(cls)}")
        limits = (rate_limit, concurrency_limit)
        if executor is not None and executor not in typing.get_args(Executor):
            known = ", ".join(repr(e) for e in typing.get_args(Executor))
            raise OperationError(
                f"operation {_where(cls)}: executor={executor!r} is not one of {known}"
            )
        if executor is not None:
            cls.op_executor = executor
        elif cpu_bound:
            cls.op_executor = "process"
        # attrs' slotted classes are rebuilt from the class's __dict__, and the
        # rebuild passes no class keywords: what the keywords said must live
        # in that __dict__ (op_executor above, _op_abstract and op_name here).
        if abstract or cls.__dict__.get("_op_abstract"):
            cls._op_abstract = True
            return
        if name is None:
            inherited = cls.__dict__.get("op_name")
            name = inherited if isinstance(inherited, str) else cls.__qualname__
        if not name:
            raise OperationError(f"operation {_where(cls)}: name must be a non-empty string")
        cls._op_source = _source(cls)
        existing = _REGISTRY.get(name)
        if existing is not None and not _same_class(existing, cls):
            raise OperationError(
                f"operation name {name!r} of {_where(cls)} is already taken by "
                f"{_where(existing)}; pass name='...' to one of them to choose another"
            )
        _check_wire_types(cls, name, resolve=False)
        cls.op_name = name
        if limits != (None, None):
            try:
                cls.op_limit = operation_limit(name, *limits, f"operation {_where(cls)}")
            except LimitError as e:
                raise OperationError(str(e)) from None
        _REGISTRY[name] = cls

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


#: Specs by class (not by name: a class loaded twice shares a name, see _same_class).
_SPECS: dict[type, OpSpec] = {}


def _where(cls: type) -> str:
    """``module.QualName`` of a class, and its file when it has one (for messages)."""
    source = cls.__dict__.get("_op_source") or _source(cls)
    at = f" in {source}" if source != cls.__module__ else ""
    return f"{cls.__module__}.{cls.__qualname__}{at}"


def _source(cls: type) -> str:
    """The file a class is defined in, or its module's name when it has no file.

    Asked while the class statement runs, when its module is being executed:
    the module's ``__file__`` if it is in ``sys.modules`` (an import, a
    script's ``__main__``), else the file its methods were compiled from.
    """
    module = sys.modules.get(cls.__module__)
    file = getattr(module, "__file__", None)
    if not isinstance(file, str):
        codes = (getattr(v, "__code__", None) for v in vars(cls).values())
        file = next((c.co_filename for c in codes if c is not None), None)
    if not isinstance(file, str):
        return cls.__module__
    return file if file.startswith("<") else os.path.realpath(file)  # "<stdin>", "<string>"


def _same_class(a: type[Operation[Any, Any]], b: type[Operation[Any, Any]]) -> bool:
    """Whether ``a`` and ``b`` are one class definition, loaded or built twice.

    The same qualname in the same source file is the same operation: a script
    run as ``__main__`` and imported under its module name (``python svc.py``
    whose code imports ``svc``, or a process pool re-importing the main
    module), a module reloaded, a function defining the class run again, or
    attrs rebuilding a slotted class. They run the same code, so the name may
    move to the newest; two classes from different files (or different
    qualnames in one file) are two operations and must not share a name.
    """
    return a.__qualname__ == b.__qualname__ and a._op_source == b._op_source


def _has_forward_ref(typ: Any) -> bool:
    if isinstance(typ, str | typing.ForwardRef):
        return True
    return any(_has_forward_ref(arg) for arg in typing.get_args(typ))


def _resolve(typ: Any, cls: type) -> Any:
    """``typ`` with its forward references evaluated in the module defining ``cls``."""
    if not _has_forward_ref(typ):
        return typ
    module = sys.modules.get(cls.__module__)

    def holder() -> None: ...

    holder.__annotations__ = {"t": typ}
    return typing.get_type_hints(holder, globalns=dict(vars(module)) if module else {})["t"]


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


def _check_wire_types(cls: type, name: str, *, resolve: bool) -> tuple[Any, Any]:
    """The (input, output) types of operation ``cls``, checked to cross the wire.

    At class definition (``resolve=False``) a type that does not resolve yet
    (a forward reference to a class defined further down) is let through; the
    first use (:func:`spec_of`, ``resolve=True``) resolves and checks it, and
    the operation's parameters too: attrs makes the fields only after the
    class statement has run, so they cannot be checked at definition.
    """
    inp, out = _type_args(cls)
    checks: list[tuple[str, Any]] = [("input type", inp), ("output type", out)]
    if resolve:
        checks.append(("parameters", cls if attrs.has(cls) else Any))
    types: list[Any] = []
    for role, typ in checks:
        where = f"the {role} of operation {name!r} ({_where(cls)})"
        try:
            typ = _resolve(typ, cls) if resolve else typ
            check_wire_type(typ, where)
        except NameError as exc:
            if resolve:
                raise OperationError(f"{where} does not resolve: {exc}") from None
        except TypeError as exc:
            raise OperationError(str(exc)) from None
        except Exception as exc:  # cattrs choking on an odd type expression
            raise OperationError(f"{where} is not usable: {type(exc).__name__}: {exc}") from None
        types.append(typ)
    return types[0], types[1]


def spec_of(cls: type[Operation[Any, Any]]) -> OpSpec:
    """The :class:`OpSpec` of a registered operation class (cached).

    Raises :class:`OperationError` when the class cannot run as a job: no
    ``execute``, a resource parameter without a class, or an input, output or
    parameter type the codec cannot carry.
    """
    spec = _SPECS.get(cls)
    if spec is not None:
        return spec
    name = cls.op_name
    execute = getattr(cls, "execute", None)
    if not callable(execute):
        raise OperationError(f"operation {name!r} ({cls.__qualname__}) defines no execute()")
    is_async = inspect.iscoroutinefunction(execute)
    executor: Executor = "async" if is_async else cls.op_executor
    resources = _resources(name, execute)
    if resources and executor == "process":
        raise OperationError(
            f"operation {name!r} is cpu_bound and takes resources; "
            "resources cannot cross into a process pool"
        )
    inp, out = _check_wire_types(cls, name, resolve=True)
    spec = OpSpec(name, cls, inp, out, executor, resources)
    _SPECS[cls] = spec
    return spec


def _resources(name: str, execute: Any) -> tuple[tuple[str, type], ...]:
    """The (keyword, resource class) pairs ``execute`` takes as keyword-only parameters."""
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
    return tuple(resources)


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


def check_time_limit(value: object, where: str) -> float:
    """``value`` as a time limit in seconds, or an :class:`OperationError` naming ``where``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise OperationError(f"{where}: time_limit={value!r} must be a number of seconds")
    if not math.isfinite(value) or value <= 0:
        raise OperationError(f"{where}: time_limit={value!r} must be positive and finite")
    return float(value)
