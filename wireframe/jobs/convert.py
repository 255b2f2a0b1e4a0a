"""The one cattrs converter, strict about scalars, and the check that a type can cross the wire.

Every job input, result and operation parameter is unstructured to plain data
by this converter on one side and structured back on the other. Two rules
make that safe:

* **Strict scalars.** cattrs' default hook for ``str`` calls ``str()``, so a
  worker would silently run ``"1"`` for an ``int`` that was sent to a ``str``
  input. Here ``str``, ``int``, ``float``, ``bool`` and ``bytes`` accept only
  values of that type (an ``int`` is accepted for a ``float``; a ``bool`` is
  never an ``int``); a mismatch is a decode error naming the field.
* **Checked types.** :func:`check_wire_type` asks cattrs for a structure hook
  when an operation class is defined, so a type cattrs cannot rebuild
  (``object``, a plain class, ``Decimal``) is an
  :class:`~wireframe.jobs.errors.OperationError` at import rather than a dead
  worker at the first job.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Any

import cattrs
from cattrs.errors import StructureHandlerNotFoundError
from cattrs.preconf.msgpack import make_converter

__all__ = ["SUPPORTED_TYPES", "WireTypeError", "check_wire_type", "converter", "type_name"]

#: The one cattrs converter every payload goes through.
converter: cattrs.Converter = make_converter()

#: What the codec carries, for error messages.
SUPPORTED_TYPES = (
    "None, bool, int, float, str, bytes, datetime, date, enums, attrs classes and "
    "dataclasses of these, and list/tuple/dict/set/frozenset/Optional/Union/Literal of "
    "these (or a type with a hook registered on wireframe.jobs.codec.converter "
    "before the operation is defined)"
)


class WireTypeError(TypeError):
    """A decoded value has the wrong scalar type for its field (``1`` for a ``str``)."""


def type_name(typ: Any) -> str:
    """A readable name for a type or type expression."""
    if typ is type(None) or typ is None:
        return "None"
    if isinstance(typ, type) and not typing.get_args(typ):
        return typ.__qualname__
    return repr(typ).replace("typing.", "")


def _strict(expected: type, accept: tuple[type, ...]) -> Callable[[Any, Any], Any]:
    def hook(value: Any, typ: Any) -> Any:
        if typ is not expected:
            # A subclass dispatched here (an IntEnum, a str Enum): built by
            # calling it, as cattrs does, which validates the value.
            return typ(value)
        kind = type(value)
        if kind is expected:
            return value
        if kind in accept:
            return expected(value)
        shown = repr(value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        want = "None" if expected is type(None) else expected.__name__
        raise WireTypeError(f"expected {want}, got {kind.__name__} {shown}")

    return hook


for _scalar, _accept in (
    (str, ()),
    (int, ()),
    (float, (int,)),
    (bool, ()),
    (bytes, ()),
    (type(None), ()),  # cattrs has no hook for None at all: Operation[None, None] needs one
):
    converter.register_structure_hook(_scalar, _strict(_scalar, _accept))


def check_wire_type(typ: Any, where: str) -> None:
    """Raise ``TypeError`` unless cattrs can structure ``typ``; ``NameError`` if unresolved.

    ``where`` names the use (``input type of operation 'X'``) in the message.
    A type with a type variable left in it (a generic intermediate) or a
    forward reference is not checked here: it raises ``NameError`` for a
    reference that does not resolve yet, and the caller checks again later.
    """
    if typ is Any or getattr(typ, "__parameters__", None):
        return
    if isinstance(typ, str | typing.ForwardRef):
        raise NameError(f"{where}: {type_name(typ)} is not resolved yet")
    try:
        converter.get_structure_hook(typ)
    except StructureHandlerNotFoundError as exc:
        if isinstance(exc.type_, str | typing.ForwardRef):
            raise NameError(f"{where}: {exc.type_!r} is not resolved yet") from None
        bad = type_name(exc.type_)
        whole = type_name(typ)
        inner = "" if bad == whole else f" (it contains {bad})"
        raise TypeError(
            f"{where} is {whole}{inner}, which the codec cannot rebuild from msgpack data; "
            f"supported: {SUPPORTED_TYPES}"
        ) from None
