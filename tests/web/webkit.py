"""What the dashboard's tests share: real data made by real workers, the app served over HTTP.

:func:`populate` drives a broker the way a deployment would: jobs submitted
through a runtime and run by an in-process :class:`jobs.Worker` (one that
succeeds, one that fails with ``<script>`` in its error), a message no worker
can decode (the worker dead-letters it), and an orchestration run by an
in-process :class:`durable.OrchestrationWorker` to completion with an event.
:func:`served` serves ``wireframe.web.app`` with Hypercorn's trio worker on a
free port; :func:`get` is a plain HTTP GET (urllib, on a thread) against it.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from wireframe import durable, jobs
from wireframe.jobs.broker import Message
from wireframe.web import app, serve

SCRIPT = "<script>document.title='pwned'</script>"


@attrs.frozen
class WebAddOne(jobs.Operation[int, int], name="web-tests.add-one"):
    def execute(self, x: int) -> int:
        return x + 1


@attrs.frozen
class WebBoom(jobs.Operation[str, None], name="web-tests.boom"):
    async def execute(self, text: str) -> None:
        raise jobs.Fatal(text)


@durable.orchestrator(name="web-tests.greet")
async def greet(ctx: durable.Context, who: str) -> str:
    ctx.set_status({"step": "adding"})
    n = await ctx.call(WebAddOne(), len(who))
    ctx.set_status({"step": "waiting"})
    extra = await ctx.wait_for_event("go")
    ctx.set_status({"step": "done"})
    return f"{who}:{n}:{extra}"


@attrs.frozen
class Made:
    """What :func:`populate` made, for the tests to look for."""

    ok_job: str
    failed_job: str
    dead_message: str  # dead-lettered by the worker (undecodable), on queue "parked"
    instance: str


async def populate(url: str) -> Made:
    """Real data on ``url``: see the module doc. Returns when all of it is final."""
    async with jobs.connect(url) as rt, trio.open_nursery() as nursery:
        broker = rt.broker
        worker = jobs.Worker(broker, concurrency=4)
        await nursery.start(worker.serve)
        parked = jobs.Worker(broker, queue="parked", concurrency=1)
        await nursery.start(parked.serve)
        await nursery.start(durable.OrchestrationWorker(broker, concurrency=2).serve)

        ok = await rt.submit(WebAddOne(), 41, key="answer")
        assert await ok.result(timeout=30) == 42
        failed = await rt.submit(WebBoom(), SCRIPT)
        try:
            await failed.result(timeout=30)
        except jobs.JobFailed:
            pass
        await broker.publish("parked", [Message("undecodable-1", b"\x93not a job")])
        with trio.fail_after(30):
            while not await broker.dead_letters("parked"):
                await trio.sleep(0.05)

        client = durable.Client(broker)
        iid = await client.start(greet, "ada", instance_id="greet-ada")
        inst = await client.wait_started(iid, timeout=30)
        with trio.fail_after(30):  # the event after the activity: the timeline's order is fixed
            while inst.custom_status != {"step": "waiting"}:
                inst = await client.store.wait_changed(iid, inst.revision)
        await client.raise_event(iid, "go", "now")
        inst = await client.wait_completed(iid, timeout=30)
        assert inst.output == "ada:4:now", inst
        nursery.cancel_scope.cancel()
    return Made(ok.id, failed.id, "undecodable-1", iid)


@asynccontextmanager
async def served(url: str, **options: Any) -> AsyncIterator[str]:
    """``wireframe.web.app(url, **options)`` served on 127.0.0.1:<free port>; its base URL."""
    application = app(url, **options)
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(
            lambda task_status: serve(
                application, host="127.0.0.1", port=0, task_status=task_status
            )
        )
        yield bound[0]
        nursery.cancel_scope.cancel()


@attrs.frozen
class Answer:
    status: int
    headers: dict[str, str]
    text: str


def _fetch(url: str, headers: dict[str, str], data: bytes | None) -> Answer:
    request = urllib.request.Request(url, headers=headers, data=data)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read().decode()
            return Answer(response.status, dict(response.headers.items()), body)
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, dict(exc.headers.items()), exc.read().decode())


async def get(url: str, headers: dict[str, str] | None = None) -> Answer:
    """GET ``url`` over real HTTP (urllib on a thread): status, headers, text."""
    return await trio.to_thread.run_sync(_fetch, url, headers or {}, None)


async def post(url: str, form: dict[str, str], headers: dict[str, str] | None = None) -> Answer:
    """POST ``form`` (urlencoded) to ``url`` over real HTTP; redirects followed."""
    data = urllib.parse.urlencode(form).encode()
    return await trio.to_thread.run_sync(_fetch, url, headers or {}, data)
