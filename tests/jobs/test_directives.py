"""Directives give what the local computation gives: map, collect, fold, then."""

from __future__ import annotations

import uuid

import attrs
import trio
import trio.lowlevel
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wireframe import jobs


@attrs.frozen
class Square(jobs.Operation[int, int]):
    """An async op: on trio, no thread hop."""

    async def execute(self, x: int) -> int:
        await trio.lowlevel.checkpoint()
        return x * x


@attrs.frozen
class Offset(jobs.Operation[int, int]):
    """A sync op with a parameter: it runs in a thread and its field travels."""

    by: int

    def execute(self, x: int) -> int:
        return x + self.by


@attrs.frozen
class Show(jobs.Operation[int, str]):
    async def execute(self, x: int) -> str:
        return f"<{x}>"


@attrs.frozen
class Concat(jobs.Monoid[str]):
    """Associative, not commutative: fold must keep the order."""

    def empty(self) -> str:
        return ""

    def combine(self, a: str, b: str) -> str:
        return a + b


@attrs.frozen
class Sum(jobs.Monoid[int]):
    def empty(self) -> int:
        return 0

    def combine(self, a: int, b: int) -> int:
        return a + b


@attrs.frozen
class Pair:
    lo: int
    hi: int


@attrs.frozen
class Span(jobs.Monoid[Pair]):
    """Non-commutative on an attrs type: the leftmost lo and rightmost hi."""

    def empty(self) -> Pair:
        return Pair(0, 0)

    def combine(self, a: Pair, b: Pair) -> Pair:
        if a == Pair(0, 0):
            return b
        if b == Pair(0, 0):
            return a
        return Pair(a.lo, b.hi)


@attrs.frozen
class ToPair(jobs.Operation[int, Pair]):
    async def execute(self, x: int) -> Pair:
        return Pair(x + 1, x + 1)


def url(workers: int = 3) -> str:
    return f"memory://directives-{uuid.uuid4().hex[:8]}?workers={workers}"


SETTINGS = settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(st.lists(st.integers(-1000, 1000), max_size=40), st.integers(1, 7))
async def test_collect_equals_local_map_in_input_order(xs: list[int], window: int) -> None:
    async with jobs.connect(url()) as rt:
        got = await jobs.from_iter(xs).map(Square()).collect().run(rt, max_in_flight=window)
        assert got == [x * x for x in xs]
        got = await jobs.from_iter(xs).map(Offset(by=3)).collect().run(rt)
        assert got == [x + 3 for x in xs]


@SETTINGS
@given(st.lists(st.integers(0, 99), max_size=40), st.integers(1, 5))
async def test_fold_string_concatenation_keeps_order(xs: list[int], window: int) -> None:
    async with jobs.connect(url()) as rt:
        got = await jobs.from_iter(xs).map(Show()).fold(Concat()).run(rt, max_in_flight=window)
        assert got == "".join(f"<{x}>" for x in xs)


@SETTINGS
@given(st.lists(st.integers(-50, 50), max_size=30))
async def test_fold_sum_and_attrs_monoid(xs: list[int]) -> None:
    async with jobs.connect(url()) as rt:
        assert await jobs.from_iter(xs).map(Square()).fold(Sum()).run(rt) == sum(x * x for x in xs)
        span = await jobs.from_iter(range(len(xs))).map(ToPair()).fold(Span()).run(rt)
        assert span == (Pair(1, len(xs)) if xs else Pair(0, 0))


async def test_collect_order_with_out_of_order_completion(autojump_clock: trio.abc.Clock) -> None:
    """Later items finish first; collect still gives input order, map gives completion order."""

    async with jobs.connect(url(workers=2)) as rt:
        items = await jobs.from_iter([3, 2, 1, 0]).map(Sleepy()).run(rt)
        assert [i.index for i in items] == [3, 2, 1, 0]
        assert [i.value for i in items] == [0, 1, 2, 3]
        assert await jobs.from_iter([3, 2, 1, 0]).map(Sleepy()).collect().run(rt) == [3, 2, 1, 0]


@attrs.frozen
class Sleepy(jobs.Operation[int, int]):
    async def execute(self, x: int) -> int:
        await trio.sleep(x)
        return x


async def test_map_stream_yields_indexed_results(autojump_clock: trio.abc.Clock) -> None:
    async with jobs.connect(url()) as rt:
        seen = []
        async with jobs.from_iter(range(10)).map(Square()).stream(rt) as results:
            async for item in results:
                seen.append((item.index, item.value))
        assert sorted(seen) == [(i, i * i) for i in range(10)]


async def test_then_runs_one_job_and_empty_fold_sends_nothing() -> None:
    async with jobs.connect(url()) as rt:
        assert await jobs.literal(7).then(Offset(by=35)).run(rt) == 42
        sent = rt.statistics().jobs_sent
        assert await jobs.from_iter([]).map(Show()).fold(Concat()).run(rt) == ""
        assert await jobs.from_iter([]).map(Show()).collect().run(rt) == []
        assert rt.statistics().jobs_sent == sent


async def test_a_large_map_is_not_materialized() -> None:
    """The source is pulled lazily: never more than max_in_flight ahead of the results."""
    pulled = 0
    answered = 0
    ahead = 0

    def source():  # type: ignore[no-untyped-def]
        nonlocal pulled, ahead
        for i in range(2000):
            pulled += 1
            ahead = max(ahead, pulled - answered)
            yield i

    async with (
        jobs.connect(url()) as rt,
        jobs.from_iter(source()).map(Square()).stream(rt, max_in_flight=64) as results,
    ):
        async for _ in results:
            answered += 1
    assert answered == 2000
    # in flight + one received batch being handed on + the stream buffer: bounded by 3x
    assert ahead <= 3 * 64 + 1


async def test_async_source() -> None:
    async def agen():  # type: ignore[no-untyped-def]
        for i in range(5):
            await trio.lowlevel.checkpoint()
            yield i

    async with jobs.connect(url()) as rt:
        assert await jobs.from_iter(agen()).map(Square()).collect().run(rt) == [0, 1, 4, 9, 16]


async def test_a_monoid_is_an_operation_on_pairs() -> None:
    async with jobs.connect(url(workers=1)) as rt:
        assert await jobs.literal(("ab", "cd")).then(Concat()).run(rt) == "abcd"
        assert await jobs.from_iter([(1, 2), (3, 4)]).map(Sum()).collect().run(rt) == [3, 7]


async def test_concurrent_runs_share_a_runtime() -> None:
    async with jobs.connect(url()) as rt, trio.open_nursery() as nursery:
        results: dict[int, list[int]] = {}

        async def one(k: int) -> None:
            results[k] = await jobs.from_iter(range(50)).map(Offset(by=k)).collect().run(rt)

        for k in range(4):
            nursery.start_soon(one, k)
    assert results == {k: [i + k for i in range(50)] for k in range(4)}


@attrs.frozen
class Nap(jobs.Operation[float, float], name="directives-window-nap"):
    async def execute(self, x: float) -> float:
        await trio.sleep(x)
        return x


async def test_a_run_keeps_twice_its_workers_slots_in_flight(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A batch does not queue its whole bound ahead of a job submitted after it."""
    url = f"memory://window-{uuid.uuid4().hex[:8]}"
    async with jobs.connect(url, workers=1, worker_concurrency=20, max_in_flight=1024) as rt:
        await jobs.literal(0.0).then(Nap()).run(rt)  # the runtime has seen the worker
        assert rt.slots_seen == {"default": 20}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(jobs.from_iter([1.0] * 200).map(Nap()).collect().run, rt)
            await trio.sleep(0.5)
            [stats] = await rt.broker.stats()
            assert (stats.running, stats.queued) == (20, 20), stats  # a window of 40, not 200
            single = await rt.submit(Nap(), 0.0)
            started = trio.current_time()
            await single.result(timeout=60)
            assert trio.current_time() - started < 2.5, "the job waited behind the batch"
