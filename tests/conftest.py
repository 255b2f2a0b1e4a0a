"""Fixtures every test folder shares: the test Redis server, under a key prefix per test.

Tests that need Redis use the server of ``WIREFRAME_TEST_REDIS_URL`` (default
``redis://127.0.0.1:6379/0``). Where no Redis answers they are skipped with the
reason — or fail when ``CI`` is set, since CI machines run a Redis server and a
skip there would hide a broken backend (:func:`wireframe.testing.skip_or_fail_unavailable`).
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import coredis
import pytest
import trio

from wireframe.testing import skip_or_fail_unavailable, with_options

REDIS_URL = os.environ.get("WIREFRAME_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


async def _ping(url: str) -> None:
    with trio.fail_after(3):
        async with coredis.Redis.from_url(url) as client:
            await client.ping()


async def _delete_prefix(url: str, prefix: str) -> None:
    with trio.fail_after(10):
        async with coredis.Redis.from_url(url) as client:
            keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
            for start in range(0, len(keys), 500):
                await client.delete(keys[start : start + 500])


def _run_apart(fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
    """``trio.run(fn, *args)`` in a thread of its own: a sync fixture may be set up
    from inside a trio test (an async fixture asking for it), where a nested
    ``trio.run`` is refused."""
    failure: list[BaseException] = []

    def target() -> None:
        try:
            trio.run(fn, *args)
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=target, name="wireframe-test-redis")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


#: Tests that take a third of a second or more (real-time waits, subprocesses, a
#: redis-server of their own), in files of the broker, CLI and README work, marked
#: ``slow`` here by file and function name ("*": every test of the file) so as not to
#: edit those files while other branches do. Move each to a ``@pytest.mark.slow`` in
#: its file once that work is merged, or drop it once its broker runs on an
#: injectable clock and the test on ``MockClock``. A name no test has is harmless.
_SLOW_IN_OTHER_FILES = {
    "tests/jobs/brokers/test_redis.py": {
        "test_cancelled_consumes_lose_no_message",
        "test_expired_lease_behind_many_live_ones_is_found",
        "test_extend_keeps_the_lease",
        "test_max_deliveries_enforced_on_claim",
        "test_messages_survive_a_redis_restart",
    },
    "tests/jobs/brokers/test_redis_outages.py": {"*"},  # each starts a redis-server
    "tests/jobs/brokers/test_redis_data_faults.py": {
        "test_a_lease_on_a_stream_created_anew_says_redis_lost_the_message",
    },
    "tests/jobs/brokers/test_sqlite.py": {
        "test_an_idle_waiter_outlasts_any_backoff",
        "test_brokers_opening_one_new_file_together_all_open",
        "test_waiters_see_another_process_writes_through_the_watcher",
        "test_write_lock_held_elsewhere_times_out_or_cancels",
    },
    "tests/test_readme.py": {
        "test_the_layer_snippet_is_checked_without_running",
        "test_the_progress_snippet_runs",
    },
}


@pytest.hookimpl(tryfirst=True)  # before ``-m`` selects by marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests of :data:`_SLOW_IN_OTHER_FILES` ``slow``."""
    for item in items:
        names = _SLOW_IN_OTHER_FILES.get(item.nodeid.split("::")[0], set())
        if "*" in names or getattr(item, "originalname", item.name) in names:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def redis_server_url() -> str:
    """The test Redis server's URL, once it answered a PING (else skip, or fail under CI)."""
    try:
        _run_apart(_ping, REDIS_URL)
    except Exception as exc:
        skip_or_fail_unavailable(
            f"no Redis answers at {REDIS_URL} ({exc!r}); set WIREFRAME_TEST_REDIS_URL"
        )
    return REDIS_URL


@pytest.fixture
def fresh_redis_url(redis_server_url: str) -> Iterator[Callable[..., str]]:
    """Make ``redis://`` URLs under this test's own key prefix; its keys are deleted after.

    ``fresh_redis_url(lease=5)`` gives the test's URL with options;
    ``fresh_redis_url("other")`` a sibling prefix (``wf-test-<id>-other:``), for
    tests of prefix isolation; both are deleted after.
    """
    base = f"wf-test-{uuid.uuid4().hex}"

    def make(sibling: str = "", **options: object) -> str:
        prefix = f"{base}-{sibling}:" if sibling else f"{base}:"
        return with_options(redis_server_url, prefix=prefix, **options)

    yield make
    _run_apart(_delete_prefix, redis_server_url, base)
