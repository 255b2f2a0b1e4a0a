"""The CLI tests' fixtures: the repository as working folder, a Redis broker URL of one's own."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import coredis
import pytest
import trio

from wireframe.testing import with_options

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("WIREFRAME_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


async def _redis_ping(url: str) -> None:
    with trio.fail_after(3):
        async with coredis.Redis.from_url(url) as client:
            await client.ping()


async def _redis_delete_prefix(url: str, prefix: str) -> None:
    with trio.fail_after(10):
        async with coredis.Redis.from_url(url) as client:
            keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
            for start in range(0, len(keys), 500):
                await client.delete(keys[start : start + 500])


@pytest.fixture(autouse=True)
def in_the_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every CLI test from the repository root, so ``examples/x.py`` means the same anywhere."""
    monkeypatch.chdir(ROOT)


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis broker URL under a fresh key prefix (deleted after); skip, or fail under CI."""
    try:
        trio.run(_redis_ping, REDIS_URL)
    except Exception as exc:
        reason = f"no Redis answers at {REDIS_URL} ({exc!r}); set WIREFRAME_TEST_REDIS_URL"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)")
        pytest.skip(reason)
    prefix = f"wf-test-cli-{uuid.uuid4().hex}:"
    yield with_options(REDIS_URL, prefix=prefix)
    trio.run(_redis_delete_prefix, REDIS_URL, prefix)
