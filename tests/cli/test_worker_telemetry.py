"""A job's span in a real ``wireframe worker`` process is the child of the span that submitted it."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import trio
from clikit import SERVICES, read_until, start_wireframe
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from wireframe import jobs
from wireframe.jobs import instrument as hooks
from wireframe.telemetry import instrument

TRACED = SERVICES / "cli_traced_worker.py"


@pytest.mark.slow
def test_the_job_span_in_the_worker_process_is_a_child_of_the_submit_span(tmp_path: Path) -> None:
    from wireframe.cli.target import import_module

    module = import_module(str(TRACED))
    spans_file = tmp_path / "worker-spans.jsonl"
    url = f"sqlite:///{tmp_path}/jobs.db"
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    proc = start_wireframe(
        "worker", "--broker", url, "--import", str(TRACED), "--plain",
        SPANS_FILE=str(spans_file),
    )  # fmt: skip
    try:
        read_until(proc, "(Task, layer worker:default) running")
        instrument(tracer_provider=provider)
        try:

            async def submit() -> str:
                async with jobs.connect(url) as rt:
                    with provider.get_tracer("test").start_as_current_span("web request"):
                        handle = await rt.submit(module.Traced(), "abc")
                    with trio.fail_after(30):
                        return str(await handle.result())

            assert trio.run(submit) == "cba"
        finally:
            hooks.install_listener(None)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, rest
    [submit_span] = [s for s in exporter.get_finished_spans() if s.name.startswith("submit ")]
    worker_spans = [json.loads(line) for line in spans_file.read_text().splitlines()]
    [job_span] = [s for s in worker_spans if s["name"] == "job tests.cli.traced"]
    assert job_span["trace_id"] == submit_span.context.trace_id
    assert job_span["parent_id"] == submit_span.context.span_id
    assert job_span["attributes"]["wireframe.worker"] == "worker:default"
    assert job_span["attributes"]["wireframe.job.id"] == submit_span.attributes["wireframe.job.id"]  # type: ignore[index]


@pytest.mark.slow
def test_log_format_json_writes_a_structured_record_for_a_failed_job(tmp_path: Path) -> None:
    from wireframe.cli.target import import_module

    module = import_module(str(TRACED))
    url = f"sqlite:///{tmp_path}/jobs.db"
    proc = start_wireframe(
        "worker", "--broker", url, "--import", str(TRACED), "--plain", "--log-format", "json",
        SPANS_FILE=str(tmp_path / "spans.jsonl"),
    )  # fmt: skip
    try:
        read_until(proc, "(Task, layer worker:default) running")

        async def submit() -> str:
            async with jobs.connect(url) as rt:
                handle = await rt.submit(module.Refuses(), "x")
                with pytest.raises(jobs.JobFailed), trio.fail_after(30):
                    await handle.result()
                return handle.id

        job_id = trio.run(submit)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    records = [json.loads(line) for line in rest.splitlines() if line.startswith("{")]
    [failed] = [r for r in records if r.get("job_id") == job_id]
    assert failed["level"] == "warning"
    assert failed["operation"] == "tests.cli.refuses"
    assert failed["outcome"] == "failed"
    assert failed["queue"] == "default" and failed["attempt"] == 1
    assert "ValueError: refused 'x'" in failed["message"]
