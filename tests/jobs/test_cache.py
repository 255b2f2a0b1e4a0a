"""The result cache on its own: least recently used entries go first; its counts are a snapshot."""

from __future__ import annotations

import pytest

from wireframe import jobs
from wireframe.jobs.cache import CacheStatistics


async def test_the_least_recently_used_entry_is_evicted_and_lookups_are_counted() -> None:
    cache = jobs.ResultCache(max_entries=2)
    await cache.set(b"a", b"1")
    await cache.set(b"b", b"2")
    assert await cache.get(b"a") == b"1"  # a is now the most recently used
    await cache.set(b"c", b"3")  # so b goes
    assert await cache.get(b"b") is None
    assert await cache.get(b"c") == b"3"
    before = cache.statistics()
    assert before == CacheStatistics(entries=2, max_entries=2, hits=2, misses=1)
    await cache.get(b"nothing")
    assert before.misses == 1  # a snapshot: it does not change under the caller
    assert cache.statistics().misses == 2


def test_a_cache_holds_at_least_one_entry() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        jobs.ResultCache(max_entries=0)
