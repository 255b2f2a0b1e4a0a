"""Operation names (fault 12 of issue 8): the same in every process however a file was imported.

The default name is the class's ``__qualname__``; ``name=`` overrides it; two
different classes claiming one name is an error at definition; one class
loaded twice (as ``__main__`` and as a module) is not.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from types import ModuleType

import attrs
import pytest
import trio

from wireframe import jobs
from wireframe.jobs import codec
from wireframe.jobs.codec import decode_result, encode_job_body


@attrs.frozen
class NamesAddOne(jobs.Operation[int, int]):
    def execute(self, x: int) -> int:
        return x + 1


@attrs.frozen
class NamesRenamed(jobs.Operation[int, int], name="names.renamed"):
    def execute(self, x: int) -> int:
        return x


def test_the_default_name_is_the_qualname_and_name_overrides_it() -> None:
    assert NamesAddOne.op_name == "NamesAddOne"
    assert NamesRenamed.op_name == "names.renamed"
    registry = jobs.registered_operations()
    assert registry["NamesAddOne"] is NamesAddOne
    assert registry["names.renamed"] is NamesRenamed

    class Local(jobs.Operation[int, int]):
        def execute(self, x: int) -> int:
            return x

    assert Local.op_name == f"{Local.__qualname__}"
    assert Local.op_name.endswith("<locals>.Local") and "test_operation_names" not in Local.op_name


def _load(path: Path, module_name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[module_name]
    return module


OP_SOURCE = """
import attrs
from wireframe import jobs

@attrs.frozen
class {cls}(jobs.Operation[int, int]):
    def execute(self, x: int) -> int:
        return x + {n}
"""


def test_one_file_loaded_under_two_module_names_is_one_operation(tmp_path: Path) -> None:
    cls = f"Twice{uuid.uuid4().hex[:8]}"
    path = tmp_path / "svc.py"
    path.write_text(OP_SOURCE.format(cls=cls, n=1))
    first = _load(path, "svc")
    second = _load(path, "mysvc.svc")  # the same file, imported another way
    a, b = getattr(first, cls), getattr(second, cls)
    assert a is not b and a.op_name == b.op_name == cls
    assert jobs.registered_operations()[cls] is b  # the newest definition runs


def test_two_different_classes_claiming_one_name_is_an_error_saying_pass_name(
    tmp_path: Path,
) -> None:
    cls = f"Twin{uuid.uuid4().hex[:8]}"
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    (tmp_path / "one" / "ops.py").write_text(OP_SOURCE.format(cls=cls, n=1))
    (tmp_path / "two" / "ops.py").write_text(OP_SOURCE.format(cls=cls, n=2))
    _load(tmp_path / "one" / "ops.py", "one_ops")
    with pytest.raises(jobs.OperationError) as info:
        _load(tmp_path / "two" / "ops.py", "two_ops")
    message = str(info.value)
    assert f"operation name {cls!r} of two_ops.{cls}" in message
    assert f"already taken by one_ops.{cls} in {tmp_path / 'one' / 'ops.py'}" in message
    assert "pass name='...'" in message
    assert jobs.registered_operations()[cls].__module__ == "one_ops"


@pytest.mark.slow  # a subprocess
def test_a_script_that_imports_itself_runs_one_operation_under_one_name(tmp_path: Path) -> None:
    """``python svc.py`` defines the class as ``__main__``; ``import svc`` defines it again."""
    (tmp_path / "svc.py").write_text(
        textwrap.dedent(
            """
            import attrs
            from wireframe import jobs

            @attrs.frozen
            class AddOne(jobs.Operation[int, int]):
                def execute(self, x: int) -> int:
                    return x + 1

            if __name__ == "__main__":
                import svc

                print(AddOne.op_name, svc.AddOne.op_name, sorted(jobs.registered_operations()))
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": str(Path(jobs.__file__).parents[2])}  # this wireframe
    done = subprocess.run(
        [sys.executable, "svc.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["AddOne", "AddOne", "['AddOne']"]


async def test_an_unknown_operation_lists_the_names_that_look_alike() -> None:
    async with jobs.open_broker(f"memory://names-{uuid.uuid4().hex[:8]}") as broker:
        worker = jobs.Worker(broker)
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            # What an orchestrator with the old module-qualified names would send.
            op = codec._packb(["mysvc.svc.NamesAddOne", {}])
            await broker.publish(
                "default", [jobs.Message("j1", encode_job_body(op, "r", 0, 1, 1), "ch")]
            )
            with trio.fail_after(10):
                (reply,) = await broker.receive_replies("ch", 1)
            nursery.cancel_scope.cancel()
    assert reply.body is not None
    error = decode_result(reply.body).error
    assert error is not None and error.kind is jobs.ErrorKind.UNKNOWN_OPERATION
    assert "unknown operation 'mysvc.svc.NamesAddOne'" in error.message
    assert "names that look alike here: 'NamesAddOne'" in error.message
    assert "Start the worker with --import of the module that defines it" in error.message
    assert "its class's __qualname__ unless the class passes name=" in error.message


def test_the_unknown_operation_message_without_look_alikes() -> None:
    none_alike = jobs.UnknownOperation("Zebra", known=["AddOne", "Square"])
    assert none_alike.alike == []
    assert "it knows 2 operation(s), none alike: 'AddOne', 'Square'" in str(none_alike)
    nothing = jobs.UnknownOperation("Zebra", known=[])
    assert "it knows no operations at all" in str(nothing)
    spelled = jobs.UnknownOperation("addone", known=["AddOne", "AddTwo", "Square"])
    assert spelled.alike[0] == "AddOne"


def test_an_abstract_attrs_intermediate_stays_unregistered_through_the_slotted_rebuild() -> None:
    """attrs rebuilds a slotted class without the class keywords; abstract=True must survive."""

    @attrs.frozen
    class AbstractBase(jobs.Operation[int, int], abstract=True):
        step: int = 1

    @attrs.frozen
    class Concrete(AbstractBase):
        def execute(self, x: int) -> int:
            return x + self.step

    names = jobs.registered_operations()
    assert not any(name.endswith("AbstractBase") for name in names)
    assert Concrete in names.values()
