"""Resources are plain objects identified by their type; ``Unique`` has one taker.

A layer asks for a resource by annotating an input field with its type, and
gives one by annotating an output field. Nothing else names a resource: no
string keys, no registry calls. That is what lets the wiring graph be read off
the declarations before anything runs.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

__all__ = ["ResourceTaken", "Unique"]

T = TypeVar("T")


class ResourceTaken(RuntimeError):
    """A :class:`Unique` resource was taken a second time."""


class Unique(Generic[T]):
    """A resource whose value exactly one taker gets, with :meth:`take`.

    Use it for single-consumer things (a receive channel, a socket): several
    layers may ask for ``Unique[Conn]``, but only the first ``take()`` gets
    the connection; the second raises :class:`ResourceTaken` naming the first
    taker.
    """

    __slots__ = ("_lock", "_taken_by", "_value")

    def __init__(self, value: T) -> None:
        self._value: T | None = value
        self._taken_by: str | None = None
        self._lock = threading.Lock()

    @property
    def taken(self) -> bool:
        """Whether the value has been taken."""
        return self._taken_by is not None

    def take(self, taker: str = "a taker") -> T:
        """Hand over the value, once; ``taker`` names who, for the error message."""
        with self._lock:
            if self._taken_by is not None:
                raise ResourceTaken(
                    f"this Unique resource was already taken by {self._taken_by}; "
                    f"{taker} cannot take it again — give each consumer its own resource "
                    "or share it as a plain (non-Unique) resource"
                )
            self._taken_by = taker
            value, self._value = self._value, None
        return value  # type: ignore[return-value]

    def __repr__(self) -> str:
        state = f"taken by {self._taken_by}" if self._taken_by else repr(self._value)
        return f"Unique({state})"
