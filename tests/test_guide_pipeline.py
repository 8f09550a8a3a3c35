"""The guide's Steps 1-3 end to end, as a user runs them: real CLIs in subprocesses, a real
SQLite file, a real ONNX model (small sizes so the suite stays quick)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

import otonom_schema as s

ROOT = Path(__file__).resolve().parents[1]
STRATEGY = str(ROOT / "strategies" / "baseline_v1.yaml")


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "OTONOM_DATABASE_URL"}
    env["MPLBACKEND"] = "Agg"
    out = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, f"{args}: {out.stderr[-3000:]}"
    return out


def test_steps_1_to_3(tmp_path: Path) -> None:
    rt, tr = ["-m", "otonom_runtime"], ["-m", "otonom_trainer"]
    _run(
        [
            *rt,
            "data",
            "synth",
            "--symbol",
            "BTC-USD",
            "--start",
            "2019-01-01",
            "--end",
            "2021-12-31",
            "--seed",
            "7",
        ],
        tmp_path,
    )
    # Step 1: backtest (Decision rows), then the offline dataset (CLI and the guide's Python)
    _run(
        [
            *rt,
            "backtest",
            "--strategy-path",
            STRATEGY,
            "--symbol",
            "BTC-USD",
            "--start-date",
            "2019-06-01",
            "--end-date",
            "2021-12-31",
            "--quiet",
            "--plot",
            "none",
        ],
        tmp_path,
    )
    out = _run(
        [
            *tr,
            "dataset",
            "--symbol",
            "BTC-USD",
            "--start-date",
            "2019-06-01",
            "--end-date",
            "2021-06-30",
            "--output",
            "data/offline_dataset.npz",
        ],
        tmp_path,
    )
    assert out.stdout.splitlines()[0].startswith("Generated ")
    assert "Action distribution:" in out.stdout
    step1 = textwrap.dedent(
        """
        from otonom_runtime import get_session
        from otonom_trainer.dataset import OfflineDatasetGenerator
        from datetime import date

        with get_session() as session:
            generator = OfflineDatasetGenerator(session)
            experiences = generator.generate_dataset(
                symbol="BTC-USD",
                start_date=date(2021, 7, 1),
                end_date=date(2021, 12, 31),
            )
            generator.save_dataset(experiences, output_path="data/offline_dataset_test.npz")
        print(f"Generated {len(experiences)} training samples")
        """
    )
    out = _run(["-c", step1], tmp_path)
    assert "Generated 184 training samples" in out.stdout
    assert "Saved to: data/offline_dataset_test.npz" in out.stdout

    # Step 2: train through the guide's script, then through the Python API
    out = _run(
        [
            str(ROOT / "scripts" / "train_rl_agent.py"),
            "--dataset",
            "data/offline_dataset.npz",
            "--output",
            "models/rl_bc",
            "--epochs",
            "3",
            "--batch-size",
            "64",
            "--lr",
            "0.001",
            "--hidden-dim",
            "32",
            "--seed",
            "1",
        ],
        tmp_path,
    )
    for line in (
        "RL Behavior Cloning Training",
        "Loaded dataset:",
        "[Epoch 3/3]",
        "Training Complete!",
        "Model saved to: models/rl_bc/policy_best.pt",
        "ONNX model: models/rl_bc/policy_best.onnx",
    ):
        assert line in out.stdout, line
    for name in (
        "policy_best.pt",
        "policy_best.onnx",
        "policy_best.onnx.sha256",
        "metadata.json",
        "history.csv",
        "training_curves.png",
        "confusion_matrix.png",
    ):
        assert (tmp_path / "models" / "rl_bc" / name).is_file(), name
    step2 = textwrap.dedent(
        """
        from otonom_trainer import TrainingConfig, BehaviorCloningTrainer

        cfg = TrainingConfig(
            dataset_path="data/offline_dataset.npz",
            output_dir="models/rl_api",
            batch_size=64,
            lr=1e-3,
            max_epochs=2,
            hidden_dim=16,
        )
        trainer = BehaviorCloningTrainer(cfg)
        metrics = trainer.train()
        print(f"Best val loss: {metrics.best_val_loss:.4f}")
        print(f"Val action accuracy: {metrics.val_action_acc:.3f}")
        """
    )
    out = _run(["-c", step2], tmp_path)
    assert "Best val loss: " in out.stdout

    # Step 3: evaluate through the runtime, and the Summary's metadata read
    out = _run(
        [*tr, "evaluate", "--model", "models/rl_bc", "--dataset", "data/offline_dataset_test.npz"],
        tmp_path,
    )
    assert "Classification report:" in out.stdout
    assert "SELL" in out.stdout
    summary3 = (
        "from otonom_runtime import load_rl_policy\n"
        "policy = load_rl_policy('models/rl_bc/policy_best.pt')\n"
        "metadata = policy.get_metadata()\n"
        "print(f'Val accuracy: {metadata[\"val_action_acc\"]:.3f}')\n"
    )
    out = _run(["-c", summary3], tmp_path)
    assert out.stdout.startswith("Val accuracy: ")
    ds = s.load_dataset(tmp_path / "data" / "offline_dataset_test.npz")
    assert ds.states.shape == (184, 34)
    assert np.isin(ds.actions, [0, 1, 2]).all()


def test_train_cli_errors_are_one_line(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "otonom_trainer", "train", "--dataset", "missing.npz"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 1
    assert out.stderr.startswith("error: ")
    assert "missing.npz" in out.stderr
    assert "Traceback" not in out.stderr
