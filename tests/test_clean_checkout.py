"""The main job leaves the checkout clean: in a clone of HEAD, the pipeline at its defaults (what
``python3 dev.py run`` runs) promotes a model without changing a tracked file, ``otonom-train
check`` on the shipped default model changes none either, and the default-model tests pass in
that clone afterwards (the README's two commands, in order, stay green).

The clone runs its own code: a subprocess with this interpreter and ``PYTHONPATH`` set to the
clone's ``packages/*/src``. What is tested is HEAD, so commit before running this."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from otonom_runtime import load_rl_policy

pytestmark = pytest.mark.long  # minutes of subprocess runs: scheduled first (conftest.py)

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("schema", "runtime", "trainer")


def _git(*args: str, cwd: Path) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return out.stdout


def _env(clone: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "OTONOM_DATABASE_URL"}
    env["PYTHONPATH"] = os.pathsep.join(str(clone / "packages" / p / "src") for p in PACKAGES)
    env["MPLBACKEND"] = "Agg"
    return env


def _run(clone: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=clone,
        env=_env(clone),
        capture_output=True,
        text=True,
        timeout=900,
    )


def _assert_clean(clone: Path) -> None:
    """No tracked file changed and no untracked file that .gitignore does not cover."""
    assert _git("status", "--porcelain", "--untracked-files=no", cwd=clone) == ""
    assert _git("status", "--porcelain", cwd=clone) == ""


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clone of this repository at HEAD, after the main job (the pipeline at its defaults)."""
    head = _git("rev-parse", "HEAD", cwd=ROOT).strip()
    clone = tmp_path_factory.mktemp("clone") / "otonom-rl"
    _git("clone", "--quiet", "--shared", "--no-checkout", str(ROOT), str(clone), cwd=ROOT)
    _git("checkout", "--quiet", "--detach", head, cwd=clone)
    _assert_clean(clone)
    assert not (clone / "models" / "rl_bc" / "latest").exists()
    out = _run(clone, "-m", "otonom_trainer", "pipeline")
    (clone.parent / "pipeline.out").write_text(out.stdout + out.stderr)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return clone


def test_the_main_job_promotes_a_model_and_changes_no_tracked_file(clone: Path) -> None:
    stdout = (clone.parent / "pipeline.out").read_text()
    assert "all checks pass: promoted" in stdout
    root = clone / "models" / "rl_bc"
    shipped = (root / "default").read_text().strip()
    promoted = (root / "latest").read_text().strip()
    assert promoted != shipped  # the shipped default was not touched ...
    for path in (root, root / "policy_best.pt"):  # ... and the new model is what is served
        assert load_rl_policy(path).path == root / promoted / "policy_best.onnx"
    runs = clone / "reports" / "pipeline"
    assert (runs / "latest").read_text().strip() == promoted  # the run is named like its model
    assert (runs / promoted / "table.json").is_file()
    assert (root / promoted / "check.md").is_file()  # the gate's checklist beside the new model
    _assert_clean(clone)


def test_check_on_the_shipped_model_changes_no_tracked_file(clone: Path) -> None:
    root = clone / "models" / "rl_bc"
    shipped = (root / "default").read_text().strip()
    runs = clone / "reports" / "pipeline"
    table = json.loads((runs / (runs / "latest").read_text().strip() / "table.json").read_text())
    start, end = table["test_period"]
    symbols = [a for s in ("DEMO-BTC", "DEMO-ETH", "DEMO-SOL") for a in ("--symbol", s)]
    out = _run(
        clone, "-m", "otonom_trainer", "check", f"models/rl_bc/{shipped}", *symbols,
        "--start-date", start, "--end-date", end,
    )  # fmt: skip
    assert out.returncode in (0, 1), out.stderr[-3000:]
    assert "| check | result |" in out.stdout
    report = clone / "reports" / "check" / shipped
    assert (report / "check.md").is_file()
    assert json.loads((report / "check.json").read_text())["model"].endswith("policy_best.onnx")
    _assert_clean(clone)


def test_the_default_model_tests_pass_in_the_clone_afterwards(clone: Path) -> None:
    out = _run(
        clone, "-m", "pytest", "tests/test_default_model.py", "-q", "-p", "no:cacheprovider",
        "-rs",
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert " passed" in out.stdout
    assert "skipped" not in out.stdout
    assert "failed" not in out.stdout
    _assert_clean(clone)
