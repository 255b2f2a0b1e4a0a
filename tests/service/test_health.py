"""Health checks and the health endpoints, over real sockets."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Callable

import attrs
import pytest
import trio
from layerkit import TasksLayer, forever, make_task

import wireframe as wf

K = wf.TaskKind


async def http_get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request over a fresh connection; (status, headers, body)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        request = f"{method} {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n"
        await stream.send_all(request.encode())
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    return status, headers, body


@attrs.frozen
class ChecksOut:
    db: wf.HealthCheck
    more: list[wf.HealthCheck]


@attrs.define
class Switch:
    healthy: bool = True
    hang: bool = False


@attrs.frozen
class ChecksLayer(wf.WiringLayer[None, ChecksOut]):
    switch: Switch
    name: str = "checks"

    async def wire(self, input: None) -> ChecksOut:
        async def db() -> None:
            if not self.switch.healthy:
                raise ConnectionError("database refused the connection")

        async def cache() -> None:
            if self.switch.hang:
                await trio.sleep_forever()

        return ChecksOut(
            wf.HealthCheck("db", db),
            [wf.HealthCheck("cache", cache, timeout=0.2)],
        )


@attrs.frozen
class EndpointIn:
    endpoint: wf.HealthEndpoint


@attrs.frozen
class Probe(wf.WiringLayer[EndpointIn, None]):
    """Hands the bound endpoint to the test."""

    found: Callable[[wf.HealthEndpoint], None]
    name: str = "probe"

    async def wire(self, input: EndpointIn) -> None:
        self.found(input.endpoint)


async def running_service(
    nursery: trio.Nursery, *layers: wf.WiringLayer[object, object]
) -> tuple[wf.Service, int]:
    endpoints: list[wf.HealthEndpoint] = []
    found = trio.Event()

    def seen(endpoint: wf.HealthEndpoint) -> None:
        endpoints.append(endpoint)
        found.set()

    builder = wf.ServiceBuilder(handle_signals=False, graceful_shutdown_timeout=5)
    for layer in (*layers, wf.HealthLayer(port=0), Probe(seen)):
        builder.add_layer(layer)
    service = builder.build()
    nursery.start_soon(service.run)
    with trio.fail_after(5):
        await found.wait()
    return service, endpoints[0].port


@pytest.fixture
async def health() -> AsyncIterator[tuple[wf.Service, int, Switch]]:
    switch = Switch()
    async with trio.open_nursery() as nursery:
        service, port = await running_service(
            nursery,
            TasksLayer([make_task(K.TASK, "main", forever, [])]),
            ChecksLayer(switch),
        )
        with trio.fail_after(5):
            while service.phase != "running":
                await trio.sleep(0.01)
        yield service, port, switch
        service.stop()


async def test_livez_and_readyz_answer_when_all_is_well(
    health: tuple[wf.Service, int, Switch],
) -> None:
    _, port, _ = health
    status, headers, body = await http_get(port, "/livez")
    assert status == 200 and json.loads(body)["live"] is True
    assert headers["content-type"] == "application/json"
    status, _, body = await http_get(port, "/readyz")
    answer = json.loads(body)
    assert status == 200, answer
    assert answer["ready"] is True
    assert set(answer["checks"]) == {"db", "cache"}


async def test_a_failing_check_makes_readyz_503_naming_it(
    health: tuple[wf.Service, int, Switch],
) -> None:
    _, port, switch = health
    switch.healthy = False
    status, _, body = await http_get(port, "/readyz")
    answer = json.loads(body)
    assert status == 503
    assert answer["ready"] is False
    assert answer["checks"]["db"] == {
        "ok": False,
        "error": "ConnectionError: database refused the connection",
        "seconds": answer["checks"]["db"]["seconds"],
    }
    assert answer["reasons"] == [
        "check 'db' failed: ConnectionError: database refused the connection"
    ]
    status, _, _ = await http_get(port, "/livez")
    assert status == 200  # a failing dependency is not a reason to restart the process


async def test_a_hanging_check_times_out_and_the_endpoint_still_answers(
    health: tuple[wf.Service, int, Switch],
) -> None:
    _, port, switch = health
    switch.hang = True
    with trio.fail_after(3):
        status, _, body = await http_get(port, "/readyz")
    assert status == 503
    assert json.loads(body)["checks"]["cache"]["error"] == "did not answer within 0.2 s"


async def test_status_is_the_service_report_as_json(
    health: tuple[wf.Service, int, Switch],
) -> None:
    _, port, _ = health
    status, _, body = await http_get(port, "/status")
    data = json.loads(body)
    assert status == 200
    assert data["phase"] == "running"
    assert data["tasks"]["main"]["state"] == "running"
    assert data["tasks"]["main"]["restarts"] == 0


async def test_unknown_paths_methods_and_head(health: tuple[wf.Service, int, Switch]) -> None:
    _, port, _ = health
    status, _, body = await http_get(port, "/nope")
    assert status == 404 and "/readyz" in json.loads(body)["endpoints"]
    status, _, _ = await http_get(port, "/livez", method="POST")
    assert status == 405
    status, headers, body = await http_get(port, "/livez", method="HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0
    status, _, body = await http_get(port, "/metrics")
    assert status == 404 and "wireframe[telemetry]" in json.loads(body)["error"]


async def test_garbage_and_silence_do_not_hurt_the_server(
    health: tuple[wf.Service, int, Switch],
) -> None:
    _, port, _ = health
    garbage = await trio.open_tcp_stream("127.0.0.1", port)
    await garbage.send_all(b"\x00\x01 not http at all\r\n\r\n")
    silent = await trio.open_tcp_stream("127.0.0.1", port)  # sends nothing
    status, _, _ = await http_get(port, "/livez")
    assert status == 200
    await garbage.aclose()
    await silent.aclose()


async def test_readyz_says_not_ready_while_stopping_and_before_the_barrier() -> None:
    gate = trio.Event()

    async def slow_precondition(stop: wf.StopReceiver) -> None:
        await gate.wait()

    async def slow_to_stop(stop: wf.StopReceiver) -> None:
        await stop.wait()
        await trio.sleep(0.5)

    async with trio.open_nursery() as nursery:
        service, port = await running_service(
            nursery,
            TasksLayer(
                [
                    make_task(K.PRECONDITION, "warmup", slow_precondition, []),
                    make_task(K.TASK, "main", slow_to_stop, []),
                ]
            ),
        )
        status, _, body = await http_get(port, "/readyz")
        assert status == 503
        assert "preconditions have not all returned" in json.loads(body)["reasons"]
        gate.set()
        with trio.fail_after(5):
            while not service.barrier_open:
                await trio.sleep(0.01)
        assert (await http_get(port, "/readyz"))[0] == 200
        service.stop()
        status, _, body = await http_get(port, "/readyz")
        assert status == 503
        assert json.loads(body)["reasons"][0].startswith("the service is stopping")


async def test_a_failed_restarting_task_is_reported_in_status() -> None:
    calls = 0

    async def flaky(stop: wf.StopReceiver) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("first try fails")
        await stop.wait()

    task = make_task(K.TASK, "consumer", flaky, [])
    task.restart = wf.RestartPolicy(backoff=0.01)  # type: ignore[attr-defined]
    async with trio.open_nursery() as nursery:
        service, port = await running_service(nursery, TasksLayer([task]))
        with trio.fail_after(5):
            while calls < 2:
                await trio.sleep(0.01)
        data = json.loads((await http_get(port, "/status"))[2])
        consumer = data["tasks"]["consumer"]
        assert consumer["restarts"] == 1
        assert consumer["last_error"] == {"type": "ConnectionError", "message": "first try fails"}
        service.stop()


async def test_a_port_in_use_fails_the_wiring_naming_the_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        builder = wf.ServiceBuilder(handle_signals=False)
        builder.add_layer(TasksLayer([make_task(K.TASK, "main", forever, [])]))
        builder.add_layer(wf.HealthLayer(port=port))
        with pytest.raises(wf.WiringError) as info:
            await builder.build().run()
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message and "in use" in message
    assert [p.layer for p in info.value.problems] == ["health"]


async def nothing() -> None:
    await trio.lowlevel.checkpoint()


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: wf.HealthCheck("", nothing), "name"),
        (lambda: wf.HealthCheck("db", nothing, timeout=0), "timeout"),
        (lambda: wf.HealthCheck("db", nothing, timeout=float("nan")), "timeout"),
        (lambda: wf.HealthLayer(port=70000), "port"),
        (lambda: wf.HealthLayer(port=-1), "port"),
    ],
)
def test_bad_health_settings_are_refused(make: Callable[[], object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_a_layer_may_not_take_a_health_check_as_input() -> None:
    @attrs.frozen
    class In:
        check: wf.HealthCheck

    @attrs.frozen
    class Bad(wf.WiringLayer[In, None]):
        name = "bad"

        async def wire(self, input: In) -> None:
            return None

    with pytest.raises(wf.WiringError, match="health check"):
        wf.ServiceBuilder(handle_signals=False).add_layer(Bad()).build()
