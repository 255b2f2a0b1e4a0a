"""The package's import rules (DESIGN.md, "Layout") hold, read off the source with ``ast``.

``service`` imports no other part; ``jobs`` builds on ``service`` and never on a
particular broker (brokers are found by URL scheme); a broker module imports the
protocol, never another broker; nothing but ``cli`` itself imports ``cli``.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "wireframe"


def imports_of(path: Path) -> set[str]:
    """Every ``wireframe...`` module a file imports, at any depth (lazy imports count)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {name for name in found if name.split(".")[0] == "wireframe"}


def modules(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


def test_service_imports_no_other_part() -> None:
    for path in modules("service"):
        bad = {m for m in imports_of(path) if not m.startswith("wireframe.service")}
        assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"


def test_jobs_never_imports_a_particular_broker() -> None:
    for path in modules("jobs"):
        if path.is_relative_to(PACKAGE / "jobs" / "brokers"):
            continue
        bad = {m for m in imports_of(path) if m.startswith("wireframe.jobs.brokers")}
        assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"


def broker_family(name: str) -> str:
    """The broker a module under ``wireframe.jobs.brokers`` belongs to, by its dotted name
    there: ``_redis_scripts`` and ``redis`` are one broker's, and so is every module of a
    broker package (``sqlite.threads``, ``sqlite``)."""
    return name.split(".")[0].lstrip("_").split("_")[0]


def test_a_broker_imports_no_other_broker() -> None:
    brokers = PACKAGE / "jobs" / "brokers"
    for path in modules("jobs/brokers"):
        own = broker_family(".".join(path.relative_to(brokers).with_suffix("").parts))
        others = {
            m
            for m in imports_of(path)
            if m.startswith("wireframe.jobs.brokers.")
            and broker_family(m.removeprefix("wireframe.jobs.brokers.")) != own
        }
        assert not others, f"{path.relative_to(PACKAGE)} imports {others}"


def test_nothing_imports_cli() -> None:
    for path in PACKAGE.rglob("*.py"):
        if path.is_relative_to(PACKAGE / "cli") or path.name == "__main__.py":
            continue
        bad = {m for m in imports_of(path) if m.startswith("wireframe.cli")}
        assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"


def test_the_examples_use_only_the_public_api_not_the_cli() -> None:
    """What an example needs (progress of a run, too) is in ``wireframe`` and ``wireframe.jobs``."""
    for path in sorted((PACKAGE.parent / "examples").glob("*.py")):
        bad = {m for m in imports_of(path) if m.startswith("wireframe.cli")}
        assert not bad, f"examples/{path.name} imports {bad}"


def test_the_worker_does_not_import_the_orchestrator_side() -> None:
    """A job's data path — directive, runtime, broker, worker — crosses each module once.

    (The runtime's ``connect`` may start emulated workers: that composes them.)
    """
    orchestrator = ("wireframe.jobs.runtime", "wireframe.jobs.directives")
    worker = imports_of(PACKAGE / "jobs" / "worker.py")
    assert not {m for m in worker if m.startswith(orchestrator)}
    directives = imports_of(PACKAGE / "jobs" / "directives.py")
    assert not {m for m in directives if m.startswith("wireframe.jobs.worker")}
