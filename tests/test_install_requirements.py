"""What `pip install -e packages/...` would pull, resolved by pip itself (dry run, no install)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _resolve(*packages: str) -> set[str]:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--dry-run",
        "--ignore-installed",
        "--quiet",
        "--report",
        "-",
    ]
    for pkg in packages:
        cmd += ["-e", str(ROOT / "packages" / pkg)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600)
    report = json.loads(out.stdout)
    return {item["metadata"]["name"].lower() for item in report["install"]}


@pytest.mark.network
def test_schema_pulls_only_numpy() -> None:
    assert _resolve("schema") == {"otonom-schema", "numpy"}


@pytest.mark.network
def test_runtime_pulls_no_torch() -> None:
    names = _resolve("schema", "runtime")
    assert {"otonom-runtime", "onnxruntime", "sqlalchemy", "pyyaml", "numpy"} <= names
    assert not {n for n in names if n.startswith(("torch", "nvidia-", "triton"))}
