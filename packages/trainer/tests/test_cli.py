"""The otonom-train entry point, run for real in a subprocess."""

from __future__ import annotations

import subprocess
import sys

import otonom_schema


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otonom_trainer.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_help_explains_itself() -> None:
    out = _run("--help")
    assert out.returncode == 0
    assert "behaviour-cloning policy" in out.stdout
    assert "pipeline" in out.stdout


def test_version_names_the_schema() -> None:
    out = _run("--version")
    assert out.returncode == 0
    assert otonom_schema.schema_fingerprint() in out.stdout


def test_pipeline_says_it_is_not_built_yet() -> None:
    out = _run("pipeline")
    assert out.returncode == 3
    assert "not built yet" in out.stderr
