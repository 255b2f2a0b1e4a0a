"""A SIGKILLed orchestrator process is restarted and **re-runs** its directive; no result doubles.

Decision: re-run, not re-attach. A run's id is a fresh uuid chosen inside
``Runtime.open_run``, and the replies a killed orchestrator already took from its
result channel died with its memory (``receive_replies`` hands each reply out
once), so re-attaching would need a caller-chosen run id *plus* a durable journal
of the results already received *plus* re-publishing the jobs whose replies were
lost under the same message ids — which the Broker protocol forbids (a message id
is unique in the broker). That is not a small, safe change, so the supported
path is: re-run the directive under a new run id, and clean up after the old
run. The restarted orchestrator (``crash_orchestrator.py``) learns the old run
ids from a journal it fsyncs before publishing, broadcasts an abort for each
(live workers skip the old run's queued jobs and cancel its running ones) and
deletes the old result channels. Results cannot mix: every run has its own
channel, and its result stream admits only replies to job ids it registered.

Per durable broker: two worker processes serve ``map(Work).collect()`` of 1,000
jobs; the orchestrator process is SIGKILLed twice at random points (after 50 to
600 executions of its run) and started again; the third instance runs to the end.
Proven: its values are exactly the local computation (each once, in order), its
result channel saw no duplicate reply, both earlier runs were aborted, the queue
drains to nothing queued, leased or dead, and every input ran. (The abort is what
keeps a re-run cheap: measured, the killed runs' jobs stop after some 400-650
executions of 1,000 instead of all running to the end for nobody.)
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
import trio
from crash_harness import ExecutionLog, Zygote, open_processes
from crash_ops import render

from wireframe.jobs import open_broker

N = 1000
ORCHESTRATOR_KILLS = 2
WORKERS = 2
CONCURRENCY = 8


@pytest.mark.slow
async def test_killed_orchestrator_reruns_without_duplicates(
    crash_url: str, tmp_path: Path
) -> None:
    log_path = tmp_path / "executions.log"
    journal = tmp_path / "runs.journal"
    out = tmp_path / "result.json"
    log = ExecutionLog(log_path)
    rng = random.Random(7)
    started = time.monotonic()

    def orchestrator_args(tag: str) -> list[str]:
        return [crash_url, str(N), str(log_path), str(journal), str(out), tag]

    with trio.fail_after(60):
        async with open_processes(tmp_path) as procs:
            zygote = Zygote(procs, crash_url, CONCURRENCY)
            await zygote.start()
            for _ in range(WORKERS):
                await zygote.fork()
            for attempt in range(ORCHESTRATOR_KILLS):
                tag = f"attempt-{attempt}"
                orchestrator = await procs.start_python(
                    "crash_orchestrator.py", *orchestrator_args(tag), name="orchestrator"
                )
                k = rng.randint(50, 600)
                await log.wait_until(lambda log, tag=tag, k=k: log.by_tag[tag] >= k)
                await procs.kill(orchestrator)
                assert not out.exists()
            final = await procs.start_python(
                "crash_orchestrator.py",
                *orchestrator_args("final"),
                name="orchestrator",
                expect_exit=True,
            )
            code = await final.process.wait()
            assert code == 0, final.stderr_tail()
            # the aborted runs' leftovers are skipped by the workers: the queue drains
            async with open_broker(crash_url) as broker:
                stats = await broker.stats()
                while any(s.queued or s.running for s in stats):
                    await trio.sleep(0.05)  # another process works: nothing to wait on here
                    stats = await broker.stats()
                dead = await broker.dead_letters()
            zygote.check_alive()

    result = json.loads(out.read_text())
    assert result["values"] == [render(i) for i in range(N)]
    assert result["duplicates"] == 0
    assert len(result["aborted"]) == ORCHESTRATOR_KILLS
    assert [s.dead for s in stats] == [0] * len(stats)
    assert dead == []
    log.poll()
    assert sorted(log.by_index) == list(range(N))
    assert log.by_tag["final"] >= N
    print(
        f"{crash_url.split(':')[0]}: {ORCHESTRATOR_KILLS} orchestrator kills, executions "
        f"{dict(log.by_tag)}, {time.monotonic() - started:.1f} s"
    )
