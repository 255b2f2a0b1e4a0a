"""The Redis broker and its workers when Redis itself fails: restarts, memory, TLS.

Every test here starts a redis-server of its own (on a free port, killed by pid
at the end) because it restarts it, fills its memory or speaks TLS to it:

* Redis restarted without its data: a busy worker's leases are ``LockLost``
  saying Redis lost the message, and the worker goes on serving (fault 2).
* Redis down for longer than the broker's ``reconnect`` window: the worker
  retries its consume and its completions, logged, and loses no result.
* ``maxmemory`` with ``noeviction``: errors are ``BrokerUnavailable`` saying
  Redis is out of memory, with the server's message; no client type escapes
  any public method (fault 3).
* TLS: a plain port and an untrusted certificate are named as such (fault 11).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import attrs
import coredis
import pytest
import trio

from wireframe import jobs
from wireframe.jobs.broker import (
    BrokerError,
    BrokerUnavailable,
    Delivery,
    Message,
    open_broker,
)
from wireframe.jobs.brokers import redis as redis_broker
from wireframe.jobs.worker import Worker

pytestmark = pytest.mark.redis

Server = Callable[..., subprocess.Popen[bytes]]
NO_DATA = ("--appendonly", "no")  # a restart of this server loses everything

#: Per test: set when the blocking operation started, set to let it finish; runs.
STARTED: dict[str, trio.Event] = {}
RELEASE: dict[str, trio.Event] = {}
RUNS: list[int] = []


@pytest.fixture(autouse=True)
def _fresh_events() -> None:
    STARTED["now"] = trio.Event()
    RELEASE["now"] = trio.Event()
    RUNS.clear()


@attrs.frozen
class OutageWait(jobs.Operation[int, int]):
    """Runs until the test releases it."""

    async def execute(self, x: int) -> int:
        RUNS.append(x)
        STARTED["now"].set()
        await RELEASE["now"].wait()
        return 2 * x


@attrs.frozen
class OutageDouble(jobs.Operation[int, int]):
    async def execute(self, x: int) -> int:
        return 2 * x


async def until_up(port: int) -> None:
    """Return once the server on ``port`` answers PING."""
    with trio.fail_after(10):
        while True:
            try:
                async with coredis.Redis(port=port) as client:
                    await client.ping()
                return
            except (coredis.exceptions.RedisError, OSError):
                await trio.sleep(0.02)


async def start(redis_server: Server, *extra: str) -> subprocess.Popen[bytes]:
    proc = redis_server(*extra)
    await until_up(redis_server.port)  # type: ignore[attr-defined]
    return proc


async def kill(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    await trio.to_thread.run_sync(proc.wait)


async def until_logged(caplog: pytest.LogCaptureFixture, text: str) -> None:
    while not any(text in r.getMessage() for r in caplog.records):
        await trio.sleep(0.005)


# -- restarts -----------------------------------------------------------------------------


async def test_worker_goes_on_after_redis_restarts_without_its_data(
    redis_server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "wireframe.jobs.worker")
    proc = await start(redis_server, *NO_DATA)
    url = f"redis://127.0.0.1:{redis_server.port}/0?lease=1&reconnect=10"  # type: ignore[attr-defined]
    with trio.fail_after(30):
        async with open_broker(url) as wb, jobs.connect(url) as rt, trio.open_nursery() as n:
            worker = Worker(wb, concurrency=2, renew_every=0.05)
            await n.start(worker.serve)
            lost_run = trio.CancelScope()

            async def run_lost() -> None:
                with lost_run:
                    await jobs.literal(1).then(OutageWait()).run(rt)

            n.start_soon(run_lost)
            await STARTED["now"].wait()
            await kill(proc)
            proc = await start(redis_server, *NO_DATA)  # empty: the job is gone
            await until_logged(caplog, "Redis no longer has")
            assert worker.statistics().lost >= 1
            RELEASE["now"].set()  # its completion is dropped too
            lost_run.cancel()  # (noticing a run whose jobs vanished is the runtime's part)
            assert await jobs.literal(5).then(OutageDouble()).run(rt) == 10
            worker.stop()
    assert RUNS == [1]


async def test_worker_retries_while_redis_is_down_and_loses_no_result(
    redis_server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """Down longer than the worker's ``reconnect``: its consume and its completion fail
    with BrokerUnavailable, are logged and retried; the result arrives once Redis is
    back (with its data: AOF), and the job ran once."""
    caplog.set_level(logging.WARNING, "wireframe.jobs.worker")
    proc = await start(redis_server)
    base = f"redis://127.0.0.1:{redis_server.port}/0?lease=30"  # type: ignore[attr-defined]
    with trio.fail_after(30):
        async with (
            open_broker(base + "&reconnect=0.1") as wb,
            jobs.connect(base + "&reconnect=20") as rt,
            trio.open_nursery() as n,
        ):
            worker = Worker(wb, concurrency=2)
            await n.start(worker.serve)
            results: list[int] = []

            async def run() -> None:
                results.append(await jobs.literal(4).then(OutageWait()).run(rt))

            n.start_soon(run)
            await STARTED["now"].wait()
            await kill(proc)
            RELEASE["now"].set()
            await until_logged(caplog, "completion of message")
            await until_logged(caplog, "consume failed, retrying")
            proc = await start(redis_server)
            while not results:
                await trio.sleep(0.01)
            assert await jobs.literal(5).then(OutageDouble()).run(rt) == 10
            worker.stop()
    assert results == [8]
    assert RUNS == [4]


async def test_a_subscription_goes_on_across_redis_restarts(redis_server: Server) -> None:
    """Regression: coredis' own iterator ended (StopAsyncIteration) when a message
    came while it re-subscribed after a reconnect, so a worker stopped hearing aborts."""
    proc = await start(redis_server, *NO_DATA)
    url = f"redis://127.0.0.1:{redis_server.port}/0?reconnect=5"  # type: ignore[attr-defined]
    async with open_broker(url) as broker, broker.subscribe("t") as bodies:

        async def keep_broadcasting(body: bytes) -> None:
            while True:
                await broker.broadcast("t", body)
                await trio.sleep(0.01)

        for n in range(3):
            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(keep_broadcasting, b"%d" % n)
                    while await bodies.__anext__() != b"%d" % n:
                        pass
                    nursery.cancel_scope.cancel()
            await kill(proc)
            proc = await start(redis_server, *NO_DATA)


async def test_stop_ends_a_worker_that_waits_for_redis(
    redis_server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "wireframe.jobs.worker")
    proc = await start(redis_server)
    url = f"redis://127.0.0.1:{redis_server.port}/0?reconnect=0.1"  # type: ignore[attr-defined]
    async with open_broker(url) as wb:
        worker = Worker(wb)
        with trio.fail_after(10):
            async with trio.open_nursery() as n:
                await n.start(worker.serve)
                await kill(proc)
                await until_logged(caplog, "consume failed, retrying")
                worker.stop()  # serve returns at once


# -- out of memory (fault 3) ------------------------------------------------------------------


async def out_of_memory(port: int) -> None:
    async with coredis.Redis(port=port) as admin:
        await admin.config_set({"maxmemory": "1", "maxmemory-policy": "noeviction"})


OOM = r"Redis is out of memory \(maxmemory reached with policy noeviction\): OOM command not"


async def test_out_of_memory_is_broker_unavailable_with_the_server_message(
    redis_server: Server,
) -> None:
    await start(redis_server, *NO_DATA)
    port = redis_server.port  # type: ignore[attr-defined]
    url = f"redis://127.0.0.1:{port}/0?reconnect=0.2"
    async with open_broker(url) as broker, open_broker(url) as fresh:
        await broker.publish("q", [Message("a", b"", "ch")])
        [d] = await broker.consume("q", 1)
        await out_of_memory(port)
        with pytest.raises(BrokerUnavailable, match=OOM):
            await broker.declare_queue("new")
        with pytest.raises(BrokerUnavailable, match=OOM):
            await fresh.publish("q", [Message("b", b"")])
        # receive waits on (Redis refuses its blocking read); the worker side can
        # still complete, and its reply arrives
        with trio.move_on_after(0.3):
            await broker.receive_replies("ch", 10)
        await broker.complete(d, b"done")
        with trio.fail_after(5):
            [reply] = await broker.receive_replies("ch", 10)
        assert reply.body == b"done"
        async with coredis.Redis(port=port) as admin:
            await admin.config_set({"maxmemory": "0"})
        await fresh.publish("q", [Message("b", b"")])  # transient: it passed


async def _every_public_call(broker: redis_broker.RedisBroker) -> dict[str, BaseException | None]:
    """Call each public method once; what each raised (None: it returned)."""
    fake = Delivery(Message("x", b"", "ch"), "q", 1, "1-0|1|someone", 0.0)

    async def subscribe() -> None:
        async with broker.subscribe("t") as bodies:
            with trio.move_on_after(0.05):
                await bodies.__anext__()

    calls = {
        "ping": broker.ping,
        "declare_queue": lambda: broker.declare_queue("other"),
        "publish": lambda: broker.publish("other", [Message("m", b"")]),
        "publish delayed": lambda: broker.publish("other", [Message("m", b"")], delay=1),
        "consume": lambda: broker.consume("q", 5),
        "complete": lambda: broker.complete(fake, b""),
        "abandon": lambda: broker.abandon(fake),
        "extend": lambda: broker.extend(fake),
        "dead_letter": lambda: broker.dead_letter(fake, "why"),
        "receive_replies": lambda: broker.receive_replies("ch", 5),
        "delete_channel": lambda: broker.delete_channel("ch"),
        "broadcast": lambda: broker.broadcast("t", b"x"),
        "subscribe": subscribe,
        "stats": broker.stats,
        "dead_letters": broker.dead_letters,
        "requeue_dead": broker.requeue_dead,
        "purge": broker.purge,
        "delete_queue": lambda: broker.delete_queue("other"),
    }
    raised: dict[str, BaseException | None] = {}
    for name, call in calls.items():
        raised[name] = None
        with trio.move_on_after(1):
            try:
                await call()
            except Exception as exc:  # what leaves is what this test checks
                raised[name] = exc
    return raised


async def test_no_client_error_type_escapes_under_oom_or_without_redis(
    redis_server: Server,
) -> None:
    proc = await start(redis_server, *NO_DATA)
    port = redis_server.port  # type: ignore[attr-defined]
    async with open_broker(f"redis://127.0.0.1:{port}/0?reconnect=0.2") as broker:
        assert isinstance(broker, redis_broker.RedisBroker)
        await broker.publish("q", [Message("a", b"", "ch")], delay=0.001)
        await out_of_memory(port)
        under_oom = await _every_public_call(broker)
        await kill(proc)
        without = await _every_public_call(broker)
    for name, exc in [*under_oom.items(), *without.items()]:
        assert exc is None or isinstance(exc, BrokerError), f"{name} raised {exc!r}"
    assert isinstance(under_oom["declare_queue"], BrokerUnavailable)
    assert "out of memory" in str(under_oom["declare_queue"])
    assert {n for n, e in without.items() if not isinstance(e, BrokerUnavailable)} == set()


async def test_a_subscription_lets_the_blocks_own_error_out_bare(
    fresh_redis_url: Callable[..., str],
) -> None:
    async with open_broker(fresh_redis_url()) as broker:
        with pytest.raises(KeyError, match="mine"):
            async with broker.subscribe("t"):
                raise KeyError("mine")


# -- TLS (fault 11) ---------------------------------------------------------------------------


async def test_rediss_to_a_plain_port_says_the_server_does_not_speak_tls(
    redis_server: Server,
) -> None:
    await start(redis_server, *NO_DATA)
    port = redis_server.port  # type: ignore[attr-defined]
    async with open_broker(f"rediss://127.0.0.1:{port}/0?reconnect=0.5") as broker:
        with trio.fail_after(20):
            with pytest.raises(BrokerError, match="speak TLS") as ping:
                await broker.ping()
            with pytest.raises(BrokerError, match="speak TLS") as publish:
                await broker.publish("q", [Message("a", b"")])
    assert "plain Redis port" in str(ping.value)
    assert "publish failed" in str(publish.value)


def _self_signed(directory: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not on PATH: cannot make a certificate for a TLS Redis")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=DNS:localhost"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_rediss_with_an_untrusted_certificate_says_verification_failed(
    redis_server: Server, tmp_path: Path
) -> None:
    cert, key = _self_signed(tmp_path)
    port = redis_server.port  # type: ignore[attr-defined]
    proc = redis_server(
        *NO_DATA,
        *("--port", "0", "--tls-port", str(port), "--tls-auth-clients", "no"),
        *("--tls-cert-file", str(cert), "--tls-key-file", str(key)),
    )
    trusted = f"rediss://localhost:{port}/0?reconnect=0.5&tls_ca={cert}"
    async with open_broker(trusted) as broker:
        with trio.fail_after(10):
            while True:  # until the TLS server is up: then this setup works
                if proc.poll() is not None:
                    pytest.skip("this redis-server exited at once: it does not support TLS")
                try:
                    await broker.ping()
                    break
                except BrokerUnavailable:
                    await trio.sleep(0.05)
    untrusted = f"rediss://localhost:{port}/0?reconnect=0.5"
    wrong_name = f"rediss://127.0.0.1:{port}/0?reconnect=0.5&tls_ca={cert}"
    for url, why in [
        (untrusted, "certificate verification failed: self-signed certificate (trust its CA"),
        (wrong_name, "host name verification failed: IP address mismatch"),
    ]:
        async with open_broker(url) as broker:
            for call in (broker.ping, lambda b=broker: b.declare_queue("q")):
                with pytest.raises(BrokerError, match="verification failed") as info:
                    await call()
                assert not isinstance(info.value, BrokerUnavailable)  # waiting cannot help
                assert why in str(info.value)
