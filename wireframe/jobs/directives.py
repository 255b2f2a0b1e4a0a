"""Directives: lazy descriptions of distributed work, run with ``await d.run(runtime)``.

* ``from_iter(xs).map(op)`` — one job per item; results stream in completion
  order, each with its input index (:meth:`Map.stream`; :meth:`Map.run` lists them).
* ``.collect()`` — the values in input order.
* ``.fold(monoid)`` — a parallel reduction: as map results arrive, adjacent
  index ranges are combined by combine jobs on the workers, so associativity
  suffices (no commutativity is assumed); an empty input gives
  ``monoid.empty()`` with no job sent.
* ``literal(x).then(op)`` — one job.

Every run may have a ``timeout`` (``trio.TooSlowError`` when it passes) and a
``max_in_flight`` bound; a run that ends early — a ``Terminate`` failure, a
timeout, a cancellation — aborts its remaining jobs on every worker. A job
that fails with ``Terminate`` (or dies in the broker) raises
:class:`~wireframe.jobs.errors.JobFailed`; one that fails with ``Ignore`` is
skipped: absent from ``collect``, the identity for ``fold``, ``None`` for
``then``, and ``skipped=True`` in a map's stream.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Generic, TypeVar

import attrs
import trio

from wireframe.jobs import instrument
from wireframe.jobs.broker import Reply
from wireframe.jobs.codec import JobResult, decode_result, encode_input, encode_operation
from wireframe.jobs.errors import CodecError, ErrorKind, Ignore, JobFailed, RemoteError, Terminate
from wireframe.jobs.handles import check_submit_options
from wireframe.jobs.operations import Monoid, Operation, OpSpec, spec_of
from wireframe.jobs.ranges import EMPTY, Combine, RangeMerger
from wireframe.jobs.runtime import Run, Runtime

__all__ = [
    "Collect",
    "Fold",
    "LiteralValue",
    "Map",
    "MapItem",
    "MapStream",
    "Source",
    "Then",
    "from_iter",
    "literal",
]

T = TypeVar("T")
O = TypeVar("O")  # noqa: E741

#: Seconds a job of an async source may wait in a partial publish batch.
_FLUSH_AFTER = 0.005
_NOT_DONE: Any = object()  # a fold's result before it is known


@attrs.frozen
class MapItem(Generic[O]):
    """One result of a map: its input ``index`` and ``value`` (``None`` when ``skipped``)."""

    index: int
    value: O | None
    skipped: bool = False


def _dead(reply: Reply) -> JobResult:
    reason = reply.dead_reason or "dead"
    return JobResult(
        error=RemoteError(ErrorKind.DEAD, "wireframe.jobs.DeadLetter", reason, "", Terminate)
    )


def _undecodable(exc: CodecError, op_name: str) -> JobResult:
    message = f"the result of operation {op_name!r} does not decode here: {exc}"
    return JobResult(
        error=RemoteError(ErrorKind.FATAL, "wireframe.jobs.CodecError", message, "", Terminate)
    )


def _check(result: JobResult, job_id: str, index: int | None) -> bool:
    """True for a value, False for a skip; raise JobFailed for a Terminate error."""
    error = result.error
    if error is None:
        return not result.skipped
    if error.strategy is Ignore:
        return False
    raise JobFailed(error, job_id=job_id, index=index)


OnResults = Callable[[list[tuple[Any, str, JobResult]]], Awaitable[None]]


class _Feeder:
    """Publishes one job per source item of a run, in batches, bounded in flight.

    A batch goes out when it is full (the runtime's ``publish_batch``) or fills
    the run's free slots, and then the feeder waits for capacity. An item the
    result cache answers never reaches the broker: its result goes straight to
    ``on_results``, and the keys of the items sent are kept (``cache_keys``) so
    their results can be stored when they arrive.
    """

    def __init__(self, run: Run, op: Operation[Any, Any], on_results: OnResults) -> None:
        self.run = run
        self.op = op
        self.spec = spec_of(type(op))
        self.on_results = on_results
        self.cache_keys: dict[int, bytes] = {}
        self.count = 0  # items fed so far, so also the next item's index
        self._op_bytes = encode_operation(op)
        self._time_limit = run.time_limit or type(op).op_time_limit
        self._limit = run.runtime.publish_batch
        self._use_cache = run.runtime.cache is not None
        self._batch: list[tuple[str, bytes, Any]] = []
        self._fed = False  # an async source is exhausted (see _flush_idle)
        self._wake = trio.Event()

    async def feed(self, source: Iterable[Any] | AsyncIterable[Any]) -> int:
        """Publish a job for every item of ``source``; the number of items."""
        if isinstance(source, AsyncIterable):
            await self._feed_async(source)
        else:
            for item in source:
                await self._add(item)
        await self._flush()
        return self.count

    async def _add(self, item: Any) -> None:
        index = self.count
        self.count += 1
        if self._use_cache and await self._answered_by_cache(index, item):
            return
        run = self.run
        body = encode_input(
            self._op_bytes, run.run_id, index, item, self.spec, time_limit=self._time_limit,
            metadata=run.metadata,
        )  # fmt: skip
        batch = self._batch
        batch.append((f"{run.run_id}.{index}", body, index))
        if len(batch) >= self._limit or len(batch) >= run.free_slots():
            await self._flush()
            await run.wait_for_capacity()

    async def _answered_by_cache(self, index: int, item: Any) -> bool:
        """Hand on the cached result of ``item`` if there is one; else remember its key."""
        key = self.op.cache_key(item)
        if key is None:
            return False
        full = self._op_bytes + b"\x00" + key.encode()
        cached = await self.run.cache_get(full)
        if cached is None:
            self.cache_keys[index] = full
            return False
        result = decode_result(cached, self.spec.output_type)
        await self.on_results([(index, f"{self.run.run_id}.{index}", result)])
        return True

    async def _flush(self) -> None:
        out, self._batch = self._batch, []
        if out:
            await self.run.send(out, limit=await self.run.runtime.limit_of(self.op))

    async def _feed_async(self, source: AsyncIterable[Any]) -> None:
        """Feed an async source; a partial batch waits at most ``_FLUSH_AFTER`` seconds.

        A slow async source must not hold its items back until a batch fills:
        an idle flusher publishes whatever waited that long.
        """
        async with trio.open_nursery() as flushers:
            flushers.start_soon(self._flush_idle)
            async for item in source:
                await self._add(item)
                if len(self._batch) == 1:
                    self._wake.set()  # a batch began: start its clock
            self._fed = True
            self._wake.set()

    async def _flush_idle(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            if self._fed:
                return
            await trio.sleep(_FLUSH_AFTER)
            if self._batch and not self._fed:
                await self._flush()


async def _drive(
    run: Run,
    op: Operation[Any, Any],
    source: Iterable[Any] | AsyncIterable[Any],
    on_results: OnResults,
    decode: Callable[[bytes, Any], JobResult] | None = None,
    on_fed: Callable[[int], None] | None = None,
) -> None:
    """Publish one job per source item and hand every decoded result
    ``(tag, job id, JobResult)`` to ``on_results``, until the run's stream ends.

    Map jobs are tagged with their input index; other senders on the same run
    (a fold's combine jobs) use their own tags and are decoded by ``decode``.
    Once every item is sent, ``on_fed(count)`` is called; without it the run
    is closed then (nothing else will be sent).
    """
    feeder = _Feeder(run, op, on_results)

    async def feed() -> None:
        count = await feeder.feed(source)
        if on_fed is None:
            run.close()
        else:
            on_fed(count)

    with _unwrapped():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed)
            await _receive_all(
                run, on_results, decode or _no_decode, feeder.spec, feeder.cache_keys
            )


async def _receive_all(
    run: Run,
    on_results: OnResults,
    decode: Callable[[bytes, Any], JobResult],
    spec: OpSpec,
    cache_keys: dict[int, bytes],
) -> None:
    """Decode every reply of ``run`` until its stream ends; hand them on in batches.

    A reply that does not decode (a value of the wrong type for the
    operation's output) fails its job, like an error the worker reported. A
    map job's successful result is stored in the cache under its item's key.
    """
    out_type = spec.output_type
    while (replies := await run.receive()) is not None:
        results: list[tuple[Any, str, JobResult]] = []
        for reply, tag in replies:
            body = reply.body
            try:
                if body is None:
                    result = _dead(reply)
                elif type(tag) is int:
                    result = decode_result(body, out_type)
                    if cache_keys and result.ok:
                        key = cache_keys.pop(tag, None)
                        if key is not None:
                            await run.cache_set(key, body)
                else:
                    result = decode(body, tag)
            except CodecError as exc:
                result = _undecodable(exc, spec.name)
            if result.error is not None:
                run.count_failure(dead=result.error.kind is ErrorKind.DEAD)
            results.append((tag, reply.message_id, result))
        await on_results(results)


@contextmanager
def _unwrapped() -> Iterator[None]:
    """Raise a lone exception out of a nursery's group as itself (``JobFailed``, not a group)."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaf: BaseException = group
        while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
            leaf = leaf.exceptions[0]
        if leaf is group:
            raise
        raise leaf from None


class _Directive(Generic[T]):
    """Shared ``run`` plumbing: a timeout and a leased run around ``_execute``."""

    async def run(
        self,
        runtime: Runtime,
        *,
        timeout: float | None = None,
        max_in_flight: int | None = None,
        queue: str | None = None,
        priority: int = 0,
        time_limit: float | None = None,
        delay: float | None = None,
    ) -> T:
        """Run on ``runtime``; ``timeout`` seconds (``trio.TooSlowError``) aborts the jobs.

        The timeout's message says how far the run got and whether any worker
        was consuming its queue. The run's jobs carry ``priority`` (higher
        first within a queue) and ``time_limit`` (seconds; default each
        operation's own), and start after ``delay`` seconds.
        """
        check_submit_options(priority=priority, time_limit=time_limit, delay=delay)
        opened: list[Run] = []
        with (
            trio.move_on_after(math.inf if timeout is None else timeout),
            instrument.running(type(self).__name__, queue or runtime.queue) as metadata,
        ):
            async with runtime.open_run(
                queue=queue, max_in_flight=max_in_flight, priority=priority,
                time_limit=time_limit, delay=delay or 0.0,
            ) as run:  # fmt: skip
                run.metadata = metadata
                opened.append(run)
                return await self._execute(run)
        assert timeout is not None
        raise trio.TooSlowError(_timed_out(opened[0] if opened else None, timeout))

    async def _execute(self, run: Run) -> T:
        raise NotImplementedError


def _timed_out(run: Run | None, timeout: float) -> str:
    """What a run's timeout says: how far it got, and whether a worker was there."""
    if run is None:
        return f"directive run timed out after {timeout:g} s before it could start"
    text = (
        f"directive run {run.run_id} on queue {run.queue!r} timed out after {timeout:g} s "
        f"with {run.channel.pending} of {run.sent} jobs unanswered"
    )
    if run.no_worker_since is not None:
        idle = trio.current_time() - run.no_worker_since
        text += (
            f"; no live worker has consumed queue {run.queue!r} of broker {run.broker.url} "
            f"for the last {idle:.1f} s: start one with "
            "`wireframe worker --broker URL --import MODULE`"
        )
    return text


@attrs.frozen
class Source(Generic[T]):
    """Items to map over: a sync or async iterable, consumed lazily while the run goes."""

    items: Iterable[T] | AsyncIterable[T]

    def map(self, op: Operation[T, O]) -> Map[T, O]:
        """One job per item running ``op``."""
        return Map(self, op)


@attrs.frozen
class Map(_Directive[list[MapItem[O]]], Generic[T, O]):
    """``op`` over every item; results in completion order, each with its input index."""

    source: Source[T]
    op: Operation[T, O]

    def collect(self) -> Collect[T, O]:
        """The results as a list in input order (skipped items left out)."""
        return Collect(self)

    def fold(self, monoid: Monoid[O]) -> Fold[T, O]:
        """Reduce the results with ``monoid`` in parallel, combining adjacent ranges."""
        return Fold(self, monoid)

    async def _execute(self, run: Run) -> list[MapItem[O]]:
        out: list[MapItem[O]] = []

        async def on_results(results: list[tuple[Any, str, JobResult]]) -> None:
            for index, job_id, result in results:
                ok = _check(result, job_id, index)
                out.append(MapItem(index, result.value, skipped=not ok))

        await _drive(run, self.op, self.source.items, on_results)
        return out

    @asynccontextmanager
    async def stream(
        self,
        runtime: Runtime,
        *,
        timeout: float | None = None,
        max_in_flight: int | None = None,
        queue: str | None = None,
    ) -> AsyncIterator[MapStream[O]]:
        """``async with m.stream(rt) as items: async for item in items`` — results as they come.

        Leaving the block early aborts the remaining jobs.
        """
        # Results travel in batches (one per reply batch), two batches buffered:
        # a slow consumer holds up the replies, and so the feeder.
        send, receive = trio.open_memory_channel[list[MapItem[O]]](2)

        async def on_results(results: list[tuple[Any, str, JobResult]]) -> None:
            batch = [
                MapItem(index, result.value, skipped=not _check(result, job_id, index))
                for index, job_id, result in results
            ]
            await send.send(batch)

        async def drive(run: Run) -> None:
            async with send:
                await _drive(run, self.op, self.source.items, on_results)

        with trio.fail_after(math.inf if timeout is None else timeout):
            async with runtime.open_run(queue=queue, max_in_flight=max_in_flight) as run:
                with _unwrapped():
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(drive, run)
                        async with receive:
                            yield MapStream(receive)
                        nursery.cancel_scope.cancel()


class MapStream(Generic[O]):
    """The results of :meth:`Map.stream`, one :class:`MapItem` at a time, as they arrive.

    Items come in the batches the replies came in; taking an item of a batch
    already received is not a schedule point.
    """

    def __init__(self, batches: trio.MemoryReceiveChannel[list[MapItem[O]]]) -> None:
        self._batches = batches
        self._batch: deque[MapItem[O]] = deque()

    def __aiter__(self) -> MapStream[O]:
        return self

    async def __anext__(self) -> MapItem[O]:
        while not self._batch:
            try:
                self._batch.extend(await self._batches.receive())
            except trio.EndOfChannel:
                raise StopAsyncIteration from None
        return self._batch.popleft()


def _no_decode(body: bytes, tag: Any) -> JobResult:
    raise AssertionError(f"unexpected reply tag {tag!r}")


@attrs.frozen
class Collect(_Directive[list[O]], Generic[T, O]):
    """A map's values in input order; items skipped by ``Ignore`` are left out."""

    map: Map[T, O]

    async def _execute(self, run: Run) -> list[O]:
        values: dict[int, O] = {}

        async def on_results(results: list[tuple[Any, str, JobResult]]) -> None:
            for index, job_id, result in results:
                if _check(result, job_id, index):
                    values[index] = result.value

        await _drive(run, self.map.op, self.map.source.items, on_results)
        return [values[i] for i in sorted(values)]


@attrs.frozen
class Fold(_Directive[O], Generic[T, O]):
    """A map reduced by a monoid while its results arrive (adjacent ranges only)."""

    map: Map[T, O]
    monoid: Monoid[O]

    async def _execute(self, run: Run) -> O:
        fold = _FoldRun(run, self.monoid)
        await _drive(
            run, self.map.op, self.map.source.items, fold.on_results, fold.decode, fold.fed
        )
        if fold.result is _NOT_DONE:  # pragma: no cover - the stream ends only once it is done
            raise RuntimeError("fold ended without a result")
        result: O = fold.result
        return result


class _FoldRun:
    """One fold's run: its results go to a :class:`RangeMerger`; the combines it asks
    for are sent as jobs; the run closes when one range covers every item."""

    def __init__(self, run: Run, monoid: Monoid[Any]) -> None:
        self.run = run
        self.monoid = monoid
        self.spec = spec_of(type(monoid))
        self.result: Any = _NOT_DONE
        self._monoid_bytes = encode_operation(monoid)
        self._ranges = RangeMerger()
        self._total: int | None = None  # the number of items, once all are sent

    async def on_results(self, results: list[tuple[Any, str, JobResult]]) -> None:
        """Merge map results (tagged by index) and combine results (tagged by range)."""
        ranges = self._ranges
        combines: list[Combine] = []
        for tag, job_id, result in results:
            if type(tag) is int:
                ok = _check(result, job_id, tag)
                combine = ranges.add(tag, tag + 1, result.value if ok else EMPTY)
            else:
                ok = _check(result, job_id, None)
                combine = ranges.combined(tag[0], tag[1], result.value if ok else EMPTY)
            if combine is not None:
                combines.append(combine)
        if combines:
            limit = await self.run.runtime.limit_of(self.monoid)
            await self.run.send([self._job(c) for c in combines], limit=limit)
        self._check_done()

    def _job(self, combine: Combine) -> tuple[str, bytes, Any]:
        """The combine job: its id, its body and its tag (the range it covers)."""
        run, span = self.run, (combine.start, combine.end)
        label = f"the combine of items {combine.start}..{combine.end - 1}"
        pair = (combine.left, combine.right)
        limit = self.run.time_limit or self.spec.cls.op_time_limit
        body = encode_input(
            self._monoid_bytes, run.run_id, -1, pair, self.spec, label, time_limit=limit,
            metadata=run.metadata,
        )  # fmt: skip
        return run.job_id(), body, span

    def fed(self, total: int) -> None:
        """Every item is sent: the fold is done once ``total`` items are covered."""
        self._total = total
        self._check_done()

    def _check_done(self) -> None:
        if self._total is None or self.result is not _NOT_DONE:
            return
        done, value = self._ranges.whole(self._total)
        if done:
            self.result = self.monoid.empty() if value is EMPTY else value
            self.run.close()

    def decode(self, body: bytes, tag: Any) -> JobResult:
        """A combine job's result (a map job's is decoded by the receiver)."""
        try:
            return decode_result(body, self.spec.output_type)
        except CodecError as exc:
            return _undecodable(exc, self.spec.name)


@attrs.frozen
class LiteralValue(Generic[T]):
    """One value to run a single operation on: what :func:`literal` gives.

    (Not ``Literal``, which would shadow :data:`typing.Literal` where both are imported.)
    """

    value: T

    def then(self, op: Operation[T, O]) -> Then[T, O]:
        """One job: ``op`` on the value."""
        return Then(self.value, op)


@attrs.frozen
class Then(_Directive["O | None"], Generic[T, O]):
    """One job; its value, or ``None`` if the job was skipped by ``Ignore``."""

    value: T
    op: Operation[T, O]

    async def _execute(self, run: Run) -> O | None:
        out: list[O | None] = []

        async def on_results(results: list[tuple[Any, str, JobResult]]) -> None:
            for index, job_id, result in results:
                out.append(result.value if _check(result, job_id, index) else None)

        await _drive(run, self.op, (self.value,), on_results)
        return out[0]


def from_iter(items: Iterable[T] | AsyncIterable[T]) -> Source[T]:
    """A lazy source of items (any iterable or async iterable; not materialized)."""
    return Source(items)


def literal(value: T) -> LiteralValue[T]:
    """A single value, for ``literal(x).then(op)``."""
    return LiteralValue(value)
