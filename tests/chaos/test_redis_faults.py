"""A Redis server that restarts, pauses or runs out of memory under working workers (issue #8).

Each case starts its own ``redis-server`` (a free port, its files in the test's
directory), two ``wireframe worker`` processes and, in the test process, a
directive run; then it does to the server what an operator or a bad day does:

* SIGKILL and restart it with AOF (fsync always): nothing accepted is lost, the
  run completes exactly, the workers keep serving;
* SIGKILL and restart it without persistence (it comes back empty): the run
  whose jobs vanished fails within two leases with a ``BrokerError`` that says
  the broker lost them (fault 2), and the workers keep serving new runs;
* ``CLIENT PAUSE`` for longer than the lease: every lease runs out meanwhile, the
  jobs run again elsewhere, stale completions are dropped: nothing lost, no
  reply twice;
* ``maxmemory`` with ``noeviction``: a new orchestrator's publish raises a
  ``BrokerError`` carrying the server's "OOM" reason, never a coredis type (fault
  3); the workers finish the jobs they hold and keep polling under the full
  memory without dying; once memory is freed work goes on and nothing accepted
  before is lost. (A *new* orchestrator: Redis refuses a script only while it
  has written nothing yet, and a runtime's later publishes start by deleting
  the previous publish's marker, after which Redis lets them through.)

Every case ends with a roll call: each worker process still consumes.
"""

from __future__ import annotations

from pathlib import Path

import coredis
import pytest
import trio
from chaos_harness import (
    LEASE,
    Scene,
    check_broker_error,
    gated,
    open_runtime,
    open_scene,
    redis_count,
    start_run,
    wait_drained,
)
from chaos_ops import Work, render

from wireframe import jobs

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

#: Seconds granted beyond the contract's "two leases" for reconnecting and a busy machine.
GRACE = 2.0


def work(scene: Scene, tag: str = "", pause: float = 0.02, ballast: str = "") -> Work:
    """The logging operation of this scene."""
    return Work(
        log=str(scene.log.path),
        done_log=str(scene.done.path),
        pause=pause,
        tag=tag,
        ballast=ballast,
    )


def expected(n: int) -> list[str]:
    """What ``collect()`` of :class:`Work` over ``range(n)`` must give."""
    return [render(i) for i in range(n)]


async def test_redis_restarted_with_its_data_loses_nothing(tmp_path: Path) -> None:
    n = 300
    with trio.fail_after(90):
        async with open_scene(tmp_path, "redis", reconnect=30) as scene:
            assert scene.redis is not None
            redis = scene.redis
            async with open_runtime(scene.url) as rt:

                async def restart_twice() -> None:
                    for at in (n // 3, 2 * n // 3):
                        await scene.log.wait_until(lambda log, at=at: log.total >= at)
                        await redis.restart()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(restart_twice)
                    values = await jobs.from_iter(range(n)).map(work(scene)).collect().run(rt)
                stats = await wait_drained(rt.broker)
                dead = await rt.broker.dead_letters()
                await scene.workers.roll_call(rt, tmp_path)
                duplicates = rt.duplicates

    assert values == expected(n)
    assert duplicates == 0
    assert dead == []
    assert [s.dead for s in stats] == [0] * len(stats)
    scene.log.poll()
    assert sorted(scene.log.by_index) == list(range(n)), "some input never ran"


async def test_redis_restarted_empty_fails_the_run_and_workers_go_on(tmp_path: Path) -> None:
    n = 200
    with trio.fail_after(90):
        async with open_scene(tmp_path, "redis", persist=False, reconnect=30) as scene:
            assert scene.redis is not None
            async with open_runtime(scene.url) as rt:
                gate = trio.Event()  # never set: the run is still waiting when Redis forgets it
                op = work(scene, tag="lost", pause=0.05)
                async with trio.open_nursery() as nursery:
                    outcome = start_run(
                        nursery, jobs.from_iter(gated(n, n // 2, gate)).map(op).collect().run, rt
                    )
                    await scene.log.wait_until(lambda log: log.total >= 20)
                    await scene.redis.restart()
                    # the contract: the run fails within two leases of the loss
                    with trio.fail_after(2 * LEASE + GRACE):
                        await outcome.done.wait()
                assert outcome.error is not None, "the run succeeded though Redis lost its jobs"
                check_broker_error(outcome.error, "lost")
                # the workers recreate what they need and serve new runs
                values = await jobs.from_iter(range(50)).map(work(scene, "after")).collect().run(rt)
                stats = await wait_drained(rt.broker)
                await scene.workers.roll_call(rt, tmp_path)
                duplicates = rt.duplicates

    assert values == expected(50)
    assert duplicates == 0
    assert [s.dead for s in stats] == [0] * len(stats)


async def test_redis_paused_past_the_lease_loses_nothing(tmp_path: Path) -> None:
    n = 300
    pause_ms = int(2.5 * LEASE * 1000)
    with trio.fail_after(90):
        async with open_scene(tmp_path, "redis") as scene:
            assert scene.redis is not None
            port = scene.redis.port
            async with open_runtime(scene.url) as rt:
                gate = trio.Event()  # the second half waits until the pause is over
                op = work(scene, pause=0.05)
                async with trio.open_nursery() as nursery:
                    outcome = start_run(
                        nursery, jobs.from_iter(gated(n, n // 2, gate)).map(op).collect().run, rt
                    )
                    await scene.log.wait_until(lambda log: log.total >= 40)
                    async with coredis.Redis(port=port) as admin:
                        await admin.client_pause(pause_ms, coredis.PureToken.ALL)
                    async with coredis.Redis(port=port) as probe:
                        await probe.ping()  # answered once the pause is over
                    gate.set()
                values = outcome.result()
                stats = await wait_drained(rt.broker)
                dead = await rt.broker.dead_letters()
                await scene.workers.roll_call(rt, tmp_path)
                duplicates = rt.duplicates

    assert values == expected(n)
    assert duplicates == 0
    assert dead == []
    assert [s.dead for s in stats] == [0] * len(stats)


async def test_redis_out_of_memory_raises_broker_errors_and_recovers(tmp_path: Path) -> None:
    slots = 8  # two workers x four: every slot busy when memory runs out
    with trio.fail_after(90):
        async with open_scene(tmp_path, "redis", reconnect=2) as scene:
            assert scene.redis is not None
            port = scene.redis.port
            async with (
                coredis.Redis(port=port) as admin,
                open_runtime(scene.url) as rt,
            ):
                async with trio.open_nursery() as nursery:
                    # jobs in flight when memory runs out: they end, and complete, under it
                    slow = work(scene, tag="before", pause=0.5)
                    before = start_run(
                        nursery, jobs.from_iter(range(slots)).map(slow).collect().run, rt
                    )
                    await scene.log.wait_until(lambda log: log.by_tag["before"] >= slots)
                    await admin.config_set({"maxmemory-policy": "noeviction", "maxmemory": 1})

                    # a new orchestrator's publish is refused, with the server's reason
                    async with open_runtime(scene.url) as fresh:
                        big = work(scene, tag="refused", ballast="x" * 10_000)
                        with pytest.raises(Exception) as raised:
                            await jobs.from_iter(range(20)).map(big).collect().run(fresh)
                    check_broker_error(raised.value, "OOM")

                    # the workers go on under the full memory: they finish their jobs
                    # and keep polling (a few dozen blocking reads) without dying
                    await scene.done.wait_until(lambda log: log.by_tag["before"] >= slots)
                    reads = await redis_count(port, "commandstats", "cmdstat_xreadgroup", "calls")
                    while (
                        await redis_count(port, "commandstats", "cmdstat_xreadgroup", "calls")
                        < reads + 20
                    ):
                        await trio.sleep(0.02)
                    scene.workers.check_alive()

                    await admin.config_set({"maxmemory": 0})
                    with trio.fail_after(10 * LEASE):
                        await before.done.wait()
                if before.error is not None:
                    check_broker_error(before.error)  # a run may fail on OOM, with the reason
                else:
                    assert before.value == expected(slots), "a job accepted before OOM was lost"
                values = await jobs.from_iter(range(50)).map(work(scene, "after")).collect().run(rt)
                stats = await wait_drained(rt.broker)
                dead = await rt.broker.dead_letters()
                await scene.workers.roll_call(rt, tmp_path)
                duplicates = rt.duplicates

    assert values == expected(50)
    assert duplicates == 0
    assert dead == []
    assert [s.dead for s in stats] == [0] * len(stats)
