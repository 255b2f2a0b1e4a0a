"""Signals stop a service: in this process (the service's own handlers and its stop
listeners), and in a real process running an example."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import trio
import trio.testing
from layerkit import TasksLayer, ignores_stop, make_task, service_of

import wireframe as wf

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


async def run_until_ready_then_signal(*signums: signal.Signals) -> tuple[int, str]:
    """Start examples/hello.py, wait for its ready line, send the signals, collect output."""
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-u", str(EXAMPLES / "hello.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    output = b""
    try:
        with trio.fail_after(30):
            while b"ready:" not in output:
                chunk = await proc.stdout.receive_some()
                assert chunk, f"hello.py exited before it was ready:\n{output.decode()}"
                output += chunk
            for signum in signums:
                proc.send_signal(signum)
            async for chunk in proc.stdout:
                output += chunk
            code = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return code, output.decode()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_signal_stops_example_cleanly(signum: signal.Signals) -> None:
    code, output = await run_until_ready_then_signal(signum)
    assert code == 0, output
    assert f"clean stop (received {signum.name})" in output
    assert "greeter=stopped" in output and "watchdog=stopped" in output
    assert output.index("greeter: stopping") < output.index("config: closed")


async def test_stop_listeners_hear_every_request_and_whether_it_forced(
    autojump_clock: trio.testing.MockClock,
) -> None:
    events: list[str] = []
    service = service_of(make_task(wf.TaskKind.TASK, "deaf", ignores_stop, events), grace=30.0)
    heard: list[wf.StopRequest] = []
    unsubscribe = service.add_stop_listener(heard.append)
    async with trio.open_nursery() as nursery:

        async def run() -> None:
            with pytest.raises(wf.ServiceError, match="second stop request"):
                await service.run()

        nursery.start_soon(run)
        await trio.sleep(1)
        service.stop("first")
        assert heard == [wf.StopRequest("first", number=1, forced=False)]
        await trio.testing.wait_all_tasks_blocked()
        assert service.stop_requests == 1 and service.phase == "stopping"
        service.stop("second")
    assert heard[1:] == [wf.StopRequest("second", number=2, forced=True)]
    unsubscribe()
    service.stop("after the end")
    assert len(heard) == 2 and service.stop_requests == 3


async def test_a_signal_reaches_the_stop_listeners_and_a_second_one_forces() -> None:
    assert threading.current_thread() is threading.main_thread()  # signals are handled only here
    events: list[str] = []
    deaf = make_task(wf.TaskKind.UNCONSTRAINED, "deaf", ignores_stop, events)
    builder = wf.ServiceBuilder(graceful_shutdown_timeout=3600.0, handle_signals=True)
    service = builder.add_layer(TasksLayer([deaf])).build()
    heard: list[wf.StopRequest] = []
    arrived = trio.Event()

    def listen(request: wf.StopRequest) -> None:
        heard.append(request)
        arrived.set()

    service.add_stop_listener(listen)
    with trio.fail_after(30):  # a guard only: the second SIGINT ends the 3600 s grace period
        async with trio.open_nursery() as nursery:

            async def run() -> None:
                with pytest.raises(wf.ServiceError) as info:
                    await service.run()
                deaf_report = info.value.report.tasks["deaf"]
                assert deaf_report.state is wf.TaskState.TIMED_OUT
                assert deaf_report.error is not None
                assert "cancelled by a second stop request" in deaf_report.error.message

            nursery.start_soon(run)
            await trio.testing.wait_all_tasks_blocked()
            assert service.phase == "running"
            os.kill(os.getpid(), signal.SIGINT)
            await arrived.wait()
            arrived = trio.Event()
            await trio.testing.wait_all_tasks_blocked()
            assert service.phase == "stopping"
            os.kill(os.getpid(), signal.SIGINT)
            await arrived.wait()
    assert heard == [
        wf.StopRequest("received SIGINT", number=1, forced=False, signal="SIGINT"),
        wf.StopRequest("received SIGINT", number=2, forced=True, signal="SIGINT"),
    ]
    assert service.status().stop_reason == "received SIGINT"
