"""Sessions: ``nox -s tests``, ``nox -s chaos``, ``nox -s lint``, ``nox -s typecheck``, ``nox -s bench``."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (pytest-trio), all but the chaos suite (``nox -s chaos`` runs that)."""
    session.install("-e", ".[dev]")
    # --ignore, not -m "not chaos": a user's own -m (say -m "not slow") would replace it
    session.run("pytest", "--ignore=tests/chaos", *session.posargs)


@nox.session
def chaos(session: nox.Session) -> None:
    """The chaos suite: real ``wireframe worker`` processes and Redis servers under faults.

    It starts its own ``redis-server`` processes (which must be on PATH) and takes
    about a minute, so it runs here and in ``.ci/run`` rather than in ``tests``.
    """
    session.install("-e", ".[dev]")
    session.run("pytest", "-m", "chaos", "tests/chaos", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff: lint and formatting check."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy, strict on the wireframe package."""
    session.install("-e", ".[dev]")
    session.run("mypy")


@nox.session
def bench(session: nox.Session) -> None:
    """Every benchmark in bench/, each printing its own table."""
    session.install("-e", ".[dev]")
    import pathlib

    for script in sorted(pathlib.Path("bench").glob("*.py")):
        if script.name.startswith("_"):
            continue
        session.run("python", str(script), *session.posargs)
