"""background: a web endpoint hands work to the background; another reads it back by id.

``POST /thumbnails/NAME`` submits one job (``Runtime.submit``) and answers at
once, 202 with the job's id; ``GET /jobs/ID`` reads the job by id
(``Runtime.handle``) from the broker: its status and, once it has finished, its
result or error. The job's state lives in the broker, not in the web process,
so any replica of the web service can answer for any job, and a restart
forgets nothing. Submitting the same NAME again while its job is still waiting
or running returns that job (the NAME is the job's dedup ``key``).

Run it (a worker runs in the same service here; in production, run workers
apart with ``wireframe worker --broker URL --import examples/background.py``)::

    wireframe run examples/background.py
    curl -s -X POST 127.0.0.1:8081/thumbnails/cat.png
    curl -s 127.0.0.1:8081/jobs/ID

``BACKGROUND_BROKER`` is the broker URL (default: the embedded SQLite file
``jobs.DEFAULT_URL``), ``BACKGROUND_PORT`` the port (``0`` picks a free one;
the ready line says which), ``BACKGROUND_SECONDS`` stops the service by itself
after that long. It listens on 127.0.0.1 only. The HTTP is the least that
shows the pattern (a request line in, JSON out), on trio's own sockets.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time

import attrs
import trio

import wireframe as wf
from wireframe import jobs


@attrs.frozen
class MakeThumbnail(jobs.Operation[str, str], name="background.thumbnail", time_limit=60.0):
    """The background work: a plain (blocking) function, run in a worker thread."""

    def execute(self, name: str) -> str:
        time.sleep(0.2)  # stands in for decoding and scaling an image
        if not name.endswith((".png", ".jpg")):
            raise ValueError(f"{name!r} is not an image (expected .png or .jpg)")
        return f"thumbnails/{name}"


async def answer(runtime: jobs.Runtime, method: bytes, path: str) -> tuple[int, dict[str, object]]:
    """The HTTP status and JSON body for one request."""
    if method == b"POST" and path.startswith("/thumbnails/"):
        name = path.removeprefix("/thumbnails/")
        handle = await runtime.submit(MakeThumbnail(), name, key=f"thumbnail:{name}")
        return 202, {"job": handle.id, "status": (await handle.status()).value}
    if method == b"GET" and path.startswith("/jobs/"):
        handle = runtime.handle(path.removeprefix("/jobs/"))
        try:
            status = await handle.status()
        except jobs.UnknownJob as exc:
            return 404, {"error": str(exc)}
        body: dict[str, object] = {"job": handle.id, "status": status.value}
        if status is jobs.JobStatus.SUCCEEDED:
            body["result"] = await handle.result()
        elif status in (jobs.JobStatus.FAILED, jobs.JobStatus.DEAD):
            try:
                await handle.result()
            except jobs.JobFailed as exc:
                body["error"] = f"{exc.error.type_name}: {exc.error.message}"
        return 200, body
    return 404, {"error": "try POST /thumbnails/NAME or GET /jobs/ID"}


@attrs.define
class WebServer(wf.Task):
    """Serves the two endpoints on ``port`` until the stop (after the broker is reachable)."""

    runtime: jobs.Runtime
    port: int
    seconds: float = math.inf
    id = "web"

    async def run(self, stop: wf.StopReceiver) -> None:
        """Listen, say where, answer requests until the stop (or ``seconds``)."""
        async with trio.open_nursery() as nursery:
            serve = functools.partial(trio.serve_tcp, self._handle, self.port, host="127.0.0.1")
            listeners = await nursery.start(serve)
            port = listeners[0].socket.getsockname()[1]
            print(f"ready: background jobs on http://127.0.0.1:{port}", flush=True)
            with trio.move_on_after(self.seconds):
                await stop.wait()
            nursery.cancel_scope.cancel()

    async def _handle(self, conn: trio.SocketStream) -> None:
        with trio.move_on_after(10):
            request = b""
            while b"\r\n\r\n" not in request and len(request) < 8192:
                chunk = await conn.receive_some(4096)
                if not chunk:
                    return
                request += chunk
            method, _, rest = request.partition(b" ")
            path = rest.split(b" ", 1)[0].decode("ascii", "replace")
            status, body = await answer(self.runtime, method, path)
            payload = json.dumps(body).encode()
            reason = {200: "OK", 202: "Accepted", 404: "Not Found"}[status]
            head = (
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
            )
            await conn.send_all(head.encode() + payload)
        await trio.aclose_forcefully(conn)


@attrs.frozen
class WebIn:
    runtime: jobs.Runtime


@attrs.frozen
class WebOut:
    web: WebServer


@attrs.frozen
class WebLayer(wf.WiringLayer[WebIn, WebOut]):
    """Gives the web server task; takes the job runtime."""

    port: int
    seconds: float = math.inf
    name = "web"

    async def wire(self, input: WebIn) -> WebOut:
        return WebOut(WebServer(input.runtime, self.port, self.seconds))


URL = os.environ.get("BACKGROUND_BROKER", jobs.DEFAULT_URL)
builder = (
    wf.ServiceBuilder(graceful_shutdown_timeout=5.0)
    .add_layer(jobs.JobRuntimeLayer(URL))
    .add_layer(jobs.WorkerLayer(URL, concurrency=4))
    .add_layer(
        WebLayer(
            port=int(os.environ.get("BACKGROUND_PORT", "8081")),
            seconds=float(os.environ.get("BACKGROUND_SECONDS", "inf")),
        )
    )
)

if __name__ == "__main__":
    wf.run(builder)
