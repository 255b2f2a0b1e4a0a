"""``wireframe.testing`` after a plain install (fault 14 of issue 8): no pytest needed to import it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import wireframe

WITHOUT_PYTEST = """
import sys
sys.modules["pytest"] = None  # as if not installed: `import pytest` raises ImportError

import wireframe.testing as t
from wireframe.testing import fresh_memory_url, skip_or_fail_unavailable, with_options

assert with_options("memory://x", workers=2) == "memory://x?workers=2"
assert fresh_memory_url(workers=1).startswith("memory://test-")
try:
    t.BrokerConformance
except ImportError as exc:
    print("BrokerConformance needs pytest:", exc)
print("imported")
"""


@pytest.mark.slow  # a subprocess
def test_wireframe_testing_imports_without_pytest(tmp_path: Path) -> None:
    # This wireframe, whatever the current folder and the installed copy are.
    env = {**os.environ, "PYTHONPATH": str(Path(wireframe.__file__).parents[1])}
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_PYTEST],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "BrokerConformance needs pytest: import of pytest halted; None in sys.modules",
        "imported",
    ]


def test_the_conformance_suite_is_still_importable_from_wireframe_testing() -> None:
    from wireframe.testing import BrokerConformance
    from wireframe.testing.conformance import BrokerConformance as Same

    assert BrokerConformance is Same


def test_the_old_name_of_skip_or_fail_unavailable_still_skips_and_says_it_is_deprecated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from wireframe.testing import service_unavailable

    monkeypatch.delenv("CI", raising=False)
    with (
        pytest.warns(DeprecationWarning, match="skip_or_fail_unavailable"),
        pytest.raises(pytest.skip.Exception, match="no server here"),
    ):
        service_unavailable("no server here")


def test_the_package_is_marked_typed() -> None:
    assert (Path(wireframe.__file__).parent / "py.typed").is_file()


def test_the_suite_is_organised_by_role_and_broker_conformance_is_all_of_them() -> None:
    from wireframe import testing
    from wireframe.testing import conformance

    roles = [
        testing.WorkQueueConformance,
        testing.ReplyChannelConformance,
        testing.BroadcastConformance,
        testing.PresenceConformance,
        testing.JobStoreConformance,
        testing.AdminConformance,
        testing.LimitsConformance,
    ]
    assert roles == [getattr(conformance, role.__name__) for role in roles]
    assert all(issubclass(testing.BrokerConformance, role) for role in roles)
    tests_of = {role: {n for n in vars(role) if n.startswith("test_")} for role in roles}
    every = {n for n in dir(testing.BrokerConformance) if n.startswith("test_")}
    assert every == set().union(*tests_of.values()), "BrokerConformance runs every role's tests"
    assert all(tests_of.values()), "each role has tests of its own"


def test_the_orchestration_store_suite_is_exported_but_not_part_of_broker_conformance() -> None:
    from wireframe import testing
    from wireframe.testing.conformance import OrchestrationStoreConformance

    assert testing.OrchestrationStoreConformance is OrchestrationStoreConformance
    assert "OrchestrationStoreConformance" in testing.__all__
    assert not issubclass(testing.BrokerConformance, OrchestrationStoreConformance)
    ours = {n for n in dir(OrchestrationStoreConformance) if n.startswith("test_")}
    assert ours, "the orchestration store suite has tests"
    assert not ours & {n for n in dir(testing.BrokerConformance) if n.startswith("test_")}
