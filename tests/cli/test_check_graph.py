"""``wireframe check`` and ``wireframe graph``: no wire() runs; tree, valid dot, JSON."""

from __future__ import annotations

import json

import pytest
from clikit import SERVICES, run_wireframe
from dotparse import DotError, parse_dot
from typer.testing import CliRunner

from wireframe.cli import app
from wireframe.cli.target import import_module

runner = CliRunner()
WIRING = SERVICES / "cli_wiring.py"


def test_check_passes_without_running_any_wire() -> None:
    cli_wiring = import_module(str(WIRING))  # the very module the CLI imports (cached)

    result = runner.invoke(app, ["check", f"{WIRING}:trap"])
    assert result.exit_code == 0, result.output
    assert "wiring OK" in result.stdout and "trap" in result.stdout
    assert cli_wiring.WIRE_CALLS == []
    assert runner.invoke(app, ["graph", f"{WIRING}:trap"]).exit_code == 0
    assert cli_wiring.WIRE_CALLS == []


def test_check_lists_every_problem_and_exits_2() -> None:
    result = runner.invoke(app, ["check", f"{WIRING}:broken", "--json"])
    assert result.exit_code == 2
    data = json.loads(result.stdout)
    assert data["ok"] is False
    messages = {p["layer"]: p["message"] for p in data["wiring_problems"]}
    assert set(messages) == {"api", "cache"}
    assert "takes resource Database" in messages["api"]
    assert "which layer 'api' already gives" in messages["cache"]
    table = runner.invoke(app, ["check", f"{WIRING}:broken"])
    assert table.exit_code == 2 and "2 wiring problems" in table.stdout


def test_check_json_when_ok() -> None:
    result = runner.invoke(app, ["check", "examples/wordcount.py", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["ok"] is True and data["layers"] == ["job-runtime", "worker:default", "wordcount"]


def test_graph_tree_shows_layers_resources_and_tasks_by_kind() -> None:
    result = runner.invoke(app, ["graph", "examples/hello.py"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    for text in ("config", "hello", "gives", "takes", "Greeting", "from config"):
        assert text in out
    for kind in ("Precondition", "Task", "OneshotTask", "UnconstrainedTask"):
        assert kind in out
    assert "warm-up" in out  # a task id declared on its class


def test_graph_json_lists_takes_gives_and_tasks() -> None:
    result = runner.invoke(app, ["graph", "examples/hello.py", "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    layers = {layer["name"]: layer for layer in data["layers"]}
    assert [layer["name"] for layer in data["layers"]] == ["config", "hello"]
    assert layers["hello"]["takes"] == [
        {"field": "greeting", "resource": "Greeting", "optional": False, "from": "config"}
    ]
    assert layers["config"]["gives"][0]["resource"] == "Greeting"
    kinds = {t["field"]: t["kind"] for t in layers["hello"]["tasks"]}
    assert kinds == {
        "warm_up": "Precondition",
        "greeter": "Task",
        "watchdog": "UnconstrainedTask",
        "announce": "OneshotTask",
        "banner": "UnconstrainedOneshotTask",
    }
    assert data["resources"] == {"ServiceStatus": "(the service)", "Greeting": "config"}


def test_graph_dot_is_valid_dot() -> None:
    result = runner.invoke(app, ["graph", "examples/hello.py", "--format", "dot"])
    assert result.exit_code == 0, result.output
    graph = parse_dot(result.stdout)
    assert "layer:config" in graph.nodes and "resource:Greeting" in graph.nodes
    assert ("layer:config", "resource:Greeting", {}) in graph.edges
    assert ("resource:Greeting", "layer:hello", {"label": "greeting"}) in graph.edges
    assert graph.nodes["task:hello.warm_up"]["shape"] == "diamond"
    declared = set(graph.nodes)
    assert all(a in declared and b in declared for a, b, _ in graph.edges)


def test_the_dot_parser_rejects_broken_dot() -> None:
    for text in ('digraph { "a" -> }', "digraph { a [label=] }", 'graph { "a" }', "digraph { a"):
        with pytest.raises(DotError):
            parse_dot(text)


def test_graph_of_bad_wiring_exits_2() -> None:
    result = runner.invoke(app, ["graph", f"{WIRING}:broken"])
    assert result.exit_code == 2 and "api" in result.stdout


@pytest.mark.slow
def test_subprocess_check_runs_no_wire_and_graph_dot_parses(tmp_path: object) -> None:
    from pathlib import Path

    marker = Path(str(tmp_path)) / "wired"
    check = run_wireframe("check", f"{WIRING}:trap", CLI_WIRE_MARKER=str(marker))
    assert check.returncode == 0, check.stdout + check.stderr
    assert not marker.exists()
    bad = run_wireframe("check", f"{WIRING}:broken")
    assert bad.returncode == 2 and "api" in bad.stdout
    dot = run_wireframe("graph", "examples/wordcount.py", "--format", "dot")
    assert dot.returncode == 0, dot.stderr
    graph = parse_dot(dot.stdout)
    assert ("resource:Runtime", "layer:wordcount", {"label": "runtime"}) in graph.edges
