"""A worker loop that fails on a broker error retrying cannot mend restarts, and works again."""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable

import attrs
import coredis
import trio

import wireframe as wf
from wireframe import jobs


@attrs.frozen
class Shout(jobs.Operation[str, str], name="restart-shout"):
    async def execute(self, x: str) -> str:
        return x.upper()


async def test_a_worker_restarts_after_a_damaged_key_and_serves_again(
    fresh_redis_url: Callable[..., str], redis_server_url: str
) -> None:
    url = fresh_redis_url()
    prefix = urllib.parse.unquote(url.split("prefix=")[1].split("&")[0])
    ready = f"{prefix}q:default:ready"
    layer = jobs.WorkerLayer(url, restart=wf.RestartPolicy(backoff=0.2, max_backoff=0.4))
    service = wf.ServiceBuilder(handle_signals=False).add_layer(layer).build()
    restarts: list[tuple[int, str]] = []
    restarted = trio.Event()

    def seen(report: wf.TaskReport) -> None:
        if report.id == "worker:default" and report.restarts and report.last_error is not None:
            restarts.append((report.restarts, report.last_error.message))
            restarted.set()

    service.add_listener(seen)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(service.run)
        async with coredis.Redis.from_url(redis_server_url) as redis:
            with trio.fail_after(10):
                while not await redis.exists([ready]):
                    await trio.sleep(0.02)
            # a key of the wrong type where the queue's stream is: every consume fails
            await redis.delete([ready])
            await redis.set(ready, "not a stream")
            with trio.fail_after(10):
                await restarted.wait()
            await redis.delete([ready])  # mended: the next start declares the queue again
        async with jobs.connect(url) as rt:
            with trio.fail_after(15):
                handle = await rt.submit(Shout(), "back")
                assert await handle.result() == "BACK"
        report = service.status().tasks["worker:default"]
        assert report.state is wf.TaskState.RUNNING
        assert report.restarts >= 1
        assert "wrong kind of value" in restarts[0][1]
        service.stop()
    final = service.status()
    assert final.ok, final.failures


def test_the_worker_layer_restarts_by_default_and_can_be_told_not_to() -> None:
    assert jobs.WorkerLayer("memory://").restart == wf.RestartPolicy(
        max_restarts=5, window=300.0, backoff=1.0, max_backoff=30.0
    )
    assert jobs.WorkerLayer("memory://", restart=None).restart is None
