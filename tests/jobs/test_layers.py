"""The runtime and the worker as service parts: layers, graceful stop, the example."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import attrs
import pytest
import trio

import wireframe as wf
from wireframe import jobs
from wireframe.jobs.codec import encode_job_body, encode_operation
from wireframe.service.health import readiness

ROOT = Path(__file__).resolve().parents[2]
STARTED: list[int] = []


@attrs.frozen
class Slow(jobs.Operation[int, int]):
    seconds: float

    async def execute(self, x: int) -> int:
        STARTED.append(x)
        await trio.sleep(self.seconds)
        return x


@attrs.frozen
class Offset:
    by: int


@attrs.frozen
class AddOffset(jobs.Operation[int, int]):
    async def execute(self, x: int, *, offset: Offset) -> int:
        return x + offset.by


@attrs.frozen
class OffsetOut:
    offset: Offset


@attrs.frozen
class OffsetLayer(wf.WiringLayer[None, OffsetOut]):
    name = "offset"

    async def wire(self, input: None) -> OffsetOut:
        return OffsetOut(Offset(100))


@attrs.define
class MapTask(wf.Task):
    runtime: jobs.Runtime
    out: list[int]
    id = "map"

    async def run(self, stop: wf.StopReceiver) -> None:
        self.out += await jobs.from_iter(range(5)).map(AddOffset()).collect().run(self.runtime)


@attrs.frozen
class MapIn:
    runtime: jobs.Runtime


@attrs.frozen
class MapOut:
    task: MapTask


@attrs.frozen
class MapLayer(wf.WiringLayer[MapIn, MapOut]):
    out: list[int]
    name = "map"

    async def wire(self, input: MapIn) -> MapOut:
        return MapOut(MapTask(input.runtime, self.out))


async def test_runtime_layer_with_emulated_workers_and_resources() -> None:
    out: list[int] = []
    url = f"memory://layers-{uuid.uuid4().hex[:8]}?workers=2"
    service = (
        wf.ServiceBuilder(graceful_shutdown_timeout=5, handle_signals=False)
        .add_layer(MapLayer(out))
        .add_layer(jobs.JobRuntimeLayer(url, resources=(Offset,)))
        .add_layer(OffsetLayer())
        .build()
    )
    report = await service.run()
    assert out == [100, 101, 102, 103, 104]
    states = {t: r.state for t, r in report.tasks.items()}
    assert states["map"] is wf.TaskState.FINISHED
    assert states["job-runtime:worker-0"] is wf.TaskState.STOPPED
    assert states["job-runtime:broker"] is wf.TaskState.FINISHED


async def test_worker_layer_takes_resources_by_type(tmp_path: Path) -> None:
    out: list[int] = []
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    service = (
        wf.ServiceBuilder(graceful_shutdown_timeout=5, handle_signals=False)
        .add_layer(MapLayer(out))
        .add_layer(jobs.JobRuntimeLayer(url))
        .add_layer(jobs.WorkerLayer(url, concurrency=2, resources=(Offset,)))
        .add_layer(OffsetLayer())
        .build()
    )
    await service.run()
    assert out == [100, 101, 102, 103, 104]


def test_worker_layer_input_is_built_from_resources() -> None:
    layer = jobs.WorkerLayer("memory://", concurrency=3, queue="images", resources=(Offset,))
    assert layer.name == "worker:images"
    input_type = layer.input_type()
    assert input_type is not None
    assert [(f.name, f.type) for f in attrs.fields(input_type)] == [("offset", Offset)]
    assert jobs.WorkerLayer("memory://").input_type() is None


@attrs.define
class Publisher(wf.Task):
    """Publishes jobs nobody waits for, waits until the worker runs some, then returns
    (which stops the service while those jobs are in flight)."""

    broker_url: str
    count: int
    busy: int
    seconds: float
    id = "publisher"

    async def run(self, stop: wf.StopReceiver) -> None:
        async with jobs.open_broker(self.broker_url) as broker:
            op = encode_operation(Slow(self.seconds))
            await broker.publish(
                "default",
                [
                    jobs.Message(f"job-{i}", encode_job_body(op, "r", i, 1, i))
                    for i in range(self.count)
                ],
            )
            while len(STARTED) < self.busy:
                await trio.sleep(0.01)


@attrs.frozen
class PublisherOut:
    task: Publisher


@attrs.frozen
class PublisherLayer(wf.WiringLayer[None, PublisherOut]):
    url: str
    seconds: float
    name = "publisher"

    async def wire(self, input: None) -> PublisherOut:
        return PublisherOut(Publisher(self.url, 10, 4, self.seconds))


@pytest.mark.parametrize(
    ("job_seconds", "grace", "done", "queued"),
    [(5.0, 30.0, 4, 6), (60.0, 10.0, 0, 10)],
    ids=["jobs-finish-in-grace", "jobs-returned-after-grace"],
)
async def test_worker_service_stops_gracefully_with_jobs_in_flight(
    autojump_clock: trio.abc.Clock, job_seconds: float, grace: float, done: int, queued: int
) -> None:
    STARTED.clear()
    url = f"memory://graceful-{uuid.uuid4().hex[:8]}"
    async with jobs.open_broker(url) as observer:  # keeps the named state alive after the service
        service = (
            wf.ServiceBuilder(graceful_shutdown_timeout=grace, handle_signals=False)
            .add_layer(jobs.WorkerLayer(url, concurrency=4))
            .add_layer(PublisherLayer(url, job_seconds))
            .build()
        )
        with pytest.raises(wf.ServiceError) if done == 0 else _nothing():
            await service.run()
        (stats,) = await observer.stats()
        assert (stats.done, stats.queued, stats.running) == (done, queued, 0)
        assert stats.done + stats.queued == 10  # none lost
        assert len(STARTED) == 4  # nothing consumed after the stop


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.mark.slow
@pytest.mark.parametrize("broker", ["memory://?workers=4", "sqlite"])
def test_wordcount_example(tmp_path: Path, broker: str) -> None:
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import wordcount
    finally:
        sys.path.pop(0)
    if broker == "sqlite":
        broker = f"sqlite:///{tmp_path / 'wordcount.db'}"
    folder = tmp_path / "texts"
    folder.mkdir()
    texts = {"a.txt": "The cat and the hat. The END", "b.txt": "a cat, a dog; the dog's bone"}
    for name, text in texts.items():
        (folder / name).write_text(text)
    expected = wordcount.count_words(" ".join(texts.values()))
    env = {**os.environ, "WORDCOUNT_BROKER": broker}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "wordcount.py"), str(folder), "--top", "3"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"2 files, {sum(expected.values())} words, {len(expected)} distinct"
    got = [(w, int(n)) for n, w in (line.split() for line in lines[1:])]
    assert got == wordcount.top_words(expected, 3)
    assert got[0] == ("the", 4)


def test_a_layer_s_repr_masks_the_password_of_its_url() -> None:
    url = "redis://u:sEcRwOrD@127.0.0.1:6379/0"
    for layer in (jobs.JobRuntimeLayer(url), jobs.WorkerLayer(url)):
        assert "sEcRwOrD" not in repr(layer) and "u:***@127.0.0.1" in repr(layer)
        assert layer.url == url


async def test_runtime_and_worker_layers_give_a_broker_health_check(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'health.db'}"
    builder = wf.ServiceBuilder(handle_signals=False)
    builder.add_layer(jobs.JobRuntimeLayer(url)).add_layer(jobs.WorkerLayer(url))

    service = builder.build()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(service.run)
        with trio.fail_after(10):
            while not service.barrier_open or service.phase != "running":
                await trio.sleep(0.01)
        answer = await readiness(service)
        service.stop()
    assert answer.ready, answer.reasons
    assert [c.name for c in answer.checks] == ["job-runtime:broker", "worker:default:broker"]
