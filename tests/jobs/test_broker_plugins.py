"""Brokers as plug-ins: ``open_broker`` finds a scheme through the ``wireframe.brokers`` entry points.

Each test installs distributions of its own the way pip would leave them — a
``*.dist-info`` folder with ``METADATA`` and ``entry_points.txt``, and the
modules beside it — in ``tmp_path``, put first on ``sys.path``. A distribution
named ``wireframe`` there hides the installed one (the first of a name on the
path wins), which is how the tests show wireframe's own brokers opening through
their entry points, or through the built-in table when its metadata lacks them,
whatever this checkout's install looks like.
"""

from __future__ import annotations

import sys
import tomllib
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from trio.testing import MockClock

from wireframe.jobs.broker import (
    ENTRY_POINT_GROUP,
    SCHEMES,
    Broker,
    BrokerError,
    BrokerURLError,
    known_schemes,
    open_broker,
)
from wireframe.jobs.broker import schemes as broker_schemes
from wireframe.testing import WorkQueueConformance

REPO = Path(__file__).resolve().parents[2]

#: A broker of the test's own: ``tiny://NAME`` is the memory broker under another scheme.
TINY_BROKER = '''
"""tiny:// -- a plug-in broker of a test's own."""
from wireframe.jobs.brokers import memory

opened = []


def open(url, *, create=True):
    opened.append((url, create))
    return memory.open("memory://" + url.split("://", 1)[1], create=create)


open_tiny = open  # the same, to name as a callable: "module:open_tiny"
NOT_AN_OPENER = 42
'''

Install = Callable[..., str]


@pytest.fixture
def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Install]:
    """``install(name, {scheme: target}, module_text=None, version="1.0")``: a
    distribution on ``sys.path``; with ``module_text`` also a module of a fresh name,
    which ``{module}`` in a target stands for. Returns the module's name."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    made: list[str] = []

    def install(
        name: str,
        brokers: Mapping[str, str],
        module_text: str | None = None,
        version: str = "1.0",
    ) -> str:
        module = f"plugin_{uuid.uuid4().hex}"
        if module_text is not None:
            (root / f"{module}.py").write_text(module_text)
            made.append(module)
        info = root / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        lines = [f"{scheme} = {target.format(module=module)}" for scheme, target in brokers.items()]
        group = [f"[{ENTRY_POINT_GROUP}]", *lines] if lines else []
        (info / "entry_points.txt").write_text("\n".join(group) + "\n")
        return module

    yield install
    for module in made:
        sys.modules.pop(module, None)


def pyproject_brokers() -> dict[str, str]:
    """The ``wireframe.brokers`` entry points ``pyproject.toml`` registers."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    brokers: dict[str, str] = project["entry-points"][ENTRY_POINT_GROUP]
    return brokers


def test_pyproject_registers_exactly_the_built_in_table() -> None:
    assert pyproject_brokers() == dict(SCHEMES)


async def test_a_broker_a_distribution_registers_opens_by_its_scheme(install: Install) -> None:
    module = install("tiny-broker", {"tiny": "{module}"}, TINY_BROKER)
    async with open_broker("TINY://plug?lease=4", create=False) as broker:
        assert isinstance(broker, Broker)
        assert broker.url.lease == 4
        await broker.ping()
    assert sys.modules[module].opened == [("TINY://plug?lease=4", False)]
    assert "tiny" in known_schemes()


async def test_an_entry_point_may_name_the_opener_itself(install: Install) -> None:
    module = install("tiny-broker", {"tinyfn": "{module}:open_tiny"}, TINY_BROKER)
    async with open_broker("tinyfn://plug") as broker:
        await broker.ping()
    assert sys.modules[module].opened == [("tinyfn://plug", True)]


def test_the_unknown_scheme_error_lists_registered_and_built_in_schemes(
    install: Install,
) -> None:
    install("tiny-broker", {"tiny": "{module}"}, TINY_BROKER)
    with pytest.raises(BrokerURLError) as info:
        open_broker("nope://u:hunter2@host/")
    message = str(info.value)
    assert "unknown scheme 'nope'" in message
    known = message.split("known schemes are ", 1)[1].split(", ")
    assert known == sorted(known), "the known schemes are listed sorted"
    assert {"memory", "redis", "rediss", "sqlite", "tiny"} <= set(known), known
    assert "hunter2" not in message


def test_a_scheme_two_distributions_register_is_refused_naming_both(install: Install) -> None:
    first = install("one-broker", {"dup": "{module}"}, TINY_BROKER)
    second = install("other-broker", {"dup": "{module}"}, TINY_BROKER)
    with pytest.raises(BrokerError, match="registered by more than one broker") as info:
        open_broker("dup://x")
    message = str(info.value)
    assert first in message and "'one-broker'" in message
    assert second in message and "'other-broker'" in message


def test_a_plugin_claiming_a_built_in_scheme_conflicts_even_without_wireframe_metadata(
    install: Install,
) -> None:
    install("wireframe", {}, version="0.0.1")  # an install without entry points: the table
    install("rogue", {"memory": "{module}"}, TINY_BROKER)
    with pytest.raises(BrokerError, match="memory:// is registered by more than one") as info:
        open_broker("memory://x")
    assert "wireframe's built-in table" in str(info.value)
    assert "'rogue'" in str(info.value)


def test_a_plugin_registering_the_same_target_as_wireframe_is_no_conflict(
    install: Install,
) -> None:
    install("repackaged", {"memory": SCHEMES["memory"]})
    open_broker("memory://same-target")  # not entered: finding it is the point


def test_a_plugin_that_fails_to_load_is_a_broker_error_naming_it(install: Install) -> None:
    install("broken", {"broken": "no_such_module_anywhere"})
    with pytest.raises(BrokerError, match="broken://") as info:
        open_broker("broken://x")
    assert not isinstance(info.value, BrokerURLError)
    assert "no_such_module_anywhere" in str(info.value)
    assert "'broken'" in str(info.value)
    assert "ModuleNotFoundError" in str(info.value)
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


def test_a_target_that_cannot_open_anything_is_a_broker_error(install: Install) -> None:
    install("odd", {"odd": "{module}:NOT_AN_OPENER"}, TINY_BROKER)
    with pytest.raises(BrokerError, match="neither a module with an open"):
        open_broker("odd://x")


async def test_without_wireframe_metadata_the_built_in_table_opens_the_built_ins(
    install: Install, tmp_path: Path
) -> None:
    install("wireframe", {}, version="0.0.1")  # a checkout run without pip install, in effect
    assert {"memory", "sqlite", "redis", "rediss"} <= set(known_schemes())
    [memory] = broker_schemes._registered()["memory"]
    assert memory.dist is None, "the memory broker should come from the built-in table"
    async with open_broker(f"sqlite:///{tmp_path}/jobs.db") as broker:
        await broker.ping()


async def test_the_table_fills_in_a_scheme_stale_metadata_lacks(
    install: Install, tmp_path: Path
) -> None:
    stale = {k: v for k, v in SCHEMES.items() if k != "sqlite"}
    install("wireframe", stale, version="0.0.1")  # installed before sqlite:// was registered
    [memory] = broker_schemes._registered()["memory"]
    assert memory.dist is not None and memory.dist.version == "0.0.1"
    [sqlite] = broker_schemes._registered()["sqlite"]
    assert sqlite.dist is None
    async with open_broker(f"sqlite:///{tmp_path}/jobs.db") as broker:
        await broker.ping()


class TestMemoryThroughItsEntryPoint(WorkQueueConformance):
    """The work queue's conformance on ``memory://`` opened through the entry point
    ``pyproject.toml`` registers (in a ``wireframe`` distribution as pip writes it)."""

    @pytest.fixture
    def broker_url(self, install: Install) -> str:
        install("wireframe", pyproject_brokers(), version="0.0.2")
        [memory] = broker_schemes._registered(fresh=True)["memory"]
        assert memory.dist is not None and memory.dist.version == "0.0.2", memory
        return f"memory://entry-point-{uuid.uuid4().hex}"

    @pytest.fixture
    def broker_clock(self) -> MockClock:
        return MockClock(autojump_threshold=0)


class TestTinyPluginConformance(WorkQueueConformance):
    """The work queue's conformance on a plug-in of a test's own, ``tiny://``."""

    @pytest.fixture
    def broker_url(self, install: Install) -> str:
        install("tiny-broker", {"tiny": "{module}"}, TINY_BROKER)
        return f"tiny://conformance-{uuid.uuid4().hex}"

    @pytest.fixture
    def broker_clock(self) -> MockClock:
        return MockClock(autojump_threshold=0)
