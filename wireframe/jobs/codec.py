"""The one codec: jobs and results to bytes and back, with cattrs and msgpack, never pickle.

It also holds the one model of each: a job body decodes to an :class:`Envelope`
(the job's id and result channel are its broker message's), a result body to
a :class:`JobResult`.

Wire format (msgpack arrays, so a decoder only ever builds plain data and then
structures it into the registered types — decoding never executes code):

* job body: ``[1, op, run_id, index, attempt, input, metadata]`` where ``op``
  is itself the msgpack bytes of ``[name, params]``. A map sends the same
  operation with every item, so the runtime encodes it once per run and the
  worker decodes it once per distinct ``op`` bytes (see :class:`OpCache`).
  The job id and its result channel are the broker message's ``id`` and
  ``reply_to``; the body does not repeat them.
* result body: ``[0, value]`` (a value), ``[1]`` (skipped by ``Ignore``) or
  ``[2, kind, type_name, message, traceback, strategy]`` (an error).

Why msgpack over JSON, measured on this machine (CPython 3.11, msgpack 1.x C
extension vs the stdlib ``json``; a map job body with an ``int`` input — op,
32-char run id, index, attempt — and its ``int`` result; encode+decode, best of
5 x 200,000):

=======================  ==============  ==============
per job                  msgpack         json (stdlib)
=======================  ==============  ==============
job body enc+dec         0.35 us         2.6 us
result body enc+dec      0.17 us         2.1 us
job body size            58 bytes        81 bytes
result body size         5 bytes         10 bytes
=======================  ==============  ==============

msgpack is 7-12x faster on the hot path, smaller, and carries ``bytes``
natively (the nested ``op`` field); JSON's one advantage, human-readable
bodies, is served by ``wireframe jobs dead``. End to end the codec is a small
part of a job's cost either way (see ``bench/jobs_memory.py``).

A payload that does not decode raises :class:`~wireframe.jobs.errors.CodecError`
naming the part that was wrong (``$.input.name``, ``$.operation(word-count).path``);
so does a value that cannot be encoded, naming the operation, the item and the
part of the value msgpack cannot carry. The converter and its strict scalar
rules live in :mod:`wireframe.jobs.convert`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
import cattrs
import msgpack
from cattrs.v import format_exception

from wireframe.jobs.convert import SUPPORTED_TYPES, WireTypeError, converter, type_name
from wireframe.jobs.errors import CodecError, ErrorKind, OperationError, RemoteError, Strategy
from wireframe.jobs.operations import (
    Operation,
    OpSpec,
    lookup_operation,
    registered_operations,
)

__all__ = [
    "ABORT_TOPIC",
    "Envelope",
    "JobResult",
    "OpCache",
    "UnknownOperation",
    "converter",
    "decode_envelope",
    "decode_result",
    "encode_input",
    "encode_job_body",
    "encode_operation",
    "encode_output",
    "encode_result",
    "structure",
    "unstructure",
]

_WIRE_VERSION = 1
_OK, _SKIPPED, _ERROR = 0, 1, 2

_packb: Callable[[Any], bytes] = msgpack.Packer(use_bin_type=True, datetime=False).pack


def _unpackb(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True)


_PASSTHROUGH: frozenset[Any] = frozenset({Any, int, str, float, bool, bytes, type(None)})
_unstructure_hooks: dict[Any, Callable[[Any], Any]] = {}
_structure_hooks: dict[Any, Callable[[Any, Any], Any]] = {}


def unstructure(value: Any, typ: Any = Any) -> Any:
    """Plain data for ``value`` of declared type ``typ`` (fast path for scalars)."""
    if typ in _PASSTHROUGH and type(value) in (int, str, float, bool, bytes, type(None)):
        return value
    hook = _unstructure_hooks.get(typ)
    if hook is None:
        hook = converter.get_unstructure_hook(typ if typ is not Any else object)
        _unstructure_hooks[typ] = hook
    if typ is Any:
        return converter.unstructure(value)
    return hook(value)


def structure(data: Any, typ: Any, where: str) -> Any:
    """``data`` structured as ``typ``.

    Raises :class:`CodecError` naming ``where`` when the data does not fit the
    type (a malformed payload), and :class:`OperationError` when the codec has
    no way to build ``typ`` at all (the operation's type is unusable; class
    definition rejects most such types, this catches the rest).
    """
    if typ is Any:
        return data
    if typ in _PASSTHROUGH and type(data) is typ:
        return data
    hook = _structure_hooks.get(typ)
    if hook is None:
        try:
            hook = converter.get_structure_hook(typ)
        except Exception as exc:
            raise OperationError(
                f"cannot decode {where}: the codec has no way to build {type_name(typ)} "
                f"({type(exc).__name__}: {exc}); supported: {SUPPORTED_TYPES}"
            ) from None
        _structure_hooks[typ] = hook
    try:
        return hook(data, typ)
    except Exception as exc:
        details = "; ".join(cattrs.transform_error(exc, path=where, format_exception=_explain))
        raise CodecError(f"cannot decode {where} as {type_name(typ)}: {details}") from None


def _explain(exc: BaseException, typ: type | None) -> str:
    """cattrs' wording for a structure failure, but ours for a strict scalar mismatch."""
    if isinstance(exc, WireTypeError):
        return str(exc)
    return format_exception(exc, typ)


def encode_operation(op: Operation[Any, Any]) -> bytes:
    """The wire form of an operation: its registry name and its parameters."""
    cls = type(op)
    params = converter.unstructure(op, unstructure_as=cls) if attrs.has(cls) else {}
    return _packb([cls.op_name, params])


def encode_job_body(
    op: bytes,
    run_id: str,
    index: int,
    attempt: int,
    input: Any,
    metadata: Mapping[str, str] | None = None,
    time_limit: float | None = None,
) -> bytes:
    """A job body from an :func:`encode_operation` result and an unstructured input.

    A ``time_limit`` (seconds) travels as an eighth item; a body without one
    keeps the seven items every worker reads.
    """
    body = [_WIRE_VERSION, op, run_id, index, attempt, input, metadata or None]
    if time_limit is not None:
        body.append(float(time_limit))
    return _packb(body)


def encode_input(
    op: bytes,
    run_id: str,
    index: int,
    item: Any,
    spec: OpSpec,
    label: str | None = None,
    *,
    time_limit: float | None = None,
    metadata: Mapping[str, str] | None = None,
) -> bytes:
    """A first-attempt job body for ``item`` of the operation ``op`` (from :func:`encode_operation`).

    ``metadata`` (strings) travels with the job to its worker (a trace context).
    Raises :class:`CodecError` naming the operation, the item (``label``,
    default ``item {index}``) and the part of the value msgpack cannot carry.
    """
    try:
        body = [
            _WIRE_VERSION, op, run_id, index, 1, unstructure(item, spec.input_type),
            dict(metadata) if metadata else None,
        ]  # fmt: skip
        if time_limit is not None:
            body.append(float(time_limit))
        return _packb(body)
    except Exception as exc:
        what = f"{label or f'item {index}'} of operation {spec.name!r}"
        raise CodecError(_cannot_encode(what, item, spec.input_type, exc)) from None


def _cannot_encode(what: str, value: Any, typ: Any, exc: Exception) -> str:
    """Why ``value`` (declared as ``typ``) could not be encoded, for a :class:`CodecError`."""
    try:
        data = unstructure(value, typ)
    except Exception as inner:
        why = f"converting it as {type_name(typ)} failed ({type(inner).__name__}: {inner})"
    else:
        why = _unencodable(data, "$") or f"{type(exc).__name__}: {exc}"
    return (
        f"cannot encode {what} (declared type {type_name(typ)}): {why}; "
        f"a value is converted by its declared type, which may be {SUPPORTED_TYPES}"
    )


def _unencodable(data: Any, path: str) -> str | None:
    """The first part of plain ``data`` msgpack cannot carry, described; ``None`` if all can."""
    if data is None or isinstance(data, bool | float | bytes | msgpack.ExtType):
        return None
    if isinstance(data, int):
        if -(2**63) <= data < 2**64:
            return None
        return f"{path} is the int {data}, outside msgpack's 64-bit range"
    if isinstance(data, str):
        try:
            data.encode("utf-8")
        except UnicodeEncodeError as exc:
            return f"{path} is a str that is not valid Unicode ({exc.reason} at index {exc.start})"
        return None
    if isinstance(data, list | tuple):
        for i, item in enumerate(data):
            if (why := _unencodable(item, f"{path}[{i}]")) is not None:
                return why
        return None
    if isinstance(data, dict):
        for key, item in data.items():
            why = _unencodable(key, f"{path} key {key!r}") or _unencodable(
                item, f"{path}.{key}" if isinstance(key, str) else f"{path}[{key!r}]"
            )
            if why is not None:
                return why
        return None
    return f"{path} is a {type(data).__qualname__}, which msgpack cannot carry"


@attrs.frozen
class Envelope:
    """A job body decoded into plain parts; the operation and input are not resolved yet."""

    op: bytes
    run_id: str
    index: int
    attempt: int
    input: Any
    metadata: Mapping[str, str]
    time_limit: float | None = None  # seconds the job may run, if limited

    def with_attempt(self, attempt: int) -> bytes:
        """The same body with another attempt number (how a retry is re-published)."""
        return encode_job_body(
            self.op, self.run_id, self.index, attempt, self.input, self.metadata, self.time_limit
        )


def decode_envelope(body: bytes) -> Envelope:
    """Decode a job body's envelope; raise :class:`CodecError` saying what was wrong."""
    try:
        data = _unpackb(body)
    except Exception as exc:
        raise CodecError(f"job body is not msgpack ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, list) or len(data) not in (7, 8):
        shape = f"{len(data)} items" if isinstance(data, list) else type(data).__name__
        raise CodecError(f"job body is not a wireframe job (expected a 7-item array, got {shape})")
    version, op, run_id, index, attempt, input, metadata = data[:7]
    time_limit = data[7] if len(data) == 8 else None
    if time_limit is not None and (
        not isinstance(time_limit, int | float) or isinstance(time_limit, bool) or time_limit <= 0
    ):
        raise CodecError(
            f"job body field $.time_limit must be positive seconds, got {time_limit!r}"
        )
    if version != _WIRE_VERSION:
        raise CodecError(
            f"job body has wire version {version!r}; this worker reads {_WIRE_VERSION}"
        )
    for field, value, typ in (
        ("$.op", op, bytes),
        ("$.run_id", run_id, str),
        ("$.index", index, int),
        ("$.attempt", attempt, int),
    ):
        if not isinstance(value, typ):
            raise CodecError(f"job body field {field} must be {typ.__name__}, got {value!r}")
    if metadata is not None and not isinstance(metadata, dict):
        raise CodecError(f"job body field $.metadata must be a map, got {metadata!r}")
    return Envelope(
        op,
        run_id,
        index,
        attempt,
        input,
        metadata or {},
        None if time_limit is None else float(time_limit),
    )


class UnknownOperation(CodecError):
    """A job names an operation this process never registered.

    The message lists the registered names that look alike (``known``,
    default: this process's registry) and says how to make the worker know
    it, and how names are made, since a name that differs between the sending
    and the running process is the usual cause.
    """

    def __init__(self, name: str, known: Iterable[str] | None = None) -> None:
        self.name = name
        names = sorted(registered_operations() if known is None else known)
        self.alike = _alike(name, names)
        if self.alike:
            have = "names that look alike here: " + ", ".join(map(repr, self.alike))
        elif names:
            shown = ", ".join(map(repr, names[:10])) + (", ..." if len(names) > 10 else "")
            have = f"it knows {len(names)} operation(s), none alike: {shown}"
        else:
            have = "it knows no operations at all"
        super().__init__(
            f"unknown operation {name!r}: this worker has no operation by that name ({have}). "
            "Start the worker with --import of the module that defines it "
            "(wireframe worker --import path/to/module.py); an operation's name is its "
            "class's __qualname__ unless the class passes name='...'"
        )


def _alike(name: str, names: list[str]) -> list[str]:
    """Registered names close to ``name``: by spelling, case, or a dotted prefix or suffix."""
    folded = name.casefold()
    near = [
        n
        for n in names
        if n.casefold() == folded or name.endswith("." + n) or n.endswith("." + name)
    ]
    near += [n for n in difflib.get_close_matches(name, names, n=5, cutoff=0.6) if n not in near]
    return near[:5]


class OpCache:
    """Decoded operations by their wire bytes: a map decodes its operation once per worker."""

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._items: dict[bytes, tuple[OpSpec, Operation[Any, Any]]] = {}

    def resolve(self, op: bytes) -> tuple[OpSpec, Operation[Any, Any]]:
        """The registered spec and the operation instance for ``op`` bytes.

        Raises :class:`UnknownOperation` or :class:`CodecError`.
        """
        hit = self._items.get(op)
        if hit is not None:
            return hit
        try:
            data = _unpackb(op)
        except Exception as exc:
            raise CodecError(f"job body field $.op is not msgpack: {exc}") from None
        if not (isinstance(data, list) and len(data) == 2 and isinstance(data[0], str)):
            raise CodecError(f"job body field $.op must be [name, params], got {data!r}")
        name, params = data
        spec = lookup_operation(name)
        if spec is None:
            raise UnknownOperation(name)
        instance = (
            structure(params, spec.cls, f"$.operation({name})")
            if attrs.has(spec.cls)
            else spec.cls()
        )
        if len(self._items) >= self._size:
            self._items.pop(next(iter(self._items)))
        self._items[op] = (spec, instance)
        return spec, instance


@attrs.frozen
class JobResult:
    """What a job produced: a value, a skip (``Fatal(..., strategy=Ignore)``) or an error."""

    value: Any = None
    skipped: bool = False
    error: RemoteError | None = None

    @property
    def ok(self) -> bool:
        """True when the job produced a value."""
        return self.error is None and not self.skipped


def encode_result(result: JobResult, output_type: Any = Any) -> bytes:
    """The reply body for a job's result.

    An error always encodes: text msgpack cannot carry (a lone surrogate in an
    exception's message) is escaped, so reporting a failure cannot fail.
    """
    if result.error is not None:
        e = result.error
        fields = [e.type_name, e.message, e.traceback]
        try:
            return _packb([_ERROR, e.kind.value, *fields, e.strategy.value])
        except (UnicodeEncodeError, TypeError):
            safe = [_printable(f) for f in fields]
            return _packb([_ERROR, e.kind.value, *safe, e.strategy.value])
    if result.skipped:
        return _packb([_SKIPPED])
    return _packb([_OK, unstructure(result.value, output_type)])


def _printable(text: object) -> str:
    return str(text).encode("utf-8", "backslashreplace").decode("utf-8")


def encode_output(value: Any, spec: OpSpec) -> bytes:
    """The reply body for a value ``spec``'s operation returned.

    Raises :class:`CodecError` naming the operation and the part of the value
    msgpack cannot carry (the worker fails the job with it).
    """
    try:
        return _packb([_OK, unstructure(value, spec.output_type)])
    except Exception as exc:
        what = f"the result of operation {spec.name!r}"
        raise CodecError(_cannot_encode(what, value, spec.output_type, exc)) from None


def decode_result(body: bytes, output_type: Any = Any) -> JobResult:
    """Decode a reply body; raise :class:`CodecError` naming what was wrong."""
    try:
        data = _unpackb(body)
    except Exception as exc:
        raise CodecError(f"result body is not msgpack ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, list) or not data:
        raise CodecError(f"result body is not a wireframe result: {data!r}")
    tag = data[0]
    if tag == _OK and len(data) == 2:
        return JobResult(value=structure(data[1], output_type, "$.result"))
    if tag == _SKIPPED:
        return JobResult(skipped=True)
    if tag == _ERROR and len(data) == 6:
        try:
            kind = ErrorKind(data[1])
            strategy = Strategy(data[5])
        except ValueError as exc:
            raise CodecError(f"result body error: {exc}") from None
        return JobResult(
            error=RemoteError(kind, str(data[2]), str(data[3]), str(data[4]), strategy)
        )
    raise CodecError(f"result body has an unknown shape: {data!r}")


#: The broadcast topic aborts travel on; every worker listens to it.
ABORT_TOPIC = "wireframe.abort"


def encode_abort(kind: str, target: str) -> bytes:
    """An abort broadcast: ``kind`` is ``"run"`` (a run id) or ``"worker"`` (a worker id, or ``"*"``)."""
    return _packb([kind, target])


def decode_abort(body: bytes) -> tuple[str, str] | None:
    """The (kind, target) of an abort broadcast, or ``None`` if it is not one."""
    try:
        data = _unpackb(body)
    except Exception:
        return None
    if isinstance(data, list) and len(data) == 2 and all(isinstance(x, str) for x in data):
        return data[0], data[1]
    return None
