"""Result caching: answer a job from a cache instead of dispatching it.

An operation opts in by returning a key from ``cache_key(input)``; the runtime
then looks up ``(operation name, operation parameters, key)`` in its
:class:`ResultCache` before publishing, and stores every successful result
under it. The cache holds encoded result bodies, so it can move out of process
later without changing the runtime.
"""

from __future__ import annotations

from collections import OrderedDict

import attrs

__all__ = ["CacheStatistics", "ResultCache"]


@attrs.frozen
class CacheStatistics:
    """A snapshot of a :class:`ResultCache`: how full it is and how often it answered.

    ``hits / (hits + misses)`` tells whether the cache earns its memory, and
    ``entries == max_entries`` with many misses that it is too small.
    """

    entries: int
    max_entries: int
    hits: int
    misses: int


class ResultCache:
    """An in-memory LRU cache of encoded results, shared by the runs of one runtime.

    ``max_entries`` bounds memory (least recently used entries are evicted).
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError(f"ResultCache.max_entries must be at least 1, not {max_entries}")
        self.max_entries = max_entries
        self._items: OrderedDict[bytes, bytes] = OrderedDict()
        self._hits = 0
        self._misses = 0

    async def get(self, key: bytes) -> bytes | None:
        """The encoded result stored under ``key``, or ``None``."""
        body = self._items.get(key)
        if body is None:
            self._misses += 1
            return None
        self._items.move_to_end(key)
        self._hits += 1
        return body

    async def set(self, key: bytes, body: bytes) -> None:
        """Store an encoded result under ``key``."""
        self._items[key] = body
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    def statistics(self) -> CacheStatistics:
        """Its counts now (lookups since it was made), as a frozen snapshot."""
        return CacheStatistics(len(self._items), self.max_entries, self._hits, self._misses)

    def __len__(self) -> int:
        return len(self._items)
