"""A Redis server SIGKILLed and restarted mid-run (AOF, fsync always) loses no job.

The test starts its own ``redis-server`` (a free port, AOF with
``appendfsync always`` in a temporary directory, no RDB snapshots), one worker
process, and in the test process a ``map(Work).fold(Concat)`` of 300 jobs. At
two random points of the run the server is SIGKILLed, left down for up to
0.3 s, and started again on the same port and directory. Every broker call in
flight meets a dead connection; the broker reconnects with backoff (the URL
allows ``reconnect=30`` seconds) and, the AOF having kept every acknowledged
write, nothing is lost: the fold equals the local computation, nothing is left
queued, leased or dead, and every input ran.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import coredis
import pytest
import trio
from crash_harness import ExecutionLog, Zygote, free_port, open_processes, redis_server_argv
from crash_ops import Concat, Work, expected_fold

from wireframe import jobs
from wireframe.jobs import Message, open_broker

N = 300
RESTARTS = 2
CONCURRENCY = 8
READY = b"Ready to accept connections"


def private_redis(tmp_path: Path) -> tuple[list[str], int]:
    """The command line of a redis-server of the test's own (free port, AOF in tmp_path)."""
    data = tmp_path / "redis"
    data.mkdir()
    port = free_port()
    return redis_server_argv(port, data), port


@pytest.mark.slow
async def test_redis_killed_and_restarted_mid_run_loses_nothing(tmp_path: Path) -> None:
    argv, port = private_redis(tmp_path)
    url = f"redis://127.0.0.1:{port}/0?lease=1&max_deliveries=50&reconnect=30"
    log_path = tmp_path / "executions.log"
    log = ExecutionLog(log_path)
    rng = random.Random(3)
    restarts = 0
    started = time.monotonic()

    with trio.fail_after(60):
        async with open_processes(tmp_path) as procs:
            server = await procs.start(argv, name="redis", ready_marker=READY)
            await server.ready.wait()
            zygote = Zygote(procs, url, CONCURRENCY)
            await zygote.start()
            await zygote.fork()

            async def restart_redis() -> None:
                nonlocal server, restarts
                for i in range(RESTARTS):
                    at = (i + 1) * N // (RESTARTS + 1) + rng.randint(-40, 40)
                    await log.wait_until(lambda log, at=at: log.total >= at)
                    await procs.kill(server)
                    restarts += 1
                    await trio.sleep(rng.uniform(0.0, 0.3))  # down for a moment
                    server = await procs.start(argv, name="redis", ready_marker=READY)
                    await server.ready.wait()

            async with jobs.connect(url) as rt:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(restart_redis)
                    work = Work(log=str(log_path), pause=0.01)
                    result = await jobs.from_iter(range(N)).map(work).fold(Concat()).run(rt)
                    nursery.cancel_scope.cancel()
                stats = await rt.broker.stats()
                dead = await rt.broker.dead_letters()
            zygote.check_alive()

    assert restarts == RESTARTS
    assert result == expected_fold(N)
    assert [(s.queued, s.running, s.dead) for s in stats] == [(0, 0, 0)] * len(stats)
    assert dead == []
    log.poll()
    assert sorted(log.by_index) == list(range(N))
    print(
        f"redis restarted {restarts} times: {log.total} executions of {N} jobs, "
        f"{time.monotonic() - started:.1f} s"
    )


@pytest.mark.slow
async def test_receive_replies_survives_redis_dying_under_it(tmp_path: Path) -> None:
    """A ``receive_replies`` whose connection dies in flight retries; no reply is lost.

    Regression: the non-blocking receive was not retried once its request had
    been sent (its outcome unknown: the replies it popped could be lost), so a
    Redis restart failed the orchestrator's run with BrokerUnavailable. Now the
    popped replies land in an inbox the retry drains.
    """
    argv, port = private_redis(tmp_path)
    url = f"redis://127.0.0.1:{port}/0?reconnect=20"
    with trio.fail_after(30):
        async with open_processes(tmp_path) as procs:
            server = await procs.start(argv, name="redis", ready_marker=READY)
            await server.ready.wait()
            async with open_broker(url) as broker:
                await broker.publish("q", [Message("a", b"", "ch"), Message("b", b"", "ch")])
                for delivery in await broker.consume("q", 2):
                    await broker.complete(delivery, delivery.message.id.encode())
                first = await broker.receive_replies("ch", 1)  # the blocking path
                async with coredis.Redis(port=port) as admin:
                    await admin.client_pause(5000, coredis.PureToken.WRITE)
                taken: list[bytes | None] = []

                async def receive() -> None:
                    taken.extend(r.body for r in await broker.receive_replies("ch", 10))

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(receive)
                    await trio.sleep(0.3)  # the receive script waits behind the pause
                    await procs.kill(server)
                    server = await procs.start(argv, name="redis", ready_marker=READY)
    assert [r.body for r in first] + taken == [b"a", b"b"]


@pytest.mark.slow
async def test_publish_survives_redis_dying_under_it(tmp_path: Path) -> None:
    """A ``publish`` whose connection dies in flight is retried, and publishes once.

    Regression: publish was not retried once its request had been sent (a
    repeat could have added the batch twice), so a Redis restart failed the
    orchestrator's run with BrokerUnavailable. Now each publish call carries a
    token the script records: a repeat of a call that did land is a no-op.
    """
    argv, port = private_redis(tmp_path)
    url = f"redis://127.0.0.1:{port}/0?reconnect=20"
    with trio.fail_after(30):
        async with open_processes(tmp_path) as procs:
            server = await procs.start(argv, name="redis", ready_marker=READY)
            await server.ready.wait()
            async with open_broker(url) as broker:
                await broker.declare_queue("q")
                async with coredis.Redis(port=port) as admin:
                    await admin.client_pause(5000, coredis.PureToken.WRITE)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(broker.publish, "q", [Message("a", b""), Message("b", b"")])
                    await trio.sleep(0.3)  # the publish script waits behind the pause
                    await procs.kill(server)
                    server = await procs.start(argv, name="redis", ready_marker=READY)
                got = [d.message.id for d in await broker.consume("q", 10)]
                stats = await broker.stats()
    assert got == ["a", "b"]
    assert [(s.queued, s.running) for s in stats] == [(0, 2)]
