"""The health endpoints over HTTP: ``/livez``, ``/readyz``, ``/status`` and ``/metrics``.

:class:`HealthLayer` listens while the layer is wired and serves from its
lifetime, not from a task: the endpoints answer from the moment wiring reaches
the layer until the service has shut down, so a load balancer sees ``/readyz``
turn 503 when the stop arrives and keeps getting that answer while the
service drains — a task would have been stopped with the rest.

HTTP is parsed by h11 (what trio's own examples use), never by hand; each
connection is a task of the server's nursery, reads are bounded by a timeout
(a client that sends nothing cannot hold a connection) and bodies are
ignored: these are GET endpoints.
"""

from __future__ import annotations

import errno
import json
from collections.abc import AsyncIterator
from typing import Any

import attrs
import h11
import trio

from wireframe.service.health import MetricsExposition, readiness, status_json
from wireframe.service.layers import WiringLayer
from wireframe.service.status import ServiceStatus

__all__ = ["HealthEndpoint", "HealthInput", "HealthLayer", "HealthOutput"]

_READ_TIMEOUT = 10.0
_MAX_REQUEST = 16 * 1024
_JSON = "application/json"


@attrs.frozen
class HealthEndpoint:
    """Where the health endpoints listen (``port`` is the bound one, also when asked for 0)."""

    host: str
    port: int

    @property
    def url(self) -> str:
        """``http://host:port``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


@attrs.frozen
class HealthInput:
    """What :class:`HealthLayer` takes: the service's own status, and metrics if given."""

    status: ServiceStatus
    metrics: MetricsExposition | None = None


@attrs.frozen
class HealthOutput:
    """What :class:`HealthLayer` gives: where it listens."""

    endpoint: HealthEndpoint


def _port(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ValueError(f"HealthLayer port must be an int from 0 to 65535, got {value!r}")


@attrs.frozen
class HealthLayer(WiringLayer[HealthInput, HealthOutput]):
    """Serves ``/livez``, ``/readyz``, ``/status`` and ``/metrics`` on ``host:port``.

    Binds to 127.0.0.1 unless told otherwise (a health port is no business of
    the internet). ``port=0`` takes a free port (see :class:`HealthEndpoint`).
    A port already in use fails the wiring with a message naming it.
    """

    host: str = "127.0.0.1"
    port: int = attrs.field(default=8000, validator=_port)
    name: str = "health"

    async def wire(self, input: HealthInput) -> AsyncIterator[HealthOutput]:
        """Listen, serve from the lifetime, and close the listeners at shutdown."""
        try:
            listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        except OSError as exc:
            raise OSError(exc.errno, _listen_error(self.host, self.port, exc)) from None
        sockname = listeners[0].socket.getsockname()
        endpoint = HealthEndpoint(self.host, int(sockname[1]))
        app = _HealthApp(input.status, input.metrics)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, app.serve_connection, listeners)
            try:
                yield HealthOutput(endpoint)
            finally:
                nursery.cancel_scope.cancel()


def _listen_error(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (
            f"health endpoint cannot listen on {host}:{port}: the port is in use by another "
            "process; choose another port (HealthLayer(port=...) or --health-port)"
        )
    return f"health endpoint cannot listen on {host}:{port}: {exc.strerror or exc}"


@attrs.define
class _HealthApp:
    status: ServiceStatus
    metrics: MetricsExposition | None

    async def serve_connection(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_REQUEST)
        try:
            while True:
                request = await self._next_request(conn, stream)
                if request is None:
                    return
                status, content_type, body = await self._answer(request)
                head_only = request.method == b"HEAD"
                await self._send(conn, stream, status, content_type, body, head_only)
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (h11.ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            return
        finally:
            await stream.aclose()

    async def _next_request(
        self, conn: h11.Connection, stream: trio.SocketStream
    ) -> h11.Request | None:
        request: h11.Request | None = None
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                with trio.move_on_after(_READ_TIMEOUT) as scope:
                    data = await stream.receive_some(_MAX_REQUEST)
                if scope.cancelled_caught:
                    return None
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.EndOfMessage):
                return request
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None

    async def _answer(self, request: h11.Request) -> tuple[int, str, bytes]:
        path = request.target.split(b"?", 1)[0]
        if request.method not in (b"GET", b"HEAD"):
            return 405, _JSON, _dump({"error": "only GET and HEAD are served here"})
        if path == b"/livez":
            return 200, _JSON, _dump({"live": True, "phase": self.status.phase})
        if path == b"/readyz":
            answer = await readiness(self.status)
            return (200 if answer.ready else 503), _JSON, _dump(answer.to_json())
        if path == b"/status":
            return 200, _JSON, _dump(status_json(self.status.report(), self.status.phase))
        if path == b"/metrics":
            if self.metrics is None:
                return (
                    404,
                    _JSON,
                    _dump(
                        {
                            "error": "no metrics: install wireframe[telemetry] and add "
                            "wireframe.telemetry.TelemetryLayer() to the service"
                        }
                    ),
                )
            body, content_type = self.metrics.prometheus_text()
            return 200, content_type, body
        known = ["/livez", "/readyz", "/status", "/metrics"]
        return 404, _JSON, _dump({"error": "not found", "endpoints": known})

    @staticmethod
    async def _send(
        conn: h11.Connection,
        stream: trio.SocketStream,
        status: int,
        content_type: str,
        body: bytes,
        head_only: bool,
    ) -> None:
        headers = [
            ("content-type", content_type),
            ("content-length", str(len(body))),
            ("cache-control", "no-store"),
        ]
        data = conn.send(h11.Response(status_code=status, headers=headers))
        if not head_only:
            data = (data or b"") + (conn.send(h11.Data(data=body)) or b"")
        data = (data or b"") + (conn.send(h11.EndOfMessage()) or b"")
        await stream.send_all(data)


def _dump(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
