"""The test command's schedule: the modules marked ``long`` are collected first (conftest.py),
and ``dev.py test`` keeps that order across its workers (``--dist loadfile
--no-loadscope-reorder``), so the guide's walkthrough module starts at once instead of last."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _collected(*paths: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *paths],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return [line.split("::")[0] for line in out.stdout.splitlines() if "::" in line]


def test_long_modules_are_collected_first_and_the_rest_keep_their_order() -> None:
    files = _collected("tests/test_sizes.py", "tests/test_guide_doc.py", "tests/test_docs.py")
    order = list(dict.fromkeys(files))  # each module once, in collection order
    assert order == ["tests/test_guide_doc.py", "tests/test_sizes.py", "tests/test_docs.py"]
    n = files.count("tests/test_guide_doc.py")
    assert n > 3
    assert files[:n] == ["tests/test_guide_doc.py"] * n  # its tests together, at the front


def test_the_test_command_keeps_the_collection_order() -> None:
    tomllib = __import__("tomllib") if sys.version_info >= (3, 11) else None
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    if tomllib is not None:
        script = tomllib.loads(text)["tool"]["hatch"]["envs"]["default"]["scripts"]["test"]
    else:  # Python 3.10: the line itself
        (script,) = [ln.split("=", 1)[1] for ln in text.splitlines() if ln.startswith("test =")]
    assert "--dist loadfile --no-loadscope-reorder" in script
