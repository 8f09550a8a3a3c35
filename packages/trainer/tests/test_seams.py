"""The trainer's seams (issue 13): the architecture registry, the optimizer seam with resumable
state, the error tree. Real training runs on real dataset files, real checkpoints, real ONNX
exports loaded through the runtime, a real subprocess for the import cost."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from otonom_runtime import load_rl_policy
from otonom_schema import STATE_DIM, OfflineDataset, compute_states, feature_index, save_dataset
from otonom_schema.testing import random_history
from otonom_trainer._errors import ArchitectureError, OtonomTrainerError
from otonom_trainer.architectures import (
    architecture_names,
    get_architecture,
    register_architecture,
    unregister_architecture,
)
from otonom_trainer.config import ConfigError, TrainingConfig
from otonom_trainer.model import PolicyNet, PolicyNetwork
from otonom_trainer.train import BehaviorCloningTrainer, CheckpointError, load_checkpoint
from otonom_trainer.training.checkpoint import save_checkpoint
from otonom_trainer.training.optim import FlatAdam, PlateauLR

RSI = feature_index("rsi")


def make_dataset(path: Path, n: int = 300) -> OfflineDataset:
    states = compute_states(random_history(n, seed=3, vol=0.005))
    dates = random_history(n, seed=3).dates
    rsi = states[:, RSI]
    actions = np.where(rsi < 0.3, 1, np.where(rsi > 0.7, 2, 0)).astype(np.int64)
    strengths = np.where(actions > 0, np.clip(np.abs(rsi - 0.5) * 2, 0, 1), 0.0)
    ds = OfflineDataset(
        states,
        actions,
        strengths.astype(np.float32),
        np.repeat("S0", len(states)),
        dates,
        {"source": "test_seams"},
    )
    save_dataset(ds, path)
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


def quiet(fn: Any, *args: Any, **kwargs: Any) -> Any:
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


class TinyLinear(PolicyNetwork):
    """A second architecture: one linear layer to 4 outputs (3 logits, 1 strength)."""

    def __init__(self, state_dim: int = STATE_DIM, scale: float = 1.0) -> None:
        super().__init__()
        self.state_dim = state_dim
        self.scale = scale
        self.out = nn.Linear(state_dim, 4)

    def forward(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.out(states) * self.scale
        return z[:, :3], torch.sigmoid(z[:, 3:])

    def hparams(self) -> dict[str, Any]:
        return {"state_dim": self.state_dim, "scale": self.scale}

    @classmethod
    def from_config(cls, cfg: TrainingConfig) -> TinyLinear:
        return cls(STATE_DIM, 0.5)

    @classmethod
    def work_per_row(cls, cfg: TrainingConfig) -> int:
        return 4


@pytest.fixture
def tiny() -> Iterator[str]:
    register_architecture("tiny-linear", TinyLinear)
    try:
        yield "tiny-linear"
    finally:
        unregister_architecture("tiny-linear")


# -- the architecture registry ---------------------------------------------------------------


def test_mlp_is_the_default_architecture() -> None:
    assert TrainingConfig("d.npz").model == "mlp"
    assert architecture_names()[0] == "mlp"
    assert get_architecture("mlp") is PolicyNet


def test_a_second_architecture_trains_exports_and_loads(tmp_path: Path, tiny: str) -> None:
    make_dataset(tmp_path / "ds.npz")
    trainer = BehaviorCloningTrainer(config(tmp_path, model=tiny))
    metrics = quiet(trainer.train)
    assert type(trainer.model) is TinyLinear
    assert metrics.n_params == STATE_DIM * 4 + 4
    model, ckpt = load_checkpoint(tmp_path / "out" / "policy_best.pt")
    assert type(model) is TinyLinear
    assert ckpt["architecture"] == tiny
    assert ckpt["hparams"] == {"state_dim": STATE_DIM, "scale": 0.5}
    assert ckpt["config"]["model"] == tiny
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value.cpu())
    # the ONNX export of the second architecture serves through the runtime like the MLP's
    assert trainer.onnx_path is not None
    policy = load_rl_policy(trainer.onnx_path)
    states = trainer.val_states()[:5]
    _, strengths, probs = policy.predict_batch(states)
    with torch.no_grad():
        ref_probs, ref_strength = model.probabilities(torch.from_numpy(states))
    np.testing.assert_allclose(probs, ref_probs.numpy(), atol=1e-5)
    np.testing.assert_allclose(strengths, ref_strength.numpy().reshape(-1), atol=1e-5)
    meta = (tmp_path / "out" / "metadata.json").read_text(encoding="utf-8")
    assert '"architecture": "tiny-linear"' in meta
    assert '"class": "TinyLinear"' in meta


def test_an_unknown_architecture_is_a_config_error_naming_the_field() -> None:
    with pytest.raises(
        ConfigError,
        match=r"model: got 'resnet'; expected 'mlp', 'multitask', 'attention' or a name",
    ):
        TrainingConfig("d.npz", model="resnet")


def test_registering_checks_name_class_and_duplicates(tiny: str) -> None:
    with pytest.raises(ArchitectureError, match="already registered"):
        register_architecture(tiny, TinyLinear)
    with pytest.raises(ArchitectureError, match="already registered"):
        register_architecture("mlp", TinyLinear, replace=True)
    with pytest.raises(ArchitectureError, match="expected a subclass"):
        register_architecture("plain", nn.Linear)  # type: ignore[arg-type]
    with pytest.raises(ArchitectureError, match="lowercase letters"):
        register_architecture("Bad Name", TinyLinear)
    assert register_architecture(tiny, TinyLinear, replace=True) is TinyLinear


def test_a_checkpoint_without_architecture_loads_as_mlp(tmp_path: Path) -> None:
    make_dataset(tmp_path / "ds.npz")
    trainer = BehaviorCloningTrainer(config(tmp_path, max_epochs=1))
    quiet(trainer.train, export=False)
    path = tmp_path / "out" / "policy_best.pt"
    ckpt = torch.load(path, weights_only=True)
    del ckpt["architecture"], ckpt["training_state"]
    ckpt["format_version"] = 1  # as written before the registry
    old = tmp_path / "old.pt"
    save_checkpoint(ckpt, old)
    model, loaded = load_checkpoint(old)
    assert type(model) is PolicyNet
    assert "architecture" not in loaded


def test_a_checkpoint_of_an_unregistered_architecture_says_so(tmp_path: Path, tiny: str) -> None:
    make_dataset(tmp_path / "ds.npz")
    quiet(BehaviorCloningTrainer(config(tmp_path, model=tiny, max_epochs=1)).train, export=False)
    unregister_architecture(tiny)
    path = tmp_path / "out" / "policy_best.pt"
    with pytest.raises(CheckpointError, match=rf"{path}: model: got 'tiny-linear'"):
        load_checkpoint(path)


# -- the optimizer seam and resuming ---------------------------------------------------------


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    "overrides",
    [
        {},  # FlatAdam (Adam), plateau scheduler, dropout, permutation order
        {"optimizer": "adamw", "class_balance": "oversample", "lr_plateau_patience": 1},
    ],
)
def test_k_epochs_then_a_resume_equal_n_epochs_bit_for_bit(
    tmp_path: Path, overrides: dict[str, Any]
) -> None:
    make_dataset(tmp_path / "ds.npz")
    n, k = 5, 2
    straight = BehaviorCloningTrainer(config(tmp_path, max_epochs=n, dropout=0.2, **overrides))
    full = quiet(straight.train, export=False)
    state = tmp_path / "state.pt"
    first = BehaviorCloningTrainer(
        config(tmp_path, max_epochs=k, dropout=0.2, output_dir=str(tmp_path / "a"), **overrides),
        state_path=state,
    )
    quiet(first.train, export=False)
    assert torch.load(state, weights_only=True)["training_state"]["epoch"] == k
    rest = BehaviorCloningTrainer(
        config(tmp_path, max_epochs=n, dropout=0.2, output_dir=str(tmp_path / "b"), **overrides)
    )
    resumed = quiet(rest.train, export=False, resume_from=state)
    assert resumed.history == full.history  # every epoch's losses, lr and gradient norms
    assert resumed.best_epoch == full.best_epoch
    got, want = _weights(rest.model), _weights(straight.model)
    assert got.keys() == want.keys()
    for key in want:
        assert torch.equal(got[key], want[key]), key
    # the check can fail: without the optimizer state the run goes elsewhere
    broken = torch.load(state, weights_only=True)
    broken["training_state"]["optimizer"]["state"] = {}
    save_checkpoint(broken, tmp_path / "broken.pt")
    other = BehaviorCloningTrainer(
        config(tmp_path, max_epochs=n, dropout=0.2, output_dir=str(tmp_path / "c"), **overrides)
    )
    quiet(other.train, export=False, resume_from=tmp_path / "broken.pt")
    assert any(not torch.equal(_weights(other.model)[k], want[k]) for k in want)


def test_resume_from_the_best_checkpoint_and_its_refusals(tmp_path: Path) -> None:
    make_dataset(tmp_path / "ds.npz")
    quiet(BehaviorCloningTrainer(config(tmp_path, max_epochs=2)).train, export=False)
    best = tmp_path / "out" / "policy_best.pt"
    saved = torch.load(best, weights_only=True)["training_state"]
    assert saved["epoch"] == saved["best_epoch"]
    more = BehaviorCloningTrainer(config(tmp_path, max_epochs=3, output_dir=str(tmp_path / "m")))
    metrics = quiet(more.train, export=False, resume_from=best)
    assert [h.epoch for h in metrics.history] == [1, 2, 3]
    with pytest.raises(CheckpointError, match=r"lr=0\.01 there, 0\.005 here"):
        BehaviorCloningTrainer(config(tmp_path, max_epochs=3, lr=5e-3)).train(resume_from=best)
    with pytest.raises(OtonomTrainerError, match="nothing left to train"):
        BehaviorCloningTrainer(config(tmp_path, max_epochs=2)).train(resume_from=best)


def test_any_torch_optimizer_trains_through_the_seam_and_resumes(tmp_path: Path) -> None:
    make_dataset(tmp_path / "ds.npz")

    def sgd(params: list[nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=0.05, momentum=0.9)

    straight = BehaviorCloningTrainer(config(tmp_path, max_epochs=3), optimizer_factory=sgd)
    full = quiet(straight.train, export=False)
    assert full.history[0].lr == 0.05
    state = tmp_path / "sgd.pt"
    first = BehaviorCloningTrainer(
        config(tmp_path, max_epochs=1, output_dir=str(tmp_path / "a")),
        optimizer_factory=sgd,
        state_path=state,
    )
    quiet(first.train, export=False)
    assert (
        "momentum_buffer"
        in torch.load(state, weights_only=True)["training_state"]["optimizer"]["state"][0]
    )
    rest = BehaviorCloningTrainer(
        config(tmp_path, max_epochs=3, output_dir=str(tmp_path / "b")), optimizer_factory=sgd
    )
    quiet(rest.train, export=False, resume_from=state)
    for key, value in _weights(straight.model).items():
        assert torch.equal(_weights(rest.model)[key], value), key


def test_flat_adam_is_a_torch_optimizer_schedulers_accept() -> None:
    p = nn.Parameter(torch.ones(4))
    opt = FlatAdam(p, lr=0.1)
    assert isinstance(opt, torch.optim.Optimizer)
    step_lr = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    p.grad = torch.ones(4)
    opt.step()
    step_lr.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0, factor=0.5)
    plateau.step(1.0)
    plateau.step(1.0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.025)
    with pytest.raises(ValueError, match="a second group"):
        opt.add_param_group({"params": [nn.Parameter(torch.ones(1))]})


def test_flat_adam_state_dict_round_trips_to_the_same_updates() -> None:
    torch.manual_seed(0)
    grads = [torch.randn(6) for _ in range(6)]
    a = nn.Parameter(torch.ones(6))
    opt_a = FlatAdam(a, lr=0.01, weight_decay=0.1, decoupled=True)
    for g in grads[:3]:
        a.grad = g.clone()
        opt_a.step()
    saved = opt_a.state_dict()
    assert saved["state"][0]["step"].item() == 3.0
    b = nn.Parameter(a.detach().clone())
    opt_b = FlatAdam(b, lr=1.0)  # another lr: load_state_dict restores the group
    opt_b.load_state_dict(saved)
    assert opt_b.param_groups[0]["lr"] == 0.01
    assert opt_b.decoupled
    for g in grads[3:]:
        a.grad, b.grad = g.clone(), g.clone()
        opt_a.step()
        opt_b.step()
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="FlatAdam state of shape"):
        FlatAdam(nn.Parameter(torch.ones(2)), lr=0.1).load_state_dict(saved)


def test_plateau_lr_state_round_trips() -> None:
    opt = FlatAdam(nn.Parameter(torch.ones(1)), lr=1.0)
    sched = PlateauLR(opt, factor=0.5, patience=1)
    for loss in (1.0, 1.0):
        sched.step(loss)
    again = PlateauLR(opt, factor=0.5, patience=1)
    again.load_state_dict(sched.state_dict())
    again.step(1.0)
    assert opt.param_groups[0]["lr"] == 0.5


def test_flat_adam_does_not_import_dynamo() -> None:
    """Constructing, stepping and saving FlatAdam stays clear of torch._dynamo (over 1 s to
    import); torch.optim.Adam imports it (the check can fail)."""
    code = (
        "import sys, torch\n"
        "from otonom_trainer.training.optim import FlatAdam\n"
        "p = torch.nn.Parameter(torch.ones(3)); p.grad = torch.ones(3)\n"
        "o = FlatAdam(p, lr=0.1); o.step(); o.load_state_dict(o.state_dict()); o.zero_grad()\n"
        "print('torch._dynamo' in sys.modules)\n"
        "torch.optim.Adam([p], lr=0.1)\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    assert out.stdout.split() == ["False", "True"]


# -- the error tree --------------------------------------------------------------------------


def test_every_trainer_error_is_in_the_tree_with_its_builtin_base() -> None:
    from otonom_trainer import _errors
    from otonom_trainer.check import CheckError
    from otonom_trainer.export import ExportError
    from otonom_trainer.labels import LabelError
    from otonom_trainer.pipeline import PipelineError
    from otonom_trainer.ranges import RangeError
    from otonom_trainer.registry import RegistryError
    from otonom_trainer.train import TrainingError
    from otonom_trainer.walkforward import WalkForwardError

    builtin = {
        ConfigError: ValueError,
        ArchitectureError: ValueError,
        TrainingError: RuntimeError,
        CheckpointError: ValueError,
        ExportError: RuntimeError,
        RangeError: ValueError,
        RegistryError: ValueError,
        PipelineError: ValueError,
        CheckError: ValueError,
        WalkForwardError: ValueError,
        LabelError: ValueError,
    }
    for cls, base in builtin.items():
        assert issubclass(cls, OtonomTrainerError), cls
        assert issubclass(cls, base), cls
        assert cls.__name__ in (_errors.__doc__ or ""), cls


def test_the_cli_reports_a_tree_error_in_one_line(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "otonom_trainer",
            "train",
            "--dataset",
            str(tmp_path / "d.npz"),
            "--architecture",
            "resnet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert "model: got 'resnet'" in out.stderr


def test_the_cli_trains_with_a_state_file_and_resumes_it(tmp_path: Path) -> None:
    make_dataset(tmp_path / "ds.npz")
    common = [sys.executable, "-m", "otonom_trainer", "train", "--dataset", "ds.npz"]
    small = ["--hidden-dim", "8", "--num-layers", "1", "--device", "cpu", "--no-export"]

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*common, *small, *extra], capture_output=True, text=True, timeout=600, cwd=tmp_path
        )

    first = run("--epochs", "1", "--output", "a", "--state-file", "state.pt")
    assert first.returncode == 0, first.stderr
    second = run("--epochs", "2", "--output", "b", "--resume", "state.pt")
    assert second.returncode == 0, second.stderr
    assert "Resumed after epoch 1" in second.stdout
    assert "[Epoch 2/2]" in second.stdout
    assert "[Epoch 1/2]" not in second.stdout
    refused = run("--epochs", "2", "--output", "c", "--resume", "state.pt", "--lr", "0.5")
    assert refused.returncode != 0
    assert "Traceback" not in refused.stderr
    assert "lr=0.001 there, 0.5 here" in refused.stderr


class WideLinear(TinyLinear):
    """TinyLinear that declares a wide layer: the CPU keeps the caller's thread count."""

    @classmethod
    def work_per_row(cls, cfg: TrainingConfig) -> int:
        return 100_000


def test_the_thread_heuristic_asks_the_architecture(tmp_path: Path, tiny: str) -> None:
    make_dataset(tmp_path / "ds.npz")
    register_architecture("wide-linear", WideLinear)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen: dict[str, int] = {}
        for name in (tiny, "wide-linear"):
            trainer = BehaviorCloningTrainer(
                config(tmp_path, model=name, max_epochs=1),
                on_epoch_end=lambda stats, model, n=name: seen.update({n: torch.get_num_threads()}),
            )
            quiet(trainer.train, export=False)
        assert seen == {tiny: 1, "wide-linear": 2}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
        unregister_architecture("wide-linear")


# -- output streams: the log goes where the caller says, stdout is never swapped --------------


def test_the_training_log_goes_to_out_and_not_to_stdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from otonom_trainer.dataset import save_dataset as save_summary

    ds = make_dataset(tmp_path / "ds.npz")
    capsys.readouterr()
    log = io.StringIO()
    stdout = sys.stdout
    save_summary(ds, tmp_path / "again.npz", log)
    BehaviorCloningTrainer(config(tmp_path, class_balance="weighted"), out=log).train()
    assert sys.stdout is stdout
    assert capsys.readouterr().out == ""
    text = log.getvalue()
    expected = ("Saved to:", "Class balance: weighted loss (", "[Epoch 2/2]", "ONNX model:")
    for line in (*expected, "Training Complete!", "Model saved to:"):
        assert line in text, line


def test_library_code_never_redirects_stdout() -> None:
    """``contextlib.redirect_stdout`` swaps the process's ``sys.stdout`` (every thread's): the
    library takes an output stream instead; only tests may use it."""
    root = Path(__file__).resolve().parents[3] / "packages"
    hits = [
        f"{path.relative_to(root)}:{n}"
        for path in sorted(root.glob("*/src/**/*.py"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if "redirect_stdout" in line or "sys.stdout =" in line
    ]
    assert hits == []
