"""TARGET loading: file paths and modules, ``:attr`` of a builder, service or factory, clear errors."""

from __future__ import annotations

import pytest
from clikit import EXAMPLES, SERVICES

import wireframe as wf
from wireframe.cli.target import Target, TargetError, load_target


def test_file_path_finds_the_one_builder() -> None:
    target = load_target(str(SERVICES / "cli_quick.py"))
    assert target.builder is not None
    assert target.label.endswith("cli_quick.py:builder")
    assert [n.name for n in target.plan().layers] == ["quick"]


def test_attr_names_a_builder_and_a_factory_is_called() -> None:
    named = load_target(f"{SERVICES / 'cli_failing.py'}:failing")
    assert named.builder is not None
    made = load_target(f"{SERVICES / 'cli_failing.py'}:make_stubborn")
    assert made.builder is not None
    assert made.graceful_shutdown_timeout == 30.0


def test_a_callable_returning_a_service_gives_a_fresh_service() -> None:
    target = load_target(f"{SERVICES / 'cli_choices.py'}:service")
    assert isinstance(target.service, wf.Service)
    service = target.make_service(graceful_shutdown_timeout=1.5)
    assert service.graceful_shutdown_timeout == 1.5
    assert service.handle_signals is False


def test_module_name_is_imported_from_the_current_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(EXAMPLES)
    target = load_target("hello")
    assert [n.name for n in target.plan().layers] == ["config", "hello"]


def test_several_services_is_an_error_listing_them() -> None:
    with pytest.raises(TargetError) as info:
        load_target(str(SERVICES / "cli_choices.py"))
    message = str(info.value)
    assert "several services" in message
    assert "first (ServiceBuilder)" in message and "second (ServiceBuilder)" in message
    assert "cli_choices.py:NAME" in message


def test_no_service_is_an_error() -> None:
    with pytest.raises(TargetError, match="defines no ServiceBuilder or Service"):
        load_target(str(SERVICES / "cli_empty.py"))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("cli_choices.py:missing", "has no attribute 'missing'"),
        ("cli_choices.py:number", "is int; it must be a ServiceBuilder"),
        ("nowhere.py", "no such file"),
    ],
)
def test_bad_targets_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(TargetError, match=message):
        load_target(str(SERVICES / spec))


def test_unknown_module_is_a_clear_error() -> None:
    with pytest.raises(TargetError, match="no module named 'no_such_module_xyz'"):
        load_target("no_such_module_xyz")


def test_extra_layers_of_a_name_the_target_has_are_left_out() -> None:
    from wireframe.telemetry import TelemetryLayer

    builder = wf.ServiceBuilder(handle_signals=False).add_layer(TelemetryLayer(sample_every=1.0))
    target = Target("t", builder=builder)
    service = target.make_service(extra_layers=[wf.HealthLayer(port=0), TelemetryLayer()])
    names = [node.name for node in service.plan.layers]
    assert sorted(names) == ["health", "telemetry"]
    [telemetry] = [n.layer for n in service.plan.layers if n.name == "telemetry"]
    assert telemetry.sample_every == 1.0  # the target's own
