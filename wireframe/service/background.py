"""Background tasks around a block, from which the block's own exception leaves bare.

A context manager that runs helper tasks while its caller's block runs (a
broker's watcher, emulated workers) needs a nursery, and a trio nursery wraps
whatever leaves it in an ``ExceptionGroup`` — even the block's own exception,
alone. Then ``except JobFailed`` or ``except trio.TooSlowError`` around
``async with jobs.connect(url)`` misses it. :func:`background_tasks` is that
nursery with the block's exception taken out of it: the block's exception
leaves exactly as raised, a lone failure of a background task leaves bare too,
and only two genuine failures at once (the block's and a task's, or several
tasks') leave as a group.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

__all__ = ["background_tasks"]


@asynccontextmanager
async def background_tasks() -> AsyncIterator[trio.Nursery]:
    """A nursery for tasks that serve the block; exceptions leave it bare.

    As with a plain nursery, the tasks are cancelled when the block raises, and
    a task that fails cancels the block; when the block ends normally the
    nursery waits for the tasks (the block stops them first).
    """
    body_error: BaseException | None = None
    leaving: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            try:
                yield nursery
            except BaseException as exc:
                body_error = exc  # kept out of the nursery, so not wrapped in its group
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        leaving = _leaving(body_error, group)
    else:
        leaving = body_error
    if leaving is not None:
        raise leaving  # outside every except block: no group becomes its context


def _leaving(body_error: BaseException | None, group: BaseExceptionGroup) -> BaseException:
    """What leaves when the tasks raised ``group`` and the block raised ``body_error``."""
    _, failures = group.split(trio.Cancelled)
    if failures is None:  # the tasks were only cancelled, from outside
        return body_error if body_error is not None else _lone(group)
    if body_error is None or isinstance(body_error, trio.Cancelled):
        return _lone(failures)  # a task failed, and that cancelled the block
    return BaseExceptionGroup(
        "the block and a background task both failed", [body_error, *failures.exceptions]
    )


def _lone(group: BaseExceptionGroup) -> BaseException:
    """The one exception under a chain of one-exception groups, else ``group``."""
    leaf: BaseException = group
    while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
        leaf = leaf.exceptions[0]
    return leaf
