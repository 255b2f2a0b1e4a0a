"""Small conversions between what Redis answers or takes and Python values.

Redis answers bytes (the broker's clients do not decode), scripts answer numbers
or bytes, and foreign data may put anything anywhere: these read each leniently.
"""

from __future__ import annotations

import re

__all__ = ["COUNT", "as_bytes", "ms", "text"]

#: What a whole number (a delivery count, a time in ms) looks like in a stream entry
#: (the same rule as ``malformed`` in the scripts' prelude).
COUNT = re.compile(rb"[0-9]+")


def text(value: object) -> str:
    """``value`` as text (bytes decoded as UTF-8, undecodable bytes replaced)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def as_bytes(value: object) -> bytes:
    """``value`` as bytes (text encoded as UTF-8)."""
    if isinstance(value, bytes):
        return value
    return str(value).encode()


def ms(seconds: float) -> int:
    """Whole milliseconds, at least 1."""
    return max(1, round(seconds * 1000))
