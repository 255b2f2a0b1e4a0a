"""Types on the wire: what an operation may declare, what cannot be encoded, strict decoding.

Faults 6 and 10 of issue 8: an input type cattrs cannot structure killed the
worker loop (and the rest of its consume batch); values msgpack cannot carry
raised raw msgpack errors naming nothing; a worker turned ``1`` into ``"1"``.
"""

from __future__ import annotations

import decimal
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import msgpack
import pytest
import trio

from wireframe import jobs
from wireframe.jobs import codec
from wireframe.jobs.codec import decode_result, encode_job_body
from wireframe.jobs.operations import spec_of


class Opaque:
    """A plain class: cattrs has no structure hook for it."""

    def __init__(self, x: int) -> None:
        self.x = x


# -- fault 6: the class definition rejects a type the codec cannot build ------------------


def test_an_object_input_is_rejected_when_the_class_is_defined() -> None:
    with pytest.raises(jobs.OperationError) as info:

        @attrs.frozen
        class TakesObject(jobs.Operation[object, int]):
            def execute(self, x: object) -> int:
                return 1

    message = str(info.value)
    assert "TakesObject" in message and "input type" in message and "object" in message
    assert "supported: None, bool, int" in message
    assert not any(n.endswith("TakesObject") for n in jobs.registered_operations())


def test_a_plain_class_or_decimal_anywhere_in_a_type_is_rejected() -> None:
    with pytest.raises(
        jobs.OperationError, match=r"input type .*list\[.*Opaque\].*contains Opaque"
    ):

        class TakesOpaques(jobs.Operation[list[Opaque], int]):
            def execute(self, x: list[Opaque]) -> int:
                return len(x)

    with pytest.raises(jobs.OperationError, match=r"output type .*Decimal"):

        class GivesDecimal(jobs.Operation[int, decimal.Decimal]):
            def execute(self, x: int) -> decimal.Decimal:
                return decimal.Decimal(x)

    with pytest.raises(jobs.OperationError, match=r"Sums.*tuple\[.*Opaque, .*Opaque\]"):

        class Sums(jobs.Monoid[Opaque]):
            def empty(self) -> Opaque:
                return Opaque(0)

            def combine(self, a: Opaque, b: Opaque) -> Opaque:
                return Opaque(a.x + b.x)


def test_generic_intermediates_monoids_and_later_types_are_accepted() -> None:
    from typing import Generic, TypeVar

    V = TypeVar("V")

    @attrs.frozen
    class ListOp(jobs.Operation[list[V], V], Generic[V]):  # a generic intermediate
        def execute(self, xs: list[V]) -> V:
            return xs[0]

    @attrs.frozen
    class FirstInt(ListOp[int]):
        pass

    @attrs.frozen
    class MaxOf(jobs.Monoid[int]):
        def empty(self) -> int:
            return 0

        def combine(self, a: int, b: int) -> int:
            return max(a, b)

    assert spec_of(MaxOf).input_type == tuple[int, int]
    assert spec_of(FirstInt).executor == "thread"
    # A forward reference to a class defined further down the module resolves on first use.
    assert spec_of(LaterOp).input_type is LaterInput
    assert spec_of(LaterOp).output_type == list[LaterInput]


@attrs.frozen
class LaterOp(jobs.Operation["LaterInput", "list[LaterInput]"]):
    def execute(self, x: LaterInput) -> list[LaterInput]:
        return [x, x]


@attrs.frozen
class LaterInput:
    inner: LaterInner  # resolved by cattrs when first structured


@attrs.frozen
class LaterInner:
    n: int


@attrs.frozen
class Nothing(jobs.Operation[None, None]):  # cattrs itself has no hook for None
    def execute(self, x: None) -> None:
        return None


async def test_a_forward_referenced_input_and_none_round_trip() -> None:
    async with jobs.connect(f"memory://types-{uuid.uuid4().hex[:8]}?workers=1") as rt:
        x = LaterInput(LaterInner(3))
        assert await jobs.literal(x).then(LaterOp()).run(rt) == [x, x]
        assert await jobs.from_iter([None, None]).map(Nothing()).collect().run(rt) == [None, None]


def test_operation_parameters_the_codec_cannot_build_fail_on_first_use() -> None:
    @attrs.frozen
    class WithOpaqueParam(jobs.Operation[int, int]):
        helper: Opaque

        def execute(self, x: int) -> int:
            return x

    with pytest.raises(jobs.OperationError, match=r"parameters of operation .*WithOpaqueParam"):
        spec_of(WithOpaqueParam)


# -- fault 6, defence in depth: nothing a job carries ends the worker loop ----------------


@attrs.frozen
class NeverResolves(jobs.Operation["NoSuchType", int]):  # type: ignore[name-defined]
    """Its input type is a forward reference nothing defines: accepted at definition
    (it might resolve later), unusable in the worker."""

    def execute(self, x: object) -> int:
        return 0


@attrs.frozen
class Double(jobs.Operation[int, int]):
    def execute(self, x: int) -> int:
        return 2 * x


@asynccontextmanager
async def broker_and_worker(
    preload: list[jobs.Message],
) -> AsyncIterator[tuple[jobs.Broker, jobs.Worker]]:
    """A memory broker with ``preload`` queued *before* the worker starts (so the
    worker takes them in one consume batch), and that worker serving."""
    async with jobs.open_broker(f"memory://types-{uuid.uuid4().hex[:8]}") as broker:
        await broker.declare_queue("default")
        await broker.publish("default", preload)
        worker = jobs.Worker(broker, concurrency=8)
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            yield broker, worker
            nursery.cancel_scope.cancel()


def _job(
    message_id: str, op: jobs.Operation[object, object] | list[object], x: object
) -> jobs.Message:
    op_bytes = (
        msgpack.packb(op, use_bin_type=True) if isinstance(op, list) else codec.encode_operation(op)  # type: ignore[arg-type]
    )
    return jobs.Message(message_id, encode_job_body(op_bytes, "r", 0, 1, x), "ch")


async def _replies(broker: jobs.Broker, n: int) -> dict[str, jobs.Reply]:
    got: dict[str, jobs.Reply] = {}
    with trio.fail_after(10):
        while len(got) < n:
            for reply in await broker.receive_replies("ch", 10):
                got[reply.message_id] = reply
    return got


async def test_a_job_whose_type_cannot_be_built_fails_and_its_batch_runs() -> None:
    batch = [
        _job("good-1", Double(), 1),
        _job("unbuildable", NeverResolves(), {"any": "thing"}),  # type: ignore[arg-type]
        _job("good-2", Double(), 2),
        _job("unknown", ["NoSuchOperation", {}], 3),
        jobs.Message("garbage", b"\xc1 not msgpack", "ch"),
        _job("good-3", Double(), 3),
    ]
    async with broker_and_worker(batch) as (broker, worker):
        replies = await _replies(broker, len(batch))
        values = {
            mid: decode_result(replies[mid].body or b"", int).value
            for mid in ("good-1", "good-2", "good-3")
        }
        assert values == {"good-1": 2, "good-2": 4, "good-3": 6}
        unbuildable = decode_result(replies["unbuildable"].body or b"").error
        assert unbuildable is not None and unbuildable.kind is jobs.ErrorKind.FATAL
        assert unbuildable.type_name == "wireframe.jobs.errors.OperationError"
        assert "NeverResolves" in unbuildable.message and "NoSuchType" in unbuildable.message
        unknown = decode_result(replies["unknown"].body or b"").error
        assert unknown is not None and unknown.kind is jobs.ErrorKind.UNKNOWN_OPERATION
        assert replies["garbage"].is_dead
        counts = worker.statistics()
        assert counts.failed == 2 and counts.dead == 1
        # The loop goes on serving.
        rt = jobs.Runtime(broker)
        assert await jobs.from_iter(range(3)).map(Double()).collect().run(rt) == [0, 2, 4]


# -- fault 10: what cannot be encoded is named --------------------------------------------


@attrs.frozen
class Count(jobs.Operation[int, int]):
    def execute(self, x: int) -> int:
        return x


@attrs.frozen
class Shout(jobs.Operation[str, str]):
    def execute(self, x: str) -> str:
        return x.upper()


@attrs.frozen
class Tagged:
    name: str
    tags: dict[str, int]


@attrs.frozen
class CountTags(jobs.Operation[Tagged, int]):
    def execute(self, x: Tagged) -> int:
        return len(x.tags)


@pytest.mark.parametrize(
    ("op", "items", "expected"),
    [
        (Count(), [1, 2, {3}], r"item 2 of operation 'Count' \(declared type int\): \$ is a set"),
        (
            Count(),
            [2**70],
            r"item 0 of operation 'Count'.*\$ is the int 1180591620717411303424, outside msgpack's 64-bit range",
        ),
        (
            Shout(),
            ["ok", "bad \ud800"],
            r"item 1 of operation 'Shout'.*\$ is a str that is not valid Unicode",
        ),
        (
            CountTags(),
            [Tagged("a", {"a": 1, "b": {2}})],
            r"item 0 of operation 'CountTags' \(declared type Tagged\): \$\.tags\.b is a set",
        ),
    ],
)
async def test_an_input_that_cannot_be_encoded_is_a_codec_error_naming_it(
    op: jobs.Operation[object, object], items: list[object], expected: str
) -> None:
    async with jobs.connect(f"memory://types-{uuid.uuid4().hex[:8]}?workers=1") as rt:
        with pytest.raises(jobs.CodecError, match=expected) as info:
            await jobs.from_iter(items).map(op).collect().run(rt)
        assert "a value is converted by its declared type, which may be None, bool" in str(
            info.value
        )
        # The runtime is still usable.
        assert await jobs.literal(5).then(Count()).run(rt) == 5


@attrs.frozen
class ReturnsSet(jobs.Operation[int, int]):
    def execute(self, x: int) -> int:
        return {x}  # type: ignore[return-value]


@attrs.frozen
class ReturnsSurrogate(jobs.Operation[int, str]):
    def execute(self, x: int) -> str:
        return "\udc80"


@attrs.frozen
class RaisesSurrogate(jobs.Operation[int, int]):
    def execute(self, x: int) -> int:
        raise ValueError("bad byte \udc80 here")


async def test_a_result_that_cannot_be_encoded_fails_its_job_clearly() -> None:
    async with jobs.connect(f"memory://types-{uuid.uuid4().hex[:8]}?workers=1") as rt:
        with pytest.raises(jobs.JobFailed) as info:
            await jobs.literal(1).then(ReturnsSet()).run(rt, timeout=10)
        assert info.value.type_name == "wireframe.jobs.errors.CodecError"
        assert "the result of operation 'ReturnsSet' (declared type int): $ is a set" in str(
            info.value
        )
        with pytest.raises(
            jobs.JobFailed, match=r"result of operation 'ReturnsSurrogate'.*not valid Unicode"
        ):
            await jobs.literal(1).then(ReturnsSurrogate()).run(rt, timeout=10)
        # An error whose message msgpack cannot carry still reaches the directive.
        with pytest.raises(jobs.JobFailed, match=r"ValueError: bad byte \\udc80 here"):
            await jobs.literal(1).then(RaisesSurrogate()).run(rt, timeout=10)
        assert await jobs.literal(5).then(Count()).run(rt) == 5


# -- fault 10: strict scalars: no silent "1" for a str -----------------------------------


@attrs.frozen
class Point:
    x: int
    y: float
    label: str
    flag: bool
    raw: bytes


def test_scalars_are_strict_and_name_the_field() -> None:
    good = {"x": 1, "y": 2, "label": "a", "flag": True, "raw": b"\x00"}
    assert codec.structure(good, Point, "$.input") == Point(1, 2.0, "a", True, b"\x00")
    assert type(codec.structure(good, Point, "$.input").y) is float  # an int is a float
    for field, bad, got in [
        ("label", 1, "int 1"),
        ("x", "1", "str '1'"),
        ("x", True, "bool True"),  # a bool is not an int
        ("y", "2.0", "str '2.0'"),
        ("flag", 1, "int 1"),
        ("raw", "abc", "str 'abc'"),
    ]:
        with pytest.raises(jobs.CodecError) as info:
            codec.structure({**good, field: bad}, Point, "$.input")
        assert f"$.input.{field}" in str(info.value)
        assert f"got {got}" in str(info.value)
    with pytest.raises(jobs.CodecError, match=r"expected str, got int 1 @ \$\.input"):
        codec.structure(1, str, "$.input")
    with pytest.raises(jobs.CodecError, match=r"expected int, got bool True"):
        codec.structure(True, int, "$.input")


async def test_a_worker_does_not_turn_an_int_into_a_str() -> None:
    async with jobs.connect(f"memory://types-{uuid.uuid4().hex[:8]}?workers=1") as rt:
        with pytest.raises(jobs.JobFailed) as info:
            await jobs.from_iter([1]).map(Shout()).collect().run(rt, timeout=10)  # type: ignore[arg-type]
        assert info.value.error.kind is jobs.ErrorKind.DEAD
        assert "cannot decode $.input as str: expected str, got int 1" in str(info.value)


@attrs.frozen
class SaysInt(jobs.Operation[int, str]):
    def execute(self, x: int) -> str:
        return x  # type: ignore[return-value]


async def test_a_result_of_the_wrong_type_fails_its_job_naming_the_operation() -> None:
    async with jobs.connect(f"memory://types-{uuid.uuid4().hex[:8]}?workers=1") as rt:
        with pytest.raises(jobs.JobFailed) as info:
            await jobs.from_iter([7]).map(SaysInt()).collect().run(rt, timeout=10)
        message = str(info.value)
        assert "(item 0)" in message and "operation 'SaysInt'" in message
        assert "expected str, got int 7" in message
