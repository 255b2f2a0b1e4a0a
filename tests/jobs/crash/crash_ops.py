"""The operations the crash tests run, importable by the test and by worker subprocesses.

:class:`Work` does a tiny bit of async work and appends one line per execution
to a log file (``index pid``), so a test can count how often each job *ran*
(at-least-once) while checking that each *result* arrived once. :class:`Concat`
is the fold's monoid: associative and not commutative, so a fold that combined
out of order, dropped or doubled a value gives a different string.

Names are explicit and stable (``crash.Work``, ``crash.Concat``): the
orchestrator and the workers must agree on them whatever module path imported
this file.
"""

from __future__ import annotations

import os

import attrs
import trio

__all__ = ["Concat", "Work", "expected_fold", "render"]

from wireframe import jobs


def render(x: int) -> str:
    """What :class:`Work` computes for ``x`` (the local computation)."""
    return f"<{x}>"


def expected_fold(n: int) -> str:
    """The fold of ``Work`` over ``range(n)`` with :class:`Concat`, computed locally."""
    return "".join(render(i) for i in range(n))


@attrs.frozen
class Work(jobs.Operation[int, str], name="crash.Work"):
    """Sleep a little (``pause`` seconds, scaled by the input), log the execution, render.

    ``log`` is the file each execution appends ``"<index> <pid> <tag>\\n"`` to (one
    ``O_APPEND`` write: lines from concurrent processes never interleave);
    ``""`` logs nothing. The line is written when the execution *starts*, so a
    job killed mid-run counts as executed.
    """

    log: str = ""
    pause: float = 0.005
    tag: str = ""

    async def execute(self, x: int) -> str:
        if self.log:
            fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, f"{x} {os.getpid()} {self.tag}\n".encode())
            finally:
                os.close(fd)
        # 0.2x .. 2x of pause, spread deterministically over the inputs
        await trio.sleep(self.pause * (0.2 + 1.8 * ((x * 7919) % 101) / 100))
        return render(x)


@attrs.frozen
class Concat(jobs.Monoid[str], name="crash.Concat"):
    """String concatenation: associative, not commutative."""

    def empty(self) -> str:
        return ""

    def combine(self, a: str, b: str) -> str:
        return a + b
