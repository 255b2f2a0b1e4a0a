"""The CLI tests' fixtures: the repository as working folder, a Redis broker URL of one's own."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def in_the_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every CLI test from the repository root, so ``examples/x.py`` means the same anywhere."""
    monkeypatch.chdir(ROOT)


@pytest.fixture
def redis_url(fresh_redis_url: Callable[..., str]) -> str:
    """A Redis broker URL under a fresh key prefix (deleted after); skip, or fail under CI."""
    return fresh_redis_url()
