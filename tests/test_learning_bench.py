"""bench/learning.py --quick, run for real (a subprocess) on two tiny dataset files with an easy
planted rule: every learner has its row, the majority baseline scores the held-out share of the
train file's majority action, and the JSON is written."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from otonom_schema import OfflineDataset, compute_states, feature_index, save_dataset
from otonom_schema.testing import random_history

ROOT = Path(__file__).resolve().parents[1]
RSI = feature_index("rsi")
LABELS = (
    "majority class",
    "logistic regression",
    "HistGradientBoosting",
    "d3rlpy DiscreteBC",
    "HistGradientBoosting + our teacher rows",
    "d3rlpy DiscreteBC + our teacher rows",
    "ours (pipeline defaults)",
)


def _needs_the_bench_extra() -> None:
    """Skip without scikit-learn or d3rlpy; fail instead under ``CI=true`` (CI runs it)."""
    missing = [m for m in ("sklearn", "d3rlpy") if importlib.util.find_spec(m) is None]
    if missing:
        why = f'{", ".join(missing)} missing: pip install "otonom-trainer[bench]"'
        if os.environ.get("CI", "").strip().lower() == "true":
            pytest.fail(f"CI=true needs the bench extra: {why}")
        pytest.skip(why)


def test_the_bench_extra_is_declared_and_in_the_dev_environment() -> None:
    """scikit-learn and d3rlpy come with the trainer's bench extra, which the development
    environment (what `dev.py test` runs in) installs, so the test below runs there."""
    tomllib = pytest.importorskip("tomllib")
    trainer = tomllib.loads((ROOT / "packages/trainer/pyproject.toml").read_text("utf-8"))
    extra = trainer["project"]["optional-dependencies"]["bench"]
    assert sorted(d.split(">")[0] for d in extra) == ["d3rlpy", "scikit-learn"]
    root = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    members = root["tool"]["hatch"]["envs"]["default"]["workspace"]["members"]
    (member,) = [m for m in members if isinstance(m, dict) and m["path"] == "packages/trainer"]
    assert "bench" in member["features"]


def _dataset(path: Path, seed: int, n: int = 300) -> OfflineDataset:
    """Two symbols' states; BUY when rsi < 0.42, SELL when rsi > 0.55, else HOLD (the rule: about
    a third of the rows each)."""
    histories = [random_history(n, seed=seed + k, vol=0.005) for k in range(2)]
    states = np.concatenate([compute_states(h) for h in histories])
    rsi = states[:, RSI]
    actions = np.where(rsi < 0.42, 1, np.where(rsi > 0.55, 2, 0)).astype(np.int64)
    ds = OfflineDataset(
        states,
        actions,
        np.where(actions > 0, np.clip(np.abs(rsi - 0.5) * 2, 0, 1), 0.0).astype(np.float32),
        np.repeat(["A", "B"], n),
        np.concatenate([h.dates for h in histories]),
        {"source": "test_learning_bench"},
    )
    save_dataset(ds, path)
    return ds


def test_quick_run_scores_every_learner_on_the_given_files(tmp_path: Path) -> None:
    _needs_the_bench_extra()
    train = _dataset(tmp_path / "train.npz", seed=1)
    test = _dataset(tmp_path / "test.npz", seed=11)
    out = tmp_path / "learning.json"
    cmd = [
        sys.executable, str(ROOT / "bench" / "learning.py"), "--quick",
        "--train", str(tmp_path / "train.npz"), "--test", str(tmp_path / "test.npz"),
        "--out", str(out), "--md",
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["learning.json", "test.npz", "train.npz"]
    table = done.stdout
    for label in LABELS:
        assert f"  {label} " in table, table  # the text table's row
        assert f"| {label} |" in table, table  # the markdown table's row

    doc = json.loads(out.read_text(encoding="utf-8"))
    (result,) = doc["datasets"]
    assert doc["quick"] is True
    assert doc["seeds"] == [8]
    assert (result["train_rows"], result["test_rows"]) == (len(train), len(test))
    assert [r["label"] for r in result["learners"].values()] == list(LABELS)
    majority = int(np.argmax(np.bincount(train.actions, minlength=3)))
    share = float(np.mean(test.actions == majority))
    assert result["learners"]["majority"]["accuracy"]["mean"] == pytest.approx(share, abs=1e-12)
    for r in result["learners"].values():
        (run,) = r["runs"]
        assert 0.0 <= run["macro_f1"] <= 1.0
        assert 0.0 <= run["accuracy"] <= 1.0
    # the planted rule is not the pipeline strategy's: no teacher rows, and the notes say why
    (ours,) = result["learners"]["ours"]["runs"]
    assert ours["notes"]["teacher_rows"] == 0
    assert ours["notes"]["errors"] is None  # the breakdown needs the file's teacher
    assert ours["notes"]["why_no_teacher_rows"].endswith("baseline_v1.yaml is not its teacher")
    (hgb_t,) = result["learners"]["hgb+teacher"]["runs"]
    assert hgb_t["notes"]["teacher_rows"] == 0
    assert hgb_t["accuracy"] == result["learners"]["hgb"]["runs"][0]["accuracy"]
    # the planted rule is easy: the trees learn it well above the majority share
    assert result["learners"]["hgb"]["accuracy"]["mean"] > share + 0.3


def test_a_train_file_without_its_test_file_is_a_one_line_error(tmp_path: Path) -> None:
    cmd = [sys.executable, str(ROOT / "bench" / "learning.py"), "--train", "a.npz"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip() == "got 1 --train and 0 --test; expected pairs"
