"""The small default model shipped in models/rl_bc: it loads under the current state schema and
serves as the RL analyst right after install (models/README.md says how to regenerate it).

``models/rl_bc/default`` (tracked) names the shipped version; ``models/rl_bc/latest`` (untracked)
names what a pipeline run here promoted. These tests hold whether or not one did: the shipped
layout is checked on a copy of the tracked files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from otonom_runtime import ModelSchemaMismatchError, load_rl_policy
from otonom_schema import SCHEMA_VERSION, schema_fingerprint

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "models" / "rl_bc"
REGENERATE = "regenerate it as models/README.md says (rm -rf models/rl_bc ...; python3 dev.py run)"


def _version() -> Path:
    name = (DEFAULT / "default").read_text(encoding="utf-8").strip()
    return DEFAULT / name


@pytest.fixture
def shipped(tmp_path: Path) -> Path:
    """models/rl_bc as a fresh clone has it: the `default` pointer and the version it names
    (no `latest`, no versions trained here)."""
    root = tmp_path / "models" / "rl_bc"
    root.mkdir(parents=True)
    shutil.copyfile(DEFAULT / "default", root / "default")
    shutil.copytree(_version(), root / _version().name)
    return root


def test_default_model_loads_under_the_current_schema() -> None:
    try:
        policy = load_rl_policy(_version())
    except ModelSchemaMismatchError as exc:
        pytest.fail(
            f"the shipped default model was made under another state schema: {exc}; " + REGENERATE
        )
    meta = policy.get_metadata()
    assert meta["schema_version"] == SCHEMA_VERSION, REGENERATE
    assert meta["schema_fingerprint"] == schema_fingerprint(), REGENERATE
    assert policy.path.parent == _version()
    assert meta["val_action_acc"] > 0.85  # the pipeline's model on the synthetic default


def test_the_folder_and_the_guides_checkpoint_path_load_the_default(shipped: Path) -> None:
    """With nothing promoted, ``load_rl_policy("models/rl_bc")`` and the guide's Step 3
    ``load_rl_policy("models/rl_bc/policy_best.pt")`` (no policy_best.* at the top) follow
    ``default``; PyTorch is never loaded."""
    assert load_rl_policy(shipped).path.parent.name == _version().name
    assert load_rl_policy(shipped / "policy_best.pt").path.parent.name == _version().name


def test_the_repository_folder_loads_the_promoted_version_else_the_default() -> None:
    """In this checkout: ``latest`` when a pipeline run here promoted a model, else ``default``."""
    latest = DEFAULT / "latest"
    expected = DEFAULT / latest.read_text().strip() if latest.is_file() else _version()
    assert load_rl_policy(DEFAULT).path.parent == expected
    if not (DEFAULT / "policy_best.onnx").exists():  # no `train --output models/rl_bc` here
        assert load_rl_policy(DEFAULT / "policy_best.pt").path.parent == expected


def test_default_model_is_small_and_passed_the_gate() -> None:
    version = _version()
    files = sorted(p.name for p in version.iterdir())
    assert "policy_best.onnx" in files
    assert "policy_best.onnx.sha256" in files
    assert "check.json" in files
    assert sum(p.stat().st_size for p in version.iterdir()) < 400_000
    import json

    check = json.loads((version / "check.json").read_text())
    assert check["passed"] is True


def test_default_model_is_in_git() -> None:
    """The .gitignore lets exactly the default model in (a clean clone must have it), and not
    ``latest``: promotion writes only that, so running the pipeline changes no tracked file."""
    tracked = subprocess.run(
        ["git", "ls-files", "models/rl_bc"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    version = _version().name
    assert "models/rl_bc/default" in tracked
    assert "models/rl_bc/latest" not in tracked
    assert f"models/rl_bc/{version}/policy_best.onnx" in tracked
    assert f"models/rl_bc/{version}/policy_best.onnx.sha256" in tracked
    assert not [p for p in tracked if p.endswith((".pt", ".png"))]
    untracked = ["models/rl_bc/latest", "models/rl_bc/20990101T000000Z/policy_best.onnx"]
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", *untracked],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert ignored == untracked


def test_backtest_with_the_rl_analyst_right_after_install(tmp_path: Path, shipped: Path) -> None:
    """`otonom backtest` with strategies/ensemble_rl_v1.yaml, as laid out in a fresh clone:
    the RL analyst votes with the default model, no fallback."""
    shutil.copytree(ROOT / "strategies", tmp_path / "strategies")
    assert shipped == tmp_path / "models" / "rl_bc"
    env = {k: v for k, v in os.environ.items() if k != "OTONOM_DATABASE_URL"}
    env["MPLBACKEND"] = "Agg"

    def otonom(*args: str) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(
            [sys.executable, "-m", "otonom_runtime", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        return out

    otonom("data", "synth", "--symbol", "DEMO-BTC", "--start", "2021-01-01", "--end",
           "2022-12-31")  # fmt: skip
    out = otonom(
        "backtest", "--strategy-path", "strategies/ensemble_rl_v1.yaml", "--symbol", "DEMO-BTC",
        "--start-date", "2021-07-01", "--end-date", "2022-12-31",
    )  # fmt: skip
    assert "(RL analyst on)" in out.stdout
    fallbacks = [line for line in out.stdout.splitlines() if "RL fallbacks" in line]
    assert fallbacks, out.stdout
    assert fallbacks[0].split()[-1] == "0"
    assert "fell back" not in out.stdout


def test_the_rl_strategy_says_what_happens_without_its_model(
    tmp_path: Path, shipped: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """strategies/ensemble_rl_v1.yaml's comment and its loading agree: with no model under
    models/rl_bc the file is refused (a strategy error, as its comment says, not a run without
    the RL analyst); with the model there but failing its load checks (no sidecar) it loads,
    and the model's load, which a run falls back from, fails."""
    from otonom_runtime import PolicyError, StrategyError
    from otonom_runtime.strategy import load_strategy

    monkeypatch.delenv("OTONOM_MODELS_ROOT", raising=False)
    shutil.copytree(ROOT / "strategies", tmp_path / "strategies")
    path = tmp_path / "strategies" / "ensemble_rl_v1.yaml"
    lines = path.read_text(encoding="utf-8").splitlines()
    comment = " ".join(x.strip().lstrip("#").strip() for x in lines if x.strip().startswith("#"))
    assert "A path that names no model is refused when this file is loaded" in comment
    assert "fails its load checks when a run starts" in comment
    assert "`enabled: false`, or --no-rl for a run, runs without it" in comment
    assert "the ensemble carries on with the other three analysts" in comment

    (sidecar,) = shipped.glob("*/policy_best.onnx.sha256")
    sidecar.unlink()
    model = load_strategy(path).ensemble.rl_policy.model_file
    assert model == sidecar.with_suffix("")
    with pytest.raises(PolicyError, match="no sha256 sidecar"):
        load_rl_policy(model)
    shutil.rmtree(shipped)
    with pytest.raises(StrategyError) as refused:
        load_strategy(path)
    (problem,) = refused.value.problems
    assert problem.startswith(f"{path}:24: ensemble.rl_policy.model_path: received 'models/rl_bc'")
    assert "which resolves to no model" in problem
