"""Ids of jobs submitted on their own: 128 random bits, as unique as a uuid4.

``secrets.token_hex(16)`` costs one ``getrandom`` system call per id, and
CPython releases the GIL around it: with a broker's connection threads busy, the
submitting task then waits for the GIL back on every submit (a convoy that cost
tens of microseconds a job under load). So the bytes are read from the
operating system's generator in blocks of :data:`_BLOCK` ids and handed out
in order; a forked child drops the block it inherited, so two processes never
hand out the same bytes.
"""

from __future__ import annotations

import os
from typing import Final

__all__ = ["new_job_id"]

_ID_BYTES: Final = 16
_BLOCK: Final = 256  # ids per read of os.urandom

_pool = b""
_next = 0


def new_job_id() -> str:
    """A fresh random id: 32 lowercase hex digits (128 bits from ``os.urandom``)."""
    global _pool, _next
    if _next >= len(_pool):
        _pool, _next = os.urandom(_ID_BYTES * _BLOCK), 0
    start = _next
    _next = start + _ID_BYTES
    return _pool[start:_next].hex()


def _forget() -> None:
    """In a forked child: never reuse the parent's unread bytes."""
    global _pool, _next
    _pool, _next = b"", 0


os.register_at_fork(after_in_child=_forget)
