"""Training in Python ends with a deployable model: ``BehaviorCloningTrainer(cfg).train()``
exports ``policy_best.onnx`` (+ sha256) as ``otonom-train train`` does, and one training run id
ties the checkpoint, ``metadata.json`` and the ONNX model together, so the runtime refuses an
older export left beside a newer run."""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from otonom_runtime import PolicyError
from otonom_runtime.policy import RUN_ID_KEY, load_rl_policy
from otonom_schema import OfflineDataset, compute_states, feature_index, save_dataset
from otonom_schema.testing import random_history
from otonom_trainer.config import TrainingConfig
from otonom_trainer.export import build_metadata, export_onnx, sha256_file
from otonom_trainer.train import BehaviorCloningTrainer, load_checkpoint


def _dataset(path: Path, n: int = 200) -> Path:
    history = random_history(n, seed=0, vol=0.005)
    states = compute_states(history)
    rsi = states[:, feature_index("rsi")]
    actions = np.where(rsi < 0.4, 1, np.where(rsi > 0.6, 2, 0))
    ds = OfflineDataset(
        states=states,
        actions=actions,
        strengths=np.where(actions > 0, 0.5, 0.0),
        symbols=np.repeat("S", n),
        dates=history.dates,
        metadata={},
    )
    return save_dataset(ds, path)


def _train(out: Path, dataset: Path, *, export: bool = True) -> BehaviorCloningTrainer:
    cfg = TrainingConfig(
        dataset_path=str(dataset),
        output_dir=str(out),
        hidden_dim=16,
        num_layers=1,
        batch_size=64,
        max_epochs=2,
        progress=False,
    )
    trainer = BehaviorCloningTrainer(cfg)
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.train(export=export)
    return trainer


def _ids(folder: Path) -> tuple[str, str]:
    """The run ids of metadata.json and of the checkpoint."""
    record = json.loads((folder / "metadata.json").read_text())
    _, ckpt = load_checkpoint(folder / "policy_best.pt")
    return record["run_id"], ckpt["run_id"]


def test_python_training_writes_a_loadable_onnx_of_its_run(tmp_path: Path) -> None:
    out = tmp_path / "models" / "rl_bc"
    trainer = _train(out, _dataset(tmp_path / "ds.npz"))
    assert trainer.onnx_path == out / "policy_best.onnx"
    assert (out / "policy_best.onnx.sha256").is_file()
    assert re.fullmatch(r"[0-9a-f]{32}", trainer.run_id or "")
    assert _ids(out) == (trainer.run_id, trainer.run_id)
    record = json.loads((out / "metadata.json").read_text())
    assert {"policy_best.onnx", "policy_best.onnx.sha256"} <= set(record["files"])
    for path in (out, out / "policy_best.pt", out / "policy_best.onnx"):
        policy = load_rl_policy(path)
        assert policy.path == out / "policy_best.onnx"
        meta = policy.get_metadata()
        assert meta["training_run_id"] == trainer.run_id
        assert meta["val_action_acc"] == trainer.metrics.val_action_acc
    summary = load_rl_policy(out).training_summary()  # otonom monitor's reference: train rows
    assert summary is not None
    assert summary.rows == trainer.split.train.size


def test_a_stale_onnx_beside_a_newer_run_is_refused_until_reexported(tmp_path: Path) -> None:
    """The README's case: an older policy_best.onnx beside a newer policy_best.pt and
    metadata.json (here: training without export) is refused, naming both runs and the command
    that re-exports; that command makes the folder loadable again."""
    dataset = _dataset(tmp_path / "ds.npz")
    out = tmp_path / "models" / "rl_bc"
    first = _train(out, dataset)
    second = _train(out, dataset, export=False)
    assert first.run_id != second.run_id
    assert second.onnx_path is None
    with pytest.raises(PolicyError) as info:
        load_rl_policy(out / "policy_best.pt")
    message = str(info.value)
    assert f"the model comes from training run {first.run_id}" in message
    assert f"metadata.json records run {second.run_id}" in message
    assert f"otonom-train export --checkpoint {out / 'policy_best.pt'}" in message

    export = [sys.executable, "-m", "otonom_trainer", "export"]
    done = subprocess.run(
        [*export, "--checkpoint", str(out / "policy_best.pt")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    policy = load_rl_policy(out)
    assert policy.get_metadata()["training_run_id"] == second.run_id
    summary = policy.training_summary()  # the CLI's export summarises the same train rows
    assert summary is not None
    assert summary.rows == second.split.train.size


def test_cli_train_no_export_leaves_an_older_model_refused(tmp_path: Path) -> None:
    dataset = _dataset(tmp_path / "ds.npz")
    out = tmp_path / "m"
    first = _train(out, dataset)
    done = subprocess.run(
        [sys.executable, "-m", "otonom_trainer", "train", "--dataset", str(dataset),
         "--output", str(out), "--epochs", "1", "--hidden-dim", "8", "--no-export"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ONNX model:" not in done.stdout
    new_id, _ = _ids(out)
    with pytest.raises(PolicyError, match=rf"{first.run_id}.*{new_id}"):
        load_rl_policy(out)


def test_export_carries_the_run_id_given(tmp_path: Path) -> None:
    dataset = _dataset(tmp_path / "ds.npz")
    trainer = _train(tmp_path / "m", dataset, export=False)
    metrics = trainer.metrics.to_dict()
    path = export_onnx(
        trainer.model,
        tmp_path / "elsewhere" / "policy_best.onnx",
        metrics=metrics,
        training_config=trainer.cfg.to_dict(),
        dataset_sha256=sha256_file(dataset),
        training_run_id="abc123",
    )
    assert load_rl_policy(path).get_metadata()["training_run_id"] == "abc123"
    plain = build_metadata(metrics=metrics, training_config={}, dataset_sha256="0" * 64)
    assert RUN_ID_KEY not in plain  # optional
    with pytest.raises(ValueError, match="training_run_id is 'a b'"):
        build_metadata(
            metrics=metrics, training_config={}, dataset_sha256="0" * 64, training_run_id="a b"
        )
    assert isinstance(trainer.model, torch.nn.Module)
