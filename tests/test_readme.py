"""The README's tour code runs as written (so the docs cannot rot)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"^```python\n(.*?)^```$", README, flags=re.S | re.M)


def run_python(code: str, tmp_path: Path) -> str:
    script = tmp_path / "snippet.py"
    script.write_text(code, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_layer_snippet_runs(tmp_path: Path) -> None:
    assert run_python(BLOCKS[0], tmp_path).splitlines() == [
        "open",
        "reporting from sqlite:///app.db",
        "close",
    ]


def test_the_directive_snippet_runs(tmp_path: Path) -> None:
    definitions, body = BLOCKS[1].split("async with", 1)
    code = (
        "import attrs, trio\n"
        + definitions
        + "async def main():\n"
        + textwrap.indent("async with" + body, "    ")
        + "    print(xs[:3], total, one)\n"
        + "trio.run(main)\n"
    )
    assert run_python(code, tmp_path).strip() == "[1, 2, 3] 5050 42"


def test_the_layer_snippet_is_checked_without_running(tmp_path: Path) -> None:
    """Fault 15: the snippet ran its service at import, so ``wireframe check`` on it ran it."""
    script = tmp_path / "tour.py"
    script.write_text(BLOCKS[0], encoding="utf-8")
    said = {}
    for command in ("check", "graph"):
        done = subprocess.run(
            [sys.executable, "-m", "wireframe", command, str(script)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
        assert "reporting from" not in done.stdout and "open\n" not in done.stdout, done.stdout
        said[command] = done.stdout
    assert "wiring OK" in said["check"] and "DbLayer" in said["graph"]


def test_the_progress_snippet_runs(tmp_path: Path) -> None:
    code = (
        "import attrs, trio\n"
        "from wireframe import jobs\n"
        "@attrs.frozen\n"
        "class Square(jobs.Operation[int, int]):\n"
        "    def execute(self, x: int) -> int:\n"
        "        return x * x\n"
        "async def main():\n"
        "    async with jobs.connect('memory://?workers=2') as rt:\n"
        + textwrap.indent(BLOCKS[2], "        ")
        + "    print(squares[:4])\n"
        "trio.run(main)\n"
    )
    assert run_python(code, tmp_path).strip() == "[0, 1, 4, 9]"


def test_the_worker_layers_snippet_names_what_the_worker_reads() -> None:
    from wireframe.cli.workers import WORKER_LAYERS

    assert BLOCKS[3].startswith(f"{WORKER_LAYERS} = [")


def test_the_readme_names_the_default_broker_url() -> None:
    """Fault 15: it said the default was sqlite:///jobs.db; the code's is another file."""
    from wireframe import jobs

    assert f"`jobs.DEFAULT_URL`, which is `{jobs.DEFAULT_URL}`" in README


def test_the_background_jobs_snippet_runs(tmp_path: Path) -> None:
    (snippet,) = [block for block in BLOCKS if "rt.submit(" in block]
    assert run_python(snippet, tmp_path).splitlines() == [
        "thumbnails/cat.png",
        "succeeded",
        "aborted",
        "thumbnails/now.png",
    ]
