"""Adjacent-range merging: which two partial results a parallel fold combines next.

A fold over items ``0..n-1`` gets each item's value as its job finishes, in
any order. Every value covers a range ``[start, end)``; two ranges combine only
when they touch (the left one's ``end`` is the right one's ``start``) and only
left-then-right, so a monoid's associativity suffices — nothing assumes it is
commutative. :class:`RangeMerger` is that bookkeeping alone, with no I/O: it
says which combines to run, and the fold (in :mod:`wireframe.jobs.directives`)
sends them as jobs and hands their results back. Kept apart so the merging can
be tested on its own, against every arrival order.
"""

from __future__ import annotations

from typing import Any, Final

import attrs

__all__ = ["EMPTY", "Combine", "RangeMerger"]


class _Empty:
    """The type of :data:`EMPTY`."""

    def __repr__(self) -> str:
        return "EMPTY"


#: The value of a range whose items were all skipped: it joins a neighbour with
#: no combine at all (the monoid's identity, without a job to compute it).
EMPTY: Final[Any] = _Empty()


@attrs.frozen
class Combine:
    """A combine to run: ``combine(left, right)`` gives the value of ``[start, end)``."""

    start: int
    end: int
    left: Any
    right: Any


class RangeMerger:
    """The finished ranges of one fold, and the combines they call for.

    :meth:`add` records a finished range and returns the combine it makes
    possible, if any; when that combine's value comes back it is added as the
    range it covers (:meth:`combined`). The fold is done when nothing is
    pending and one range covers every item (:meth:`whole`).
    """

    def __init__(self) -> None:
        self._by_start: dict[int, tuple[int, Any]] = {}  # start -> (end, value)
        self._by_end: dict[int, int] = {}  # end -> start
        #: Combines handed out by :meth:`add` whose values have not come back.
        self.pending = 0

    def add(self, start: int, end: int, value: Any) -> Combine | None:
        """Record ``value`` for ``[start, end)``; the combine with a neighbour it allows.

        A range joins its left neighbour if that is finished, else its right
        one. Joining an :data:`EMPTY` range needs no combine: the two merge at
        once and the merged range looks for its next neighbour.
        """
        while True:
            left = self._by_end.pop(start, None)
            if left is not None:
                _, left_value = self._by_start.pop(left)
                start, lo, hi = left, left_value, value
            else:
                right = self._by_start.pop(end, None)
                if right is None:
                    self._by_start[start] = (end, value)
                    self._by_end[end] = start
                    return None
                right_end, right_value = right
                del self._by_end[right_end]
                end, lo, hi = right_end, value, right_value
            if lo is EMPTY or hi is EMPTY:
                value = hi if lo is EMPTY else lo
                continue
            self.pending += 1
            return Combine(start, end, lo, hi)

    def combined(self, start: int, end: int, value: Any) -> Combine | None:
        """Record the value of a combine :meth:`add` asked for (as :meth:`add` does)."""
        self.pending -= 1
        return self.add(start, end, value)

    def whole(self, total: int) -> tuple[bool, Any]:
        """``(True, value)`` once one range covers items ``0..total-1`` and nothing is pending.

        The value is :data:`EMPTY` when every item was skipped (or there were none).
        """
        if self.pending:
            return False, None
        if total == 0:
            return True, EMPTY
        first = self._by_start.get(0)
        if first is None or first[0] != total:
            return False, None
        return True, first[1]
