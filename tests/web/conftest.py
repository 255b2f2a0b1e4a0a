"""The dashboard's tests run on SQLite and on Redis (under a fresh key prefix)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def web_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh broker URL: a new SQLite file, or a fresh Redis key prefix."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    fresh: Callable[..., str] = request.getfixturevalue("fresh_redis_url")
    return fresh()
