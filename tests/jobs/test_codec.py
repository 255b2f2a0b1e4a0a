"""The codec and the operation registry: round trips, clear decode errors, the allowlist."""

from __future__ import annotations

import attrs
import pytest

from wireframe import jobs
from wireframe.jobs import codec
from wireframe.jobs.operations import spec_of


@attrs.frozen
class Point:
    x: int
    y: int


@attrs.frozen
class Move(jobs.Operation[Point, Point], name="test.move"):
    dx: int

    def execute(self, p: Point) -> Point:
        return Point(p.x + self.dx, p.y)


def test_explicit_name_and_types() -> None:
    assert Move.op_name == "test.move"
    spec = spec_of(Move)
    assert (spec.input_type, spec.output_type, spec.executor) == (Point, Point, "thread")
    assert jobs.lookup_operation("test.move") is spec
    assert jobs.lookup_operation("test.nothing") is None


def test_duplicate_name_raises_at_definition() -> None:
    with pytest.raises(jobs.OperationError, match="already taken"):

        class Other(jobs.Operation[int, int], name="test.move"):
            def execute(self, x: int) -> int:
                return x


def test_job_round_trip() -> None:
    op = codec.encode_operation(Move(dx=2))
    point = codec.unstructure(Point(1, 2), Point)
    env = codec.decode_envelope(codec.encode_job_body(op, "run", 3, 2, point, {"k": "v"}))
    assert (env.run_id, env.index, env.attempt, env.metadata) == ("run", 3, 2, {"k": "v"})
    spec, move = codec.OpCache().resolve(env.op)
    assert move == Move(dx=2)
    assert codec.structure(env.input, spec.input_type, "$.input") == Point(1, 2)
    retried = codec.decode_envelope(env.with_attempt(3))
    assert retried.attempt == 3 and retried.input == env.input
    first = codec.decode_envelope(codec.encode_input(op, "run", 3, Point(1, 2), spec_of(Move)))
    assert first == attrs.evolve(env, attempt=1, metadata={})  # what a directive sends


def test_result_round_trip() -> None:
    ok = codec.encode_result(codec.JobResult(value=Point(1, 1)), Point)
    assert codec.decode_result(ok, Point) == codec.JobResult(value=Point(1, 1))
    skipped = codec.encode_result(codec.JobResult(skipped=True))
    assert codec.decode_result(skipped).skipped
    error = jobs.RemoteError(jobs.ErrorKind.FATAL, "x.Boom", "bad", "tb", jobs.Ignore)
    assert codec.decode_result(codec.encode_result(codec.JobResult(error=error))).error == error


def test_decode_errors_name_the_field() -> None:
    with pytest.raises(jobs.CodecError, match=r"\$\.input\.y"):
        codec.structure({"x": 1, "y": "nope"}, Point, "$.input")
    with pytest.raises(jobs.CodecError, match="not msgpack"):
        codec.decode_envelope(b"\xc1")
    with pytest.raises(jobs.CodecError, match=r"\$\.index"):
        codec.decode_envelope(codec.encode_job_body(b"op", "run", "three", 1, None))  # type: ignore[arg-type]
    bad_params = codec.encode_job_body(b"\x92\xa9test.move\x81\xa2dx\xa1a", "r", 0, 1, None)
    with pytest.raises(jobs.CodecError, match=r"\$\.operation\(test\.move\)\.dx"):
        codec.OpCache().resolve(codec.decode_envelope(bad_params).op)


def test_unknown_operation_is_never_imported() -> None:
    body = codec.encode_job_body(codec._packb(["os.system", {}]), "r", 0, 1, "echo hi")
    with pytest.raises(jobs.UnknownOperation, match=r"os\.system"):
        codec.OpCache().resolve(codec.decode_envelope(body).op)


def test_remote_error_from_exception() -> None:
    try:
        raise KeyError("k")
    except KeyError as exc:
        error = jobs.RemoteError.from_exception(exc)
    assert error.type_name == "KeyError"
    assert "Traceback" in error.traceback
    failed = jobs.JobFailed(error, job_id="j", index=4)
    assert "KeyError" in str(failed) and "'k'" in str(failed) and "item 4" in str(failed)
