"""memory://: workers that die at random points lose nothing and duplicate nothing."""

from __future__ import annotations

import attrs
import trio
from crash_ops import Concat, expected_fold, render

from wireframe import jobs


@attrs.frozen
class LateFirst(jobs.Operation[int, str], name="crash.LateFirst"):
    """Later inputs finish first: results arrive in reverse input order."""

    n: int

    async def execute(self, x: int) -> str:
        await trio.sleep((self.n - x) * 0.01)
        return render(x)


async def test_fold_combine_ids_never_collide_with_map_ids(autojump_clock: trio.abc.Clock) -> None:
    """Combine jobs started while low-index map jobs still run keep their own ids.

    Regression: a combine job's id was ``<run>.<k>`` with k counting from 1 —
    the id of map job k — so a combine published while map job k was still
    pending took over its slot in the result channel and the fold never ended.
    """
    n = 20
    async with jobs.connect("memory://?workers=1", worker_concurrency=n) as rt:
        with trio.fail_after(60):
            assert await jobs.from_iter(range(n)).map(LateFirst(n)).fold(Concat()).run(rt) == (
                expected_fold(n)
            )
