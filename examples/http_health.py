"""http_health: an HTTP health endpoint as an UnconstrainedTask, on trio's own sockets.

``HealthLayer`` gives a ``Health`` resource that tasks report into;
``heartbeat`` (a Task) beats into it every 0.2 s. ``HttpHealthLayer`` takes it
and ``wf.ServiceStatus`` — the resource every service gives itself, a live view
of its own tasks — and gives ``health-http``, an UnconstrainedTask (it starts
at once, before any precondition, as a health endpoint must) serving ``GET
/health`` with ``trio.serve_tcp`` (no HTTP library): 200 and a JSON body with
every task's state while the service runs, no task has failed and every
heartbeat is fresh; 503 otherwise.

Run it::

    wireframe run examples/http_health.py
    curl -s 127.0.0.1:8080/health

It listens on 127.0.0.1 only: ``HEALTH_HOST`` sets the address to bind
(``0.0.0.0`` for every IPv4 interface), ``HEALTH_PORT`` the port (``0`` picks
a free one); the ready line says what was bound. ``HEALTH_SECONDS`` stops the
service by itself after that long.
"""

from __future__ import annotations

import functools
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

    def report(self, service: wf.ServiceStatus) -> tuple[int, dict[str, object]]:
        """The HTTP status and JSON body of ``GET /health``."""
        now = trio.current_time()
        checks = {name: round(now - at, 3) for name, at in self.beats.items()}
        tasks = {t.id: t.state.value for t in service.report().tasks.values()}
        failing = [i for i, s in tasks.items() if wf.TaskState(s).is_failure]
        running = service.phase == "running"
        healthy = running and not failing and all(age < STALE_AFTER for age in checks.values())
        body = {
            "status": "ok" if healthy else ("degraded" if running else service.phase),
            "uptime": round(now - self.started, 3),
            "tasks": tasks,
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
    service: wf.ServiceStatus
    port: int
    host: str = "127.0.0.1"
    id = "health-http"

    async def run(self, stop: wf.StopReceiver) -> None:
        async def handle(conn: trio.SocketStream) -> None:
            with trio.move_on_after(5):
                await self._answer(conn)
            await trio.aclose_forcefully(conn)

        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                functools.partial(trio.serve_tcp, handle, self.port, host=self.host)
            )
            host, port = listeners[0].socket.getsockname()[:2]  # what is bound, as bound
            shown = f"[{host}]" if ":" in host else host
            print(f"ready: health on http://{shown}:{port}/health", flush=True)
            await stop.wait()
            nursery.cancel_scope.cancel()

    async def _answer(self, conn: trio.SocketStream) -> None:
        request = b""
        while b"\r\n\r\n" not in request and len(request) < 8192:
            chunk = await conn.receive_some(4096)
            if not chunk:
                return
            request += chunk
        method, _, rest = request.partition(b" ")
        path = rest.split(b" ", 1)[0]
        body: dict[str, object]
        if method != b"GET" or path != b"/health":
            status, body = 404, {"error": "not found; try GET /health"}
        else:
            status, body = self.health.report(self.service)
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
    service: wf.ServiceStatus  # given by the service itself


@attrs.frozen
class HttpOut:
    server: HealthServer
    heartbeat: Heartbeat


@attrs.frozen
class HttpHealthLayer(wf.WiringLayer[HttpIn, HttpOut]):
    """Takes Health and the service's status; gives the HTTP endpoint and a heartbeat."""

    port: int = 8080
    host: str = "127.0.0.1"
    name = "http-health"

    async def wire(self, input: HttpIn) -> HttpOut:
        seconds = os.environ.get("HEALTH_SECONDS")
        return HttpOut(
            HealthServer(input.health, input.service, self.port, self.host),
            Heartbeat(input.health, float(seconds) if seconds else None),
        )


builder = (
    wf.ServiceBuilder(graceful_shutdown_timeout=5.0)
    .add_layer(HealthLayer())
    .add_layer(
        HttpHealthLayer(
            int(os.environ.get("HEALTH_PORT", "8080")), os.environ.get("HEALTH_HOST", "127.0.0.1")
        )
    )
)
