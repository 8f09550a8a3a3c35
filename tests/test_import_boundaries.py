"""The dependency direction (schema <- runtime <- trainer) and "no torch in the daemon"."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = """
import json, sys
before = set(sys.modules)
import {module}
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def _imported_by(module: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module)],
        capture_output=True,
        text=True,
        check=True,
    )
    return {name.split(".")[0] for name in json.loads(out.stdout)}


@pytest.mark.parametrize("module", ["otonom_schema", "otonom_runtime"])
def test_torch_is_never_imported(module: str) -> None:
    loaded = _imported_by(module)
    assert module in loaded  # the probe really imported it
    assert "torch" not in loaded


def test_schema_needs_numpy_only() -> None:
    loaded = _imported_by("otonom_schema")
    heavy = {
        "torch",
        "onnx",
        "onnxruntime",
        "sqlalchemy",
        "yaml",
        "otonom_runtime",
        "otonom_trainer",
    }
    assert "numpy" in loaded
    assert not loaded & heavy


def test_runtime_does_not_import_the_trainer_or_torch() -> None:
    loaded = _imported_by("otonom_runtime")
    assert not loaded & {"otonom_trainer", "torch", "onnx"}


def test_trainer_import_is_lazy_about_torch() -> None:
    # nothing happens at import time: torch is loaded by the modules that train, when used
    assert "torch" not in _imported_by("otonom_trainer")
