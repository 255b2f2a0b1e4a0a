"""http_health: an HTTP health endpoint as an UnconstrainedTask, on trio's own sockets.

``HealthLayer`` gives a ``Health`` resource that tasks report into;
``heartbeat`` (a Task) beats into it every 0.2 s. ``HttpHealthLayer`` gives
``health-http``, an UnconstrainedTask — it starts at once, before any
precondition, as a health endpoint must — serving ``GET /health`` with
``trio.serve_tcp`` (no HTTP library): 200 and a JSON body while the service
runs and every heartbeat is fresh, 503 once it is stopping or a beat is stale.

Run it::

    wireframe run examples/http_health.py
    curl -s localhost:8080/health

``HEALTH_PORT`` sets the port (``0`` picks a free one; the ready line says
which), ``HEALTH_SECONDS`` stops the service by itself after that long.
"""

from __future__ import annotations

import json
import math
import os

import attrs
import trio

import wireframe as wf

STALE_AFTER = 2.0  # seconds without a beat before a check counts as failing


@attrs.define
class Health:
    """A resource: the last beat of each check, and when the service started (trio clock)."""

    started: float
    beats: dict[str, float] = attrs.Factory(dict)

    def beat(self, check: str) -> None:
        """Record that ``check`` is alive now."""
        self.beats[check] = trio.current_time()

    def report(self, stopping: bool) -> tuple[int, dict[str, object]]:
        """The HTTP status and JSON body of ``GET /health``."""
        now = trio.current_time()
        checks = {name: round(now - at, 3) for name, at in self.beats.items()}
        healthy = not stopping and all(age < STALE_AFTER for age in checks.values())
        body = {
            "status": "ok" if healthy else ("stopping" if stopping else "degraded"),
            "uptime": round(now - self.started, 3),
            "seconds_since_beat": checks,
        }
        return (200 if healthy else 503), body


@attrs.define
class Heartbeat(wf.Task):
    """Beats into Health every 0.2 s; after HEALTH_SECONDS (if set) it returns, stopping the run."""

    health: Health
    seconds: float | None
    id = "heartbeat"

    async def run(self, stop: wf.StopReceiver) -> None:
        deadline = trio.current_time() + (self.seconds if self.seconds is not None else math.inf)
        while not stop.is_set and trio.current_time() < deadline:
            self.health.beat(self.id)
            with trio.move_on_after(0.2):
                await stop.wait()


@attrs.define
class HealthServer(wf.UnconstrainedTask):
    """Serves ``GET /health`` on ``port`` until the stop."""

    health: Health
    port: int
    id = "health-http"

    async def run(self, stop: wf.StopReceiver) -> None:
        async def handle(conn: trio.SocketStream) -> None:
            with trio.move_on_after(5):
                await self._answer(conn, stop)
            await trio.aclose_forcefully(conn)

        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(trio.serve_tcp, handle, self.port)
            port = listeners[0].socket.getsockname()[1]
            print(f"ready: health on http://127.0.0.1:{port}/health", flush=True)
            await stop.wait()
            nursery.cancel_scope.cancel()

    async def _answer(self, conn: trio.SocketStream, stop: wf.StopReceiver) -> None:
        request = b""
        while b"\r\n\r\n" not in request and len(request) < 8192:
            chunk = await conn.receive_some(4096)
            if not chunk:
                return
            request += chunk
        method, _, rest = request.partition(b" ")
        path = rest.split(b" ", 1)[0]
        if method != b"GET" or path != b"/health":
            status, body = 404, {"error": "not found; try GET /health"}
        else:
            status, body = self.health.report(stop.is_set)
        payload = json.dumps(body).encode()
        reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
        )
        await conn.send_all(head.encode() + payload)


@attrs.frozen
class HealthOut:
    health: Health


@attrs.frozen
class HealthLayer(wf.WiringLayer[None, HealthOut]):
    """Gives the Health resource."""

    name = "health"

    async def wire(self, input: None) -> HealthOut:
        return HealthOut(Health(trio.current_time()))


@attrs.frozen
class HttpIn:
    health: Health


@attrs.frozen
class HttpOut:
    server: HealthServer
    heartbeat: Heartbeat


@attrs.frozen
class HttpHealthLayer(wf.WiringLayer[HttpIn, HttpOut]):
    """Takes Health; gives the HTTP endpoint and a heartbeat feeding it."""

    port: int = 8080
    name = "http-health"

    async def wire(self, input: HttpIn) -> HttpOut:
        seconds = os.environ.get("HEALTH_SECONDS")
        return HttpOut(
            HealthServer(input.health, self.port),
            Heartbeat(input.health, float(seconds) if seconds else None),
        )


builder = (
    wf.ServiceBuilder(graceful_shutdown_timeout=5.0)
    .add_layer(HealthLayer())
    .add_layer(HttpHealthLayer(int(os.environ.get("HEALTH_PORT", "8080"))))
)
