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
