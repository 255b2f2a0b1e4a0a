"""A worker process for the crash tests: ``python crash_worker.py URL CONCURRENCY [--zygote]``.

Serves the ``default`` queue of the broker ``URL`` with :class:`wireframe.jobs.Worker`
(running the operations of :mod:`crash_ops`), prints ``ready <pid>`` once it
consumes, and runs until it is killed. It never stops gracefully on purpose: the
tests SIGKILL it, so whatever it holds is abandoned the hard way.

With ``--zygote`` it is a fork server instead: it imports everything, prints
``warm``, and for every line on stdin forks one worker process (printing
``forked <pid>``). A replacement for a killed worker is then serving in
milliseconds instead of the second or more a fresh Python start takes on a busy
2-core machine. The zygote ignores ``SIGCHLD`` so the kernel reaps its dead
workers; the test kills the zygote's whole process group at the end.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback

import crash_ops  # noqa: F401  (registers the operations this worker may run)
import trio

import wireframe.jobs.brokers.redis
import wireframe.jobs.brokers.sqlite  # noqa: F401  (imported before any fork)
from wireframe.jobs import Worker, open_broker


def say(line: str) -> None:
    """Write one whole line to stdout in one ``write`` (lines of forks never interleave)."""
    os.write(1, f"{line}\n".encode())


async def exit_with_parent(parent: int) -> None:
    """Exit at once when ``parent`` is gone (a test killed hard leaves no worker behind)."""
    while os.getppid() == parent:
        await trio.sleep(0.5)
    os._exit(0)


async def main(url: str, concurrency: int) -> None:
    """Serve ``url`` until killed (or until the parent process is gone)."""
    async with open_broker(url) as broker:
        worker = Worker(broker, concurrency=concurrency, worker_id=f"crash-{os.getpid()}")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(exit_with_parent, os.getppid())
            await nursery.start(worker.serve)
            say(f"ready {os.getpid()}")


def zygote(url: str, concurrency: int) -> None:
    """Fork one worker per line read from stdin, until stdin closes."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    say("warm")
    for _ in sys.stdin:
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            try:
                trio.run(main, url, concurrency)
            except BaseException:
                traceback.print_exc()
                sys.stderr.flush()
            os._exit(1)
        say(f"forked {pid}")


if __name__ == "__main__":
    if "--zygote" in sys.argv:
        zygote(sys.argv[1], int(sys.argv[2]))
    else:
        trio.run(main, sys.argv[1], int(sys.argv[2]))
