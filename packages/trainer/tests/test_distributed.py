"""Data-parallel training under torchrun (``otonom_trainer.training.distributed``): the shard
maths, the torchrun environment, rank 0 alone writing, and a real two-process Gloo run of
``torchrun -m otonom_trainer train`` against a one-process run."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from otonom_schema import OfflineDataset, compute_states, feature_index, save_dataset
from otonom_schema.testing import random_history
from otonom_trainer.config import TrainingConfig
from otonom_trainer.train import BehaviorCloningTrainer, TrainingError, load_checkpoint
from otonom_trainer.training import distributed as dist_mod
from otonom_trainer.training.distributed import BatchPlan, DataParallel
from otonom_trainer.training.losses import BehaviorCloningLoss, class_weights, strength_weights


def _dataset(path: Path, n: int = 500) -> Path:
    """Two symbols; BUY when rsi < 0.4, SELL when rsi > 0.6, else HOLD (learnable in a few
    epochs); strengths grow with the distance from 0.5."""
    histories = [random_history(n, seed=k, vol=0.005) for k in range(2)]
    states = np.concatenate([compute_states(h) for h in histories])
    rsi = states[:, feature_index("rsi")]
    actions = np.where(rsi < 0.4, 1, np.where(rsi > 0.6, 2, 0)).astype(np.int64)
    strengths = np.where(actions > 0, np.clip(np.abs(rsi - 0.5) * 2, 0, 1), 0.0)
    ds = OfflineDataset(
        states=states,
        actions=actions,
        strengths=strengths.astype(np.float32),
        symbols=np.repeat(["A", "B"], n),
        dates=np.concatenate([h.dates for h in histories]),
        metadata={},
    )
    return save_dataset(ds, path)


# --- the shard maths: the ranks' losses add up to the global batch's ------------------------


@pytest.mark.parametrize(
    ("mode", "penalty"),
    [("none", 0.0), ("weighted", 0.0), ("focal", 0.0), ("none", 0.3), ("weighted", 0.3)],
)
@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("awr", [False, True])
def test_the_shards_losses_and_gradients_add_up_to_the_global_batch(
    mode: str, penalty: float, world: int, awr: bool
) -> None:
    """Rank r's ``terms`` on its rows, summed over the ranks and divided by W (DDP's average),
    is the one-process ``batch_terms`` of the global batch: value and gradients, for every
    batch of an epoch whose last batch is short (a shard of it may be empty); with AWR row
    weights (``training.awr``) too."""
    gen = torch.Generator().manual_seed(7)
    n, bs = 17, 7  # batches of 7, 7 and 3 rows
    actions = torch.randint(0, 3, (n,), generator=gen)
    strengths = torch.rand(n, generator=gen) * (actions > 0)
    logits = torch.randn(n, 3, generator=gen, requires_grad=True)
    pred = torch.rand(n, 1, generator=gen).requires_grad_()
    weights = class_weights(torch.bincount(actions, minlength=3).tolist())
    loss = BehaviorCloningLoss(
        0.7,
        1.3,
        class_weights=weights if mode == "weighted" else None,
        focal_gamma=2.0 if mode == "focal" else None,
        logit_penalty=penalty,
    )
    s_w = strength_weights(actions, bs)
    aw = torch.rand(n, generator=gen) * 2 if awr else None
    one = BatchPlan(loss, actions, bs, weights=aw)
    plans = [BatchPlan(loss, actions, bs, r, world, aw) for r in range(world)]
    assert one.n_batches == 3
    for b in range(one.n_batches):
        sl = one.rows(b)
        ref = one.terms(b, logits[sl], pred[sl], actions[sl], strengths[sl], s_w[sl]).total
        ref_grads = torch.autograd.grad(ref, (logits, pred))
        covered = []
        total = torch.zeros(())
        for plan in plans:
            sh = plan.rows(b)
            covered += list(range(n))[sh]
            terms = plan.terms(b, logits[sh], pred[sh], actions[sh], strengths[sh], s_w[sh])
            total = total + terms.total / world
        assert covered == list(range(n))[sl]  # the shards tile the batch, in order
        grads = torch.autograd.grad(total, (logits, pred))
        torch.testing.assert_close(total, ref.detach(), rtol=1e-6, atol=1e-7)
        for got, want in zip(grads, ref_grads, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_one_process_plan_is_the_trainers_own_slices() -> None:
    actions = torch.zeros(10, dtype=torch.int64)
    plan = BatchPlan(BehaviorCloningLoss(), actions, 4)
    assert [plan.rows(b) for b in range(plan.n_batches)] == [
        slice(0, 4),
        slice(4, 8),
        slice(8, 12),
    ]


# --- the torchrun environment ----------------------------------------------------------------


def test_the_environment_names_the_rank() -> None:
    assert DataParallel.from_env({}) == DataParallel(0, 1, 0)
    assert not DataParallel.from_env({"WORLD_SIZE": "1", "RANK": "0"}).active
    dp = DataParallel.from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"})
    assert (dp.rank, dp.world_size, dp.local_rank, dp.active, dp.writer) == (3, 4, 1, True, False)
    assert DataParallel.from_env({"WORLD_SIZE": "2", "RANK": "0"}).writer
    for env in ({"WORLD_SIZE": "2", "RANK": "2"}, {"WORLD_SIZE": "x"}, {"WORLD_SIZE": "0"}):
        with pytest.raises(TrainingError, match="torchrun environment: WORLD_SIZE="):
            DataParallel.from_env(env)


def test_device_under_torchrun_is_the_local_gpu_or_the_cpu() -> None:
    dp = DataParallel(1, 2, 1)
    assert dp.device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert dp.device("auto") == torch.device("cpu")


# --- rank > 0 writes nothing, prints nothing ------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def gloo_group() -> Iterator[None]:
    """A one-process Gloo group in this process (so the trainer makes none of its own)."""
    import torch.distributed as dist

    store = dist.TCPStore("127.0.0.1", _free_port(), 1, is_master=True)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_a_rank_other_than_0_trains_but_writes_and_prints_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gloo_group: None
) -> None:
    """Rank 1 of 2 (its shard of each batch, in DDP over the group): no output folder, no
    checkpoint, state file or export, no log; the metrics are returned."""
    _dataset(tmp_path / "d.npz", n=150)
    monkeypatch.setattr(dist_mod.DataParallel, "from_env", classmethod(lambda cls: cls(1, 2, 1)))
    cfg = TrainingConfig(
        dataset_path=str(tmp_path / "d.npz"),
        output_dir=str(tmp_path / "out"),
        hidden_dim=8,
        num_layers=1,
        max_epochs=2,
        batch_size=64,
        tensorboard=True,
        progress=False,
    )
    out = io.StringIO()
    trainer = BehaviorCloningTrainer(cfg, state_path=tmp_path / "state.pt", out=out)
    metrics = trainer.train()
    assert metrics.epochs_run == 2
    assert trainer.onnx_path is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz"]
    assert out.getvalue() == ""


def test_a_multitask_model_is_refused_under_torchrun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gloo_group: None
) -> None:
    """The extra heads' loss is computed beside the data-parallel forward, so a ``multitask``
    model under torchrun (2 processes here) stops with a one-line error, before any epoch and
    with nothing written."""
    _dataset(tmp_path / "d.npz", n=150)
    monkeypatch.setattr(dist_mod.DataParallel, "from_env", classmethod(lambda cls: cls(0, 2, 0)))
    cfg = TrainingConfig(
        dataset_path=str(tmp_path / "d.npz"),
        output_dir=str(tmp_path / "out"),
        model="multitask",
        hidden_dim=8,
        num_layers=1,
        max_epochs=2,
        batch_size=64,
        progress=False,
    )
    trainer = BehaviorCloningTrainer(cfg, out=io.StringIO())
    with pytest.raises(TrainingError, match=r"'multitask' under torchrun \(2 processes\)"):
        trainer.train()
    assert not (tmp_path / "out").exists()


# --- two real processes (Gloo) against one -------------------------------------------------

_FLAGS = [
    "--hidden-dim",
    "32",
    "--num-layers",
    "2",
    "--dropout",
    "0",
    "--batch-size",
    "50",  # 900 train rows: 18 batches, each cut in two shards of 25
    "--lr",
    "0.01",
    "--epochs",
    "6",
    "--class-balance",
    "weighted",
    "--logit-penalty",
    "0.1",
    "--device",
    "cpu",
    "--no-progress",
]


def _val_predictions(out: Path, states: np.ndarray) -> np.ndarray:
    model, _ = load_checkpoint(out / "policy_best.pt")
    with torch.no_grad():
        logits, _ = model(torch.from_numpy(states))
    return logits.argmax(dim=-1).numpy()


def _torchrun(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    scratch = tmp_path / "tmp"  # torchrun's agent leaves a torchelastic_* folder in TMPDIR
    scratch.mkdir(exist_ok=True)
    env: dict[str, Any] = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(scratch)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node"]
    return subprocess.run(
        [*cmd, "2", "-m", "otonom_trainer", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_torchrun_two_processes_match_one_process(tmp_path: Path) -> None:
    """``torchrun --nproc-per-node 2 -m otonom_trainer train`` (Gloo on the CPU) and one process
    with the same flags: the same held-out actions (>= 99.5 %), accuracy within 0.2 points; the
    log is printed once (by rank 0) and the outputs are written once."""
    dataset = _dataset(tmp_path / "d.npz")
    one = tmp_path / "one"
    cfg = TrainingConfig.from_dict(
        {"dataset_path": str(dataset), "output_dir": str(one)},
        {
            "hidden_dim": 32,
            "num_layers": 2,
            "dropout": 0.0,
            "batch_size": 50,
            "lr": 0.01,
            "max_epochs": 6,
            "class_balance": "weighted",
            "logit_penalty": 0.1,
            "device": "cpu",
            "progress": False,
        },
    )
    trainer = BehaviorCloningTrainer(cfg, out=io.StringIO())
    single = trainer.train()
    run = _torchrun(tmp_path, "train", "--dataset", "d.npz", "--output", "two", *_FLAGS)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("RL Behavior Cloning Training") == 1
    assert run.stdout.count("Training Complete!") == 1
    two = tmp_path / "two"
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    _, ckpt = load_checkpoint(two / "policy_best.pt")
    multi = ckpt["metrics"]
    assert single.train_size == multi["train_size"] == 900
    val = trainer.val_states()
    same = (_val_predictions(one, val) == _val_predictions(two, val)).mean()
    assert same >= 0.995, same
    assert abs(single.val_action_acc - multi["val_action_acc"]) <= 0.002
    assert single.val_action_acc > single.majority_baseline_acc + 0.05  # it learnt something
