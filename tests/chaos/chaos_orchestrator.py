"""An orchestrator process for the chaos suite, and the runtime every chaos run uses.

``python chaos_orchestrator.py URL N LOG OUT TAG`` runs
``from_iter(range(N)).map(Work(log=LOG, tag=TAG)).collect()`` on the broker
``URL`` and writes ``{"values": [...], "duplicates": d}`` to ``OUT`` as JSON
(atomically: a rename), then exits. It is what a user's script does, nothing
more: a test SIGKILLs it mid-run and starts it again, and the re-run must
complete on its own.

:class:`CountingRuntime` keeps the runs it opened, so that whoever holds it can
tell how many replies reached a run a second time (the test process uses it
too).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import chaos_ops
import trio

from wireframe import jobs
from wireframe.jobs import Broker, Runtime, open_broker

__all__ = ["CountingRuntime", "open_runtime"]


class CountingRuntime(Runtime):
    """A runtime that keeps its runs, to count replies that reached a run twice."""

    def __init__(self, broker: Broker) -> None:
        super().__init__(broker)
        self.runs: list[Any] = []

    @asynccontextmanager
    async def open_run(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        """The base run, remembered."""
        async with super().open_run(*args, **kwargs) as run:
            self.runs.append(run)
            yield run

    @property
    def duplicates(self) -> int:
        """Replies that reached one of this runtime's runs a second time."""
        return sum(run.channel.duplicates for run in self.runs)


@asynccontextmanager
async def open_runtime(url: str) -> AsyncIterator[CountingRuntime]:
    """A :class:`CountingRuntime` on the broker ``url``."""
    async with open_broker(url) as broker:
        yield CountingRuntime(broker)


async def main(url: str, n: int, log: str, out: str, tag: str) -> None:
    """Run the directive and write its values and duplicate count to ``out``."""
    async with open_runtime(url) as rt:
        work = chaos_ops.Work(log=log, pause=0.02, tag=tag)
        values = await jobs.from_iter(range(n)).map(work).collect().run(rt)
    write_atomically(out, {"values": values, "duplicates": rt.duplicates})


def write_atomically(path: str, data: object) -> None:
    """Write ``data`` as JSON to ``path`` via a temporary file and a rename."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


if __name__ == "__main__":
    url, n, log, out, tag = sys.argv[1:6]
    trio.run(main, url, int(n), log, out, tag)
