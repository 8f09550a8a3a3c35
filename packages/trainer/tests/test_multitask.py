"""Issue 14: the multi-task and attention networks through the architecture registry. Every
registry model trains on a real labelled dataset file, exports, passes parity and serves through
the runtime; the extra heads learn only from train rows whose horizon ends in the training
period, with terciles cut on those rows; a model without extra heads is unchanged by labels."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import otonom_schema as s
from otonom_runtime import load_rl_policy
from otonom_runtime.policy import OPTIONAL_OUTPUTS
from otonom_schema.testing import random_history
from otonom_trainer._errors import ArchitectureError, TrainingError
from otonom_trainer.architectures import architecture_name, architecture_names, get_architecture
from otonom_trainer.config import ConfigError, TrainingConfig
from otonom_trainer.explain import permutation_importance
from otonom_trainer.export import export_onnx
from otonom_trainer.model import PolicyNet
from otonom_trainer.networks import AttentionPolicyNet, MultiTaskPolicyNet
from otonom_trainer.train import BehaviorCloningTrainer, load_checkpoint

ROOT = Path(__file__).resolve().parents[3]
RSI = s.feature_index("rsi")
HORIZON = 5
EXTRAS = {"mlp": (), "multitask": ("expected_return", "risk_probs"), "attention": ("attention",)}


def make_dataset(path: Path, n: int = 320, *, labels: bool = True) -> s.OfflineDataset:
    """A real dataset file: rsi-threshold actions, forward labels of its own closes."""
    history = random_history(n, seed=3, vol=0.01)
    states = s.compute_states(history)
    rsi = states[:, RSI]
    actions = np.where(rsi < 0.3, 1, np.where(rsi > 0.7, 2, 0)).astype(np.int64)
    strengths = np.where(actions > 0, np.clip(np.abs(rsi - 0.5) * 2, 0, 1), 0.0)
    fwd = None
    if labels:
        returns, vol, ends = s.forward_labels(history.close, history.dates, np.arange(n), HORIZON)
        fwd = s.ForwardLabels.make(HORIZON, returns, vol, ends)
    ds = s.OfflineDataset(
        states,
        actions,
        strengths.astype(np.float32),
        np.repeat("S0", n),
        history.dates,
        {"source": "test_multitask"},
        labels=fwd,
    )
    s.save_dataset(ds, path)
    return ds


def config(tmp_path: Path, **overrides: Any) -> TrainingConfig:
    base: dict[str, Any] = {
        "dataset_path": str(tmp_path / "ds.npz"),
        "output_dir": str(tmp_path / "out"),
        "hidden_dim": 16,
        "num_layers": 1,
        "batch_size": 32,
        "max_epochs": 2,
        "lr": 1e-2,
        "device": "cpu",
        "patience": 0,
    }
    return TrainingConfig.from_dict(base, overrides)


def train(cfg: TrainingConfig) -> tuple[BehaviorCloningTrainer, str]:
    trainer = BehaviorCloningTrainer(cfg)
    with contextlib.redirect_stdout(io.StringIO()) as out:
        trainer.train()
    return trainer, out.getvalue()


def test_the_registry_holds_the_three_models() -> None:
    assert architecture_names()[:3] == ("mlp", "multitask", "attention")
    assert get_architecture("multitask") is MultiTaskPolicyNet
    assert get_architecture("attention") is AttentionPolicyNet
    assert architecture_name(AttentionPolicyNet(hidden_dim=4)) == "attention"
    for name, extras in EXTRAS.items():
        assert extras == get_architecture(name).EXTRA_OUTPUTS
        assert set(extras) <= set(OPTIONAL_OUTPUTS)


@pytest.mark.parametrize("model", ["mlp", "multitask", "attention"])
def test_every_registry_model_trains_exports_and_serves(tmp_path: Path, model: str) -> None:
    make_dataset(tmp_path / "ds.npz")
    trainer, _ = train(config(tmp_path, model=model))
    net = trainer.model
    assert type(net) is get_architecture(model)
    assert trainer.onnx_path is not None
    policy = load_rl_policy(trainer.onnx_path)  # the parity check passed at export
    assert policy.extra_outputs == EXTRAS[model]
    assert policy.get_metadata().get("extra_outputs", []) == list(EXTRAS[model])
    x = trainer.val_states()[:9]
    _, strengths, probs = policy.predict_batch(x)
    extras = policy.predict_extras(x)
    with torch.no_grad():
        ref = [t.numpy() for t in net.cpu().exported(torch.from_numpy(x))]
    np.testing.assert_allclose(probs, ref[0], atol=1e-5)
    np.testing.assert_allclose(strengths, ref[1].reshape(-1), atol=1e-5)
    assert list(extras) == list(EXTRAS[model])
    for name, want in zip(EXTRAS[model], ref[2:], strict=True):
        assert extras[name].shape == (9, OPTIONAL_OUTPUTS[name])
        np.testing.assert_allclose(extras[name], want, atol=1e-5)
    # the checkpoint rebuilds the same network (its return scale included)
    back, ckpt = load_checkpoint(tmp_path / "out" / "policy_best.pt")
    assert ckpt["architecture"] == model
    assert type(back) is type(net)
    for key, value in net.state_dict().items():
        assert torch.equal(back.state_dict()[key], value.cpu())


def test_the_attention_output_is_a_distribution_over_the_features(tmp_path: Path) -> None:
    make_dataset(tmp_path / "ds.npz")
    trainer, _ = train(config(tmp_path, model="attention"))
    assert trainer.onnx_path is not None
    weights = load_rl_policy(trainer.onnx_path).predict_extras(trainer.val_states())["attention"]
    assert weights.shape == (len(trainer.val_states()), s.STATE_DIM)
    assert (weights >= 0).all()
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-5)
    # `otonom-train explain` reports it beside the permutation importance
    report = permutation_importance(trainer.onnx_path, tmp_path / "ds.npz", repeats=1, groups=False)
    assert report.attention is not None


def test_the_extra_heads_learn_only_from_the_training_period(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "ds.npz")
    assert ds.labels is not None
    trainer, out = train(config(tmp_path, model="multitask", max_epochs=1))
    aux = trainer._aux
    assert aux is not None
    split = trainer.split
    train_end = ds.dates[split.train].max()
    assert split.val_start is not None
    assert train_end < split.val_start
    # no kept label reads a bar after the training end
    assert (ds.labels.ends[aux.kept_rows] <= train_end).all()
    # the dropped rows: labelled train rows whose horizon crosses it (the last HORIZON days)
    labelled = ds.labels.labelled[split.train]
    crossing = labelled & (ds.labels.ends[split.train] > train_end)
    assert crossing.sum() == HORIZON
    report = trainer.metrics.multitask
    assert report is not None
    assert report["train_rows_dropped"] == HORIZON
    assert report["train_rows_labelled"] == len(aux.kept_rows) == labelled.sum() - HORIZON
    assert report["train_end"] == str(train_end)
    assert f"{HORIZON} dropped (horizon crosses the training end {train_end})" in out
    assert "Extra heads on" in out
    # the terciles and the return scale come from the kept train rows only
    kept_vol = ds.labels.volatility[aux.kept_rows]
    assert report["tercile_cuts"] == pytest.approx(s.tercile_cuts(kept_vol), abs=1e-8)
    assert report["tercile_cuts"] != pytest.approx(list(ds.labels.cuts), abs=1e-8)
    kept_returns = ds.labels.returns[aux.kept_rows].astype(np.float64)
    assert report["return_mean"] == pytest.approx(kept_returns.mean())
    net = trainer.model
    assert isinstance(net, MultiTaskPolicyNet)
    assert float(net.return_std) == pytest.approx(kept_returns.std())
    # the metrics reach metadata.json and the model's metadata
    assert trainer.onnx_path is not None
    assert load_rl_policy(trainer.onnx_path).get_metadata()["metrics"]["multitask"] == report


def test_labels_change_nothing_for_a_model_without_extra_heads(tmp_path: Path) -> None:
    make_dataset(tmp_path / "ds.npz", labels=True)
    labelled, _ = train(config(tmp_path, output_dir=str(tmp_path / "a")))
    make_dataset(tmp_path / "ds.npz", labels=False)
    plain, _ = train(config(tmp_path, output_dir=str(tmp_path / "b")))
    assert labelled.metrics.multitask is None
    for key, value in labelled.model.state_dict().items():
        assert torch.equal(plain.model.state_dict()[key], value)


def test_the_extra_weights_move_the_shared_trunk(tmp_path: Path) -> None:
    make_dataset(tmp_path / "ds.npz")
    # no dropout: the extra heads' initialisation draws from the torch RNG that dropout uses
    off, _ = train(config(tmp_path, model="multitask", return_weight=0, risk_weight=0, dropout=0))
    on, _ = train(config(tmp_path, model="multitask", output_dir=str(tmp_path / "on"), dropout=0))
    first = "trunk.0.weight"
    assert not torch.equal(off.model.state_dict()[first], on.model.state_dict()[first])
    # with both weights 0 the action and strength heads train as PolicyNet's do
    mlp, _ = train(config(tmp_path, output_dir=str(tmp_path / "mlp"), dropout=0))
    for key, value in mlp.model.state_dict().items():
        assert torch.equal(off.model.state_dict()[key], value)


def test_multitask_needs_a_labelled_dataset(tmp_path: Path) -> None:
    make_dataset(tmp_path / "ds.npz", labels=False)
    with pytest.raises(TrainingError, match=r"has none: regenerate it with .*--horizon BARS"):
        train(config(tmp_path, model="multitask"))
    assert not (tmp_path / "out" / "policy_best.onnx").exists()


def test_the_loss_weights_are_validated() -> None:
    with pytest.raises(ConfigError, match=r"return_weight: got -1\.0; expected a finite number"):
        TrainingConfig("d.npz", return_weight=-1.0)
    with pytest.raises(ConfigError, match="risk_weight: got nan"):
        TrainingConfig("d.npz", risk_weight=float("nan"))
    with pytest.raises(ConfigError, match="model: got 'transformer'; expected 'mlp', 'multitask'"):
        TrainingConfig("d.npz", model="transformer")


def test_an_unknown_extra_output_is_refused_at_export(tmp_path: Path) -> None:
    class Odd(PolicyNet):
        EXTRA_OUTPUTS = ("value",)

    with pytest.raises(ValueError, match=r"Odd\.EXTRA_OUTPUTS \['value'\] holds \['value'\]"):
        export_onnx(
            Odd(hidden_dim=4),
            tmp_path / "m.onnx",
            metrics=dict.fromkeys(
                ("val_action_acc", "train_action_acc", "best_val_loss", "best_epoch"), 1
            ),
            training_config={},
            dataset_sha256="0" * 64,
        )
    assert not list(tmp_path.iterdir())
    with pytest.raises(ArchitectureError):
        architecture_name(Odd(hidden_dim=4))


def test_the_cli_trains_with_model(tmp_path: Path) -> None:
    make_dataset(tmp_path / "ds.npz")
    out = subprocess.run(
        [sys.executable, "-m", "otonom_trainer", "train", "--model", "multitask",
         "--dataset", str(tmp_path / "ds.npz"), "--output", str(tmp_path / "out"),
         "--epochs", "1", "--hidden-dim", "8", "--num-layers", "1", "--device", "cpu",
         "--return-weight", "0.25", "--risk-weight", "2"],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "Multi-task labels (horizon 5 bars)" in out.stdout
    policy = load_rl_policy(tmp_path / "out" / "policy_best.onnx")
    assert policy.extra_outputs == ("expected_return", "risk_probs")
    config = policy.get_metadata()["training_config"]
    assert (config["model"], config["return_weight"], config["risk_weight"]) == (
        "multitask",
        0.25,
        2.0,
    )
    helped = subprocess.run(
        [sys.executable, "-m", "otonom_trainer", "train", "--help"],
        capture_output=True, text=True, cwd=ROOT, check=True,
    ).stdout  # fmt: skip
    assert "--architecture MODEL, --model MODEL" in helped
    assert "--return-weight" in helped
    assert "--risk-weight" in helped
