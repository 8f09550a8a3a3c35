"""Degenerate models: both rules by hand, then one real degenerate model end to end (training
marks it, the ONNX metadata carries the mark, the gate item fails, ``otonom strategy check``
and ``otonom backtest`` warn)."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from otonom_runtime.policy import load_rl_policy
from otonom_runtime.store import dispose_engines, get_session, init_db
from otonom_runtime.synth import write_synthetic
from otonom_schema import OfflineDataset, compute_states, save_dataset
from otonom_schema.testing import random_history
from otonom_trainer.check import _degenerate_item
from otonom_trainer.config import TrainingConfig
from otonom_trainer.degenerate import degenerate_mark, majority_baseline, validation_stats
from otonom_trainer.train import BehaviorCloningTrainer

HOLD, BUY, SELL = 0, 1, 2


def cm(rows: list[list[int]]) -> np.ndarray:
    return np.array(rows, dtype=np.int64)


def test_majority_baseline_is_the_train_majority_scored_on_val() -> None:
    # train: BUY is the commonest; val: mostly HOLD, so always-BUY scores only 2 / 10
    assert majority_baseline([1, 1, 1, 0, 2], [0] * 7 + [1, 1, 2]) == (BUY, 0.2)
    assert majority_baseline([2, 0, 2, 0], [0, 2]) == (HOLD, 0.5)  # a tie: the lowest action
    action, acc = majority_baseline([0], [])
    assert action == HOLD
    assert np.isnan(acc)
    with pytest.raises(ValueError, match="no train rows"):
        majority_baseline([], [0])


def test_one_action_rule() -> None:
    # teacher: HOLD 85, BUY 10, SELL 5; the model says HOLD on 96 rows, accuracy 0.89 (> 0.85 +
    # 0.02): only the one-action rule holds
    matrix = cm([[85, 0, 0], [8, 2, 0], [3, 0, 2]])
    mark = degenerate_mark(matrix, HOLD)
    assert mark is not None
    assert mark["rules"] == ["one action"]
    assert mark["reason"] == (
        "predicts HOLD on 96.0% of the validation rows (>= 95%) while the teacher's share of "
        "HOLD there is 85.0% (< 90%)"
    )
    assert (mark["top_prediction_share"], mark["teacher_share"]) == (0.96, 0.85)
    # the same predictions from a teacher that says HOLD on 92 % of the rows: not degenerate
    assert degenerate_mark(cm([[92, 0, 0], [3, 2, 0], [1, 0, 2]]), HOLD) is None
    # 94 % of one action is still below the 95 % line
    assert degenerate_mark(cm([[80, 0, 0], [10, 6, 0], [4, 0, 0]]), HOLD) is None


def test_majority_baseline_rule() -> None:
    # 1000 rows, baseline (always HOLD) 0.610: accuracy 0.631 passes, 0.629 does not
    assert degenerate_mark(cm([[400, 210, 0], [100, 100, 0], [59, 0, 131]]), HOLD) is None
    mark = degenerate_mark(cm([[400, 210, 0], [100, 100, 0], [61, 0, 129]]), HOLD)
    assert mark is not None
    assert mark["rules"] == ["below majority baseline"]
    assert mark["reason"] == (
        "validation accuracy 0.629 is below the majority baseline 0.610 (always HOLD) + 2 points"
    )
    assert (mark["val_action_acc"], mark["majority_baseline_acc"]) == (0.629, 0.61)
    # the baseline is the train majority's: always-SELL scores 0.190 here, so 0.629 is fine
    assert degenerate_mark(cm([[400, 210, 0], [100, 100, 0], [61, 0, 129]]), SELL) is None


def test_the_issues_always_hold_model_breaks_both_rules() -> None:
    """Real BTC 2020-2023: val 0.596 = the HOLD share, every prediction HOLD."""
    matrix = cm([[596, 0, 0], [110, 0, 0], [294, 0, 0]])
    mark = degenerate_mark(matrix, HOLD)
    assert mark is not None
    assert mark["rules"] == ["one action", "below majority baseline"]
    assert mark["reason"] == (
        "predicts HOLD on 100.0% of the validation rows (>= 95%) while the teacher's share of "
        "HOLD there is 59.6% (< 90%); validation accuracy 0.596 is below the majority baseline "
        "0.596 (always HOLD) + 2 points"
    )


def test_bad_inputs_and_no_rows() -> None:
    assert degenerate_mark(np.zeros((3, 3)), HOLD) is None
    assert validation_stats(np.zeros((3, 3)), HOLD) is None
    with pytest.raises(ValueError, match=r"shape \(2, 2\); expected \(3, 3\)"):
        degenerate_mark(np.zeros((2, 2)), HOLD)
    with pytest.raises(ValueError, match="majority_action is 3"):
        degenerate_mark(np.zeros((3, 3)), 3)


# --- end to end ----------------------------------------------------------------------------------


def _noise_dataset(path: Path, n: int = 400) -> None:
    """HOLD 85 %, BUY 10 %, SELL 5 %, unrelated to the states: nothing to learn."""
    history = random_history(n, seed=4, vol=0.005)
    rng = np.random.default_rng(4)
    actions = rng.choice(3, size=n, p=[0.85, 0.10, 0.05]).astype(np.int64)
    strengths = np.where(actions > 0, rng.uniform(0.2, 1.0, n), 0.0).astype(np.float32)
    ds = OfflineDataset(
        compute_states(history), actions, strengths, np.repeat(["S0"], n), history.dates
    )
    save_dataset(ds, path)


def test_a_degenerate_model_is_named_from_training_to_the_backtest(tmp_path: Path) -> None:
    _noise_dataset(tmp_path / "ds.npz")
    model_dir = tmp_path / "models" / "bad"
    cfg = TrainingConfig(
        dataset_path=str(tmp_path / "ds.npz"),
        output_dir=str(model_dir),
        max_epochs=1,
        lr=1e-6,
        hidden_dim=16,
        seed=0,
        progress=False,
    )
    trainer = BehaviorCloningTrainer(cfg)
    metrics = trainer.train()
    trainer.export_onnx()

    # training: the mark in the metrics and metadata.json, beside the majority baseline
    mark = metrics.degenerate
    assert mark is not None
    meta = json.loads((model_dir / "metadata.json").read_text(encoding="utf-8"))
    assert meta["degenerate"] == mark
    assert meta["metrics"]["degenerate"] == mark
    assert meta["metrics"]["majority_action"] == "HOLD"
    assert meta["metrics"]["majority_baseline_acc"] == metrics.majority_baseline_acc

    # the exported model: the runtime reads the mark from the ONNX metadata alone
    policy = load_rl_policy(model_dir)
    assert policy.get_metadata()["degenerate"] == mark
    assert policy.degenerate_reason == mark["reason"]

    # the gate's item
    item = _degenerate_item(policy.get_metadata())
    assert item.status == "fail"
    assert item.measured == f"DEGENERATE: {mark['reason']}"

    # strategy check and a backtest say so, one line each
    strategy = tmp_path / "rl.yaml"
    strategy.write_text(
        f"ensemble:\n  rl_policy:\n    enabled: true\n    model_path: {model_dir}\n",
        encoding="utf-8",
    )
    warning = (
        f"RL model {model_dir / 'policy_best.onnx'} is marked degenerate at training: "
        f"{mark['reason']}"
    )

    def otonom(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "otonom_runtime", *args],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
            env={**os.environ},
        )

    out = otonom("strategy", "check", str(strategy))
    assert out.returncode == 0, out.stderr
    assert out.stderr.splitlines() == [f"warning: {warning}"]

    url = f"sqlite:///{(tmp_path / 'otonom.db').as_posix()}"
    init_db(url)
    with get_session(url) as session:
        # bars from 2020-07-01: the backtest's first day is past the warm-up (no warning of it)
        write_synthetic(session, ["DEMO-DEG"], dt.date(2020, 7, 1), dt.date(2021, 6, 30), 2)
    dispose_engines()
    out = otonom(
        "--database-url", url, "backtest", "--strategy-path", str(strategy),
        "--symbol", "DEMO-DEG", "--start-date", "2021-03-01", "--end-date", "2021-06-30",
        "--plot", "none", "--quiet",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stderr.splitlines() == [warning]


def test_a_sound_model_passes_the_item() -> None:
    meta = {
        "metrics": {
            "confusion_matrix": [[40, 3, 2], [2, 25, 1], [3, 1, 23]],
            "majority_action": "HOLD",
            "majority_baseline_acc": 0.45,
            "degenerate": None,
        }
    }
    item = _degenerate_item(meta)
    assert item.status == "pass"
    assert item.measured == (
        "val accuracy 0.880 vs majority baseline 0.450 (always HOLD); HOLD on 45.0% of val rows "
        "(teacher 45.0%)"
    )
    older = _degenerate_item({"metrics": {"confusion_matrix": [[0, 0, 0], [50, 0, 0], [0, 0, 1]]}})
    assert older.status == "fail"  # judged from the matrix: always HOLD on a BUY-heavy split
    assert older.measured.startswith("DEGENERATE: predicts HOLD on 98.0% of the validation rows")
    assert _degenerate_item({"metrics": {}}).measured == "no validation confusion matrix"
