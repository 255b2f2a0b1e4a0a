"""History events as bytes, for stores that keep them outside the process (SQLite, Redis).

An event is a msgpack array: its type's name, then its fields in declaration
order (payloads are already plain data or bytes). Decoding checks the name
and the field count and says what was wrong, naming the instance and the
event's place: a history a newer version wrote, or a damaged row, fails its
turn with that reason instead of being misread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import msgpack

from wireframe.durable import history
from wireframe.durable.history import Event

__all__ = ["EventCodecError", "decode_event", "decode_value", "encode_event", "encode_value"]

_TYPES: dict[str, type] = {
    name: getattr(history, name) for name in history.__all__ if name != "Event"
}
_FIELDS = {cls: tuple(f.name for f in attrs.fields(cls)) for cls in _TYPES.values()}
_pack: Callable[[Any], bytes] = msgpack.Packer(use_bin_type=True, datetime=False).pack


class EventCodecError(ValueError):
    """A stored event (or value) that cannot be read back, with where and why."""


def encode_event(event: Event) -> bytes:
    """The stored form of ``event``."""
    return _pack([type(event).__name__, *(getattr(event, f) for f in _FIELDS[type(event)])])


def decode_event(data: bytes, where: str) -> Event:
    """The event ``data`` holds; :class:`EventCodecError` naming ``where`` if it holds none."""
    try:
        items = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:
        raise EventCodecError(
            f"{where}: not a history event ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(items, list) or not items or not isinstance(items[0], str):
        raise EventCodecError(f"{where}: not a history event: {items!r:.200}")
    cls = _TYPES.get(items[0])
    if cls is None:
        raise EventCodecError(
            f"{where}: unknown history event {items[0]!r} (written by a newer wireframe?)"
        )
    try:
        return cls(*items[1:])  # type: ignore[no-any-return]
    except TypeError as exc:
        raise EventCodecError(
            f"{where}: {items[0]} with fields {items[1:]!r:.200}: {exc}"
        ) from None


def encode_value(value: Any) -> bytes | None:
    """A plain-data value (an input, an output, a custom status) as bytes; None stays None."""
    return None if value is None else _pack(value)


def decode_value(data: bytes | None, where: str) -> Any:
    """The value :func:`encode_value` made."""
    if data is None:
        return None
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:
        raise EventCodecError(
            f"{where}: not a stored value ({type(exc).__name__}: {exc})"
        ) from None
