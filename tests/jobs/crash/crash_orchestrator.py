"""An orchestrator process for the crash tests.

``python crash_orchestrator.py URL N LOG JOURNAL OUT TAG`` runs
``from_iter(range(N)).map(Work(log=LOG, tag=TAG)).collect()`` on the broker
``URL`` and writes the values to ``OUT`` as JSON (atomically: a rename), then
exits. It may be SIGKILLed at any point and started again with the same
arguments: it **re-runs** the directive from the start.

Before it runs, it cleans up after the runs that earlier, killed instances of
itself left behind. Every run it opens is appended to ``JOURNAL`` (run id and
result channel, fsynced) before its first job is published; a restart reads
the journal, broadcasts an abort for each earlier run (live workers then skip
its queued jobs and cancel its running ones) and deletes its result channel.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import crash_ops
import trio

from wireframe import jobs
from wireframe.jobs import Runtime, open_broker
from wireframe.jobs.runtime import Run


class JournaledRuntime(Runtime):
    """A runtime that records every run it opens in a journal file first."""

    def __init__(self, broker: jobs.Broker, journal: str) -> None:
        super().__init__(broker)
        self.journal = journal
        self.runs: list[Run] = []

    @asynccontextmanager
    async def open_run(self, **options: Any) -> AsyncIterator[Run]:
        """The base run, journaled (and fsynced) before the caller publishes anything."""
        async with super().open_run(**options) as run:
            append_line(self.journal, f"{run.run_id} {run.channel.name}")
            self.runs.append(run)
            yield run


def append_line(path: str, line: str) -> None:
    """Append one line to ``path`` and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{line}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def earlier_runs(journal: str) -> list[tuple[str, str]]:
    """``(run id, channel)`` of every run the journal recorded."""
    if not os.path.exists(journal):
        return []
    with open(journal, encoding="ascii") as f:
        return [(run_id, channel) for run_id, channel in (line.split() for line in f)]


def write_atomically(path: str, data: object) -> None:
    """Write ``data`` as JSON to ``path`` via a temporary file and a rename."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


async def main(url: str, n: int, log: str, journal: str, out: str, tag: str) -> None:
    """Clean up after earlier runs, re-run the directive, write its result."""
    async with open_broker(url) as broker:
        rt = JournaledRuntime(broker, journal)
        aborted = earlier_runs(journal)
        for run_id, channel in aborted:
            await rt.abort(run_id)
            await broker.delete_channel(channel)
        work = crash_ops.Work(log=log, pause=0.02, tag=tag)
        values = await jobs.from_iter(range(n)).map(work).collect().run(rt)
        (run,) = rt.runs
        write_atomically(
            out,
            {
                "values": values,
                "run_id": run.run_id,
                "duplicates": run.channel.duplicates,
                "aborted": [run_id for run_id, _ in aborted],
            },
        )


if __name__ == "__main__":
    url, n, log, journal, out, tag = sys.argv[1:7]
    trio.run(main, url, int(n), log, journal, out, tag)
