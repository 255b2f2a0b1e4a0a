"""The package's import rules hold, read off the source with ``ast``.

The rules are the walls of ``docs/architecture.md`` ("Walls"): ``service``
imports no other part; ``jobs`` builds on ``service`` and never on a particular
broker (brokers are found by URL scheme); a broker imports the protocol, never
another broker; nothing but ``cli`` itself imports ``cli``. Relative imports
count as much as absolute ones.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "wireframe"


def module_name(path: Path) -> str:
    """The dotted name of a module file under the repository (``wireframe.jobs.codec``)."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def absolute(path: Path, node: ast.ImportFrom) -> str:
    """The module an ``ImportFrom`` names, with a relative one (``from ..x import y``)
    resolved against the file's own package."""
    if node.level == 0:
        return node.module or ""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package.pop()  # a module's relatives are its package's
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(path: Path) -> set[str]:
    """Every ``wireframe...`` module a file imports, at any depth (lazy imports count)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = absolute(path, node)
            found.add(module)
            found.update(f"{module}.{a.name}" for a in node.names)
    return {name for name in found if name.split(".")[0] == "wireframe"}


def test_relative_imports_are_resolved() -> None:
    """The rules below would miss ``from ..brokers import memory`` if this did not hold."""
    here = PACKAGE / "jobs" / "brokers" / "sqlite" / "broker.py"
    (relative,) = ast.parse("from ...brokers.memory import open").body
    assert isinstance(relative, ast.ImportFrom)
    assert absolute(here, relative) == "wireframe.jobs.brokers.memory"
    (sibling,) = ast.parse("from . import rows").body
    assert isinstance(sibling, ast.ImportFrom)
    assert absolute(here, sibling) == "wireframe.jobs.brokers.sqlite"
    init = PACKAGE / "jobs" / "brokers" / "sqlite" / "__init__.py"
    assert absolute(init, sibling) == "wireframe.jobs.brokers.sqlite"


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
    there: ``_redis_scripts`` and ``redis`` would be one broker's, and so is every module of a
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


def test_nothing_imports_cli_or_web() -> None:
    """The two outermost parts may use everything; nothing below them uses them.

    ``cli`` is the very outside: its ``dashboard`` command serves ``web``; ``web``
    never imports ``cli``.
    """
    for top, users in (("cli", ("cli",)), ("web", ("web", "cli"))):
        for path in PACKAGE.rglob("*.py"):
            if any(path.is_relative_to(PACKAGE / u) for u in users) or path.name == "__main__.py":
                continue
            bad = {m for m in imports_of(path) if m.startswith(f"wireframe.{top}")}
            assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"


def third_party_of(path: Path) -> set[str]:
    """The top-level names of every non-wireframe module a file imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found - {"wireframe"}


def test_only_telemetry_imports_opentelemetry_and_prometheus() -> None:
    """Telemetry listens to the other parts through their hooks; nothing else knows it."""
    for path in PACKAGE.rglob("*.py"):
        if path.is_relative_to(PACKAGE / "telemetry") or path.name == "telemetry.py":
            continue
        bad = third_party_of(path) & {"opentelemetry", "prometheus_client"}
        assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"


def test_only_the_redis_broker_imports_coredis() -> None:
    brokers = PACKAGE / "jobs" / "brokers"
    for path in PACKAGE.rglob("*.py"):
        top = path.relative_to(brokers).parts[0] if path.is_relative_to(brokers) else ""
        if broker_family(top.removesuffix(".py")) == "redis":  # a module or a package
            continue
        assert "coredis" not in third_party_of(path), f"{path.relative_to(PACKAGE)} imports coredis"


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


def test_durable_builds_on_jobs_and_brokers_see_only_its_store_role() -> None:
    """``durable`` builds on ``jobs`` (activities are operations) and finds a broker's
    store by ``isinstance``, never by importing a broker; ``jobs`` above its brokers never
    imports ``durable``; a broker keeping orchestrations imports only the store's role
    (its protocol, the history and the codec), as it imports the job protocol."""
    role = ("wireframe.durable.store", "wireframe.durable.history", "wireframe.durable.codec")
    for path in modules("durable"):
        bad = {m for m in imports_of(path) if m.startswith("wireframe.jobs.brokers")}
        assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"
    for path in modules("jobs"):
        found = {m for m in imports_of(path) if m.startswith("wireframe.durable")}
        if path.is_relative_to(PACKAGE / "jobs" / "brokers"):
            found = {m for m in found if not m.startswith(role)}
        assert not found, f"{path.relative_to(PACKAGE)} imports {found}"
