"""Behaviour-cloning training: losses, class balance, splits, early stopping, outputs, console."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import hashlib
import io
import json
import math
import re
import sys
import types
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import otonom_schema
from otonom_schema import OfflineDataset, compute_states, feature_index, save_dataset
from otonom_schema.testing import random_history
from otonom_trainer import model as model_mod
from otonom_trainer import train as train_mod
from otonom_trainer.config import TrainingConfig
from otonom_trainer.model import FastDropout, PolicyNet
from otonom_trainer.train import (
    TRAIN_EVAL_ROWS,
    BehaviorCloningLoss,
    BehaviorCloningTrainer,
    CheckpointError,
    EpochStats,
    FlatAdam,
    FocalLoss,
    PlateauLR,
    TrainingError,
    class_weights,
    clip_flat_grad_,
    confusion_matrix,
    epoch_indices,
    load_checkpoint,
    overfitting_warnings,
    per_class_metrics,
    resolve_device,
    split_rows,
    strength_weights,
    train_eval_rows,
)
from otonom_trainer.training import optim as optim_mod

RSI = feature_index("rsi")


def make_dataset(
    path: Path,
    *,
    n: int = 400,
    seed: int = 0,
    labels: str = "rsi",
    symbols: int = 1,
    shuffle: bool = False,
) -> OfflineDataset:
    """States from random histories; BUY if rsi < 0.3, SELL if rsi > 0.7, else HOLD.

    ``labels="noise"`` draws the actions at random instead (nothing to learn: a model can only
    memorise, so the validation loss rises). Low volatility keeps the 20 return features small.
    """
    parts = [compute_states(random_history(n, seed=seed + k, vol=0.005)) for k in range(symbols)]
    dates = np.concatenate([random_history(n, seed=seed + k).dates for k in range(symbols)])
    states = np.concatenate(parts)
    names = np.repeat([f"S{k}" for k in range(symbols)], n)
    rsi = states[:, RSI]
    if labels == "noise":
        actions = np.random.default_rng(seed).integers(0, 3, size=len(states))
    else:
        actions = np.where(rsi < 0.3, 1, np.where(rsi > 0.7, 2, 0))
    strengths = np.where(actions > 0, np.clip(np.abs(rsi - 0.5) * 2, 0, 1), 0.0)
    order = np.random.default_rng(seed).permutation(len(states)) if shuffle else slice(None)
    ds = OfflineDataset(
        states[order],
        actions[order].astype(np.int64),
        strengths[order].astype(np.float32),
        names[order],
        dates[order],
        {"source": "test"},
    )
    save_dataset(ds, path)
    return ds


def small_config(tmp_path: Path, **overrides: Any) -> TrainingConfig:
    base: dict[str, Any] = {
        "dataset_path": str(tmp_path / "ds.npz"),
        "output_dir": str(tmp_path / "out"),
        "hidden_dim": 16,
        "num_layers": 1,
        "batch_size": 64,
        "max_epochs": 2,
        "lr": 1e-2,
    }
    return TrainingConfig.from_dict(base, overrides)


def quiet_train(trainer: BehaviorCloningTrainer) -> tuple[Any, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        metrics = trainer.train()
    return metrics, buf.getvalue()


# -- losses and class balance ----------------------------------------------------------------

LOGITS = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-1.0, 3.0, 0.0], [0.0, 0.0, 2.5]])
ACTIONS = torch.tensor([0, 2, 1, 0])


def _ce_by_hand(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -log_p[np.arange(len(targets)), targets]


def test_class_weights_are_the_guides_formula() -> None:
    w = class_weights([872, 312, 269])
    total = 872 + 312 + 269
    np.testing.assert_allclose(w.numpy(), [total / (3 * c) for c in (872, 312, 269)], rtol=1e-6)
    np.testing.assert_allclose(class_weights([5, 5, 5]).numpy(), [1.0, 1.0, 1.0])
    # a class without rows gets weight 0 instead of a division by zero
    np.testing.assert_allclose(class_weights([10, 0, 20]).numpy(), [1.0, 0.0, 0.5])
    with pytest.raises(ValueError, match="expected 3 counts"):
        class_weights([1, 2])


def test_weighted_cross_entropy_equals_a_hand_computation() -> None:
    w = torch.tensor([0.5, 2.0, 3.0])
    ce = _ce_by_hand(LOGITS.numpy(), ACTIONS.numpy())
    wy = w.numpy()[ACTIONS.numpy()]
    expected = float((wy * ce).sum() / wy.sum())
    zero = torch.zeros(4, 1)
    weighted = BehaviorCloningLoss(1.0, 1.0, class_weights=w)(LOGITS, zero, ACTIONS, torch.zeros(4))
    assert float(weighted.action) == pytest.approx(expected, rel=1e-6)
    # the guide's nn.CrossEntropyLoss(weight=...) is the same quantity
    assert float(weighted.action) == pytest.approx(
        float(nn.CrossEntropyLoss(weight=w)(LOGITS, ACTIONS))
    )
    plain = BehaviorCloningLoss()(LOGITS, zero, ACTIONS, torch.zeros(4))
    assert float(plain.action) == pytest.approx(float(ce.mean()), rel=1e-6)
    assert abs(float(weighted.action) - float(plain.action)) > 0.05


def test_focal_loss_is_the_guides_and_reduces_to_cross_entropy_at_gamma_zero() -> None:
    ce = _ce_by_hand(LOGITS.numpy(), ACTIONS.numpy())
    pt = np.exp(-ce)
    for gamma in (0.5, 2.0):
        expected = float(((1 - pt) ** gamma * ce).mean())
        assert float(FocalLoss(gamma)(LOGITS, ACTIONS)) == pytest.approx(expected, rel=1e-6)
    assert float(FocalLoss(0.0)(LOGITS, ACTIONS)) == pytest.approx(
        float(F.cross_entropy(LOGITS, ACTIONS)), rel=1e-6
    )
    # gamma > 0 shrinks every term: easy rows (pt near 1) the most
    assert float(FocalLoss(2.0)(LOGITS, ACTIONS)) < float(F.cross_entropy(LOGITS, ACTIONS))
    focal = BehaviorCloningLoss(focal_gamma=2.0)(LOGITS, torch.zeros(4, 1), ACTIONS, torch.zeros(4))
    assert float(focal.action) == pytest.approx(float(((1 - pt) ** 2 * ce).mean()), rel=1e-6)
    with pytest.raises(ValueError, match="not both"):
        BehaviorCloningLoss(class_weights=torch.ones(3), focal_gamma=2.0)


def test_strength_loss_counts_buy_and_sell_rows_only() -> None:
    pred = torch.tensor([[0.9], [0.2], [0.6], [0.1]])
    target = torch.tensor([0.0, 0.5, 1.0, 0.0])  # rows 0 and 3 are HOLD (strength 0 = keep)
    loss = BehaviorCloningLoss(alpha=2.0, beta=3.0)(LOGITS, pred, ACTIONS, target)
    expected_mse = ((0.2 - 0.5) ** 2 + (0.6 - 1.0) ** 2) / 2
    assert float(loss.strength) == pytest.approx(expected_mse, rel=1e-6)
    assert float(loss.total) == pytest.approx(
        2.0 * float(loss.action) + 3.0 * expected_mse, rel=1e-6
    )


def test_a_batch_without_trades_has_no_strength_loss_and_no_strength_gradient() -> None:
    net = PolicyNet(hidden_dim=8, num_layers=1, dropout=0.0)
    x = torch.randn(5, otonom_schema.STATE_DIM)
    holds = torch.zeros(5, dtype=torch.int64)
    logits, strength = net(x)
    loss = BehaviorCloningLoss()(logits, strength, holds, torch.zeros(5))
    assert float(loss.strength.detach()) == 0.0
    assert float(loss.total.detach()) == pytest.approx(
        float(F.cross_entropy(logits, holds).detach())
    )
    loss.total.backward()
    assert net.strength_head.weight.grad is not None
    assert float(net.strength_head.weight.grad.abs().sum()) == 0.0


def test_oversampling_draws_classes_about_equally() -> None:
    actions = torch.tensor([0] * 2700 + [1] * 240 + [2] * 60)
    gen = torch.Generator().manual_seed(0)
    idx = epoch_indices(actions, "oversample", gen)
    assert idx.shape == (3000,)
    assert int(idx.min()) >= 0
    assert int(idx.max()) < 3000
    freq = torch.bincount(actions[idx], minlength=3).double() / 3000
    np.testing.assert_allclose(freq.numpy(), [1 / 3] * 3, atol=0.04)
    # with replacement: the 60 SELL rows are drawn about 1000 times between them
    assert len(set(idx[actions[idx] == 2].tolist())) <= 60
    # seeded
    again = epoch_indices(actions, "oversample", torch.Generator().manual_seed(0))
    assert torch.equal(idx, again)
    # a class with no rows is skipped; the others share the draws
    partial = torch.tensor([0] * 100 + [2] * 10)
    drawn = partial[epoch_indices(partial, "oversample", gen)]
    assert set(drawn.tolist()) == {0, 2}
    assert abs(float((drawn == 2).double().mean()) - 0.5) < 0.15


def test_without_oversampling_an_epoch_sees_every_row_once() -> None:
    actions = torch.tensor([0] * 50 + [1] * 5)
    for mode in ("none", "weighted", "focal"):
        idx = epoch_indices(actions, mode, torch.Generator().manual_seed(1))
        assert sorted(idx.tolist()) == list(range(55))
        assert idx.tolist() != list(range(55))


def test_the_trainer_oversamples_every_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_dataset(tmp_path / "ds.npz", n=400)
    draws: list[torch.Tensor] = []
    real = train_mod.epoch_indices

    def spy(actions: torch.Tensor, mode: str, gen: torch.Generator) -> torch.Tensor:
        out = real(actions, mode, gen)
        draws.append(actions[out])
        return out

    monkeypatch.setattr(train_mod, "epoch_indices", spy)
    trainer = BehaviorCloningTrainer(small_config(tmp_path, class_balance="oversample"))
    quiet_train(trainer)
    train_actions = trainer.dataset.actions[trainer.split.train]
    assert np.bincount(train_actions, minlength=3).min() < 0.25 * len(train_actions)  # imbalanced
    assert len(draws) == 2
    for drawn in draws:
        freq = torch.bincount(drawn, minlength=3).double() / len(drawn)
        np.testing.assert_allclose(freq.numpy(), [1 / 3] * 3, atol=0.08)
    assert not torch.equal(draws[0], draws[1])


# -- the lean training step ------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"alpha": 0.7, "beta": 2.0},
        {"class_weights": torch.tensor([0.5, 2.0, 3.0])},
        {"focal_gamma": 2.0},
        {"logit_penalty": 0.5},
        {"class_weights": torch.tensor([0.0, 1.0, 2.0]), "logit_penalty": 0.1},
    ],
)
def test_batch_terms_equal_the_loss_for_each_mode(kwargs: dict[str, Any]) -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(40, 3, generator=gen) * 2
    pred = torch.rand(40, 1, generator=gen)
    actions = torch.randint(0, 3, (40,), generator=gen)
    if "class_weights" in kwargs and float(kwargs["class_weights"][0]) == 0.0:
        actions = torch.randint(1, 3, (40,), generator=gen)  # no row of a weight-0 class
    targets = torch.where(actions > 0, torch.rand(40, generator=gen), 0.0)
    loss = BehaviorCloningLoss(**kwargs)
    slow = loss(logits, pred, actions, targets)
    fast = loss.batch_terms(logits, pred, actions, targets, strength_weights(actions, 40))
    for a, b in (
        (slow.total, fast.total),
        (slow.action, fast.action),
        (slow.strength, fast.strength),
    ):
        assert float(a) == pytest.approx(float(b), rel=1e-5, abs=1e-7)
    # the whole-split sums give the same loss
    assert float(loss.combine(loss.sums(logits, pred, actions, targets)).total) == pytest.approx(
        float(slow.total), rel=1e-6
    )


def test_the_logit_penalty_is_the_mean_squared_logit() -> None:
    zero = torch.zeros(4, 1)
    plain = BehaviorCloningLoss()(LOGITS, zero, ACTIONS, torch.zeros(4))
    pen = BehaviorCloningLoss(logit_penalty=0.5)(LOGITS, zero, ACTIONS, torch.zeros(4))
    assert float(pen.action) == float(plain.action)
    expected = float(plain.total) + 0.5 * float((LOGITS**2).mean())
    assert float(pen.total) == pytest.approx(expected, rel=1e-6)


def test_strength_weights_average_over_the_trade_rows_of_each_batch() -> None:
    actions = torch.tensor([0, 1, 2, 0, 0, 0, 1, 0, 2, 2, 1])  # batches of 4: 2, 1, 3 trades
    w = strength_weights(actions, 4)
    expected = [0, 1 / 2, 1 / 2, 0, 0, 0, 1, 0, 1 / 3, 1 / 3, 1 / 3]
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-6)
    assert float(strength_weights(torch.zeros(5, dtype=torch.int64), 2).abs().sum()) == 0.0


@pytest.mark.parametrize("decoupled", [False, True])
def test_flat_adam_is_torchs_adam(decoupled: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    start = torch.randn(50, generator=gen)
    grads = [torch.randn(50, generator=gen) for _ in range(20)]
    ours = nn.Parameter(start.clone())
    ref = nn.Parameter(start.clone())
    opt = FlatAdam(ours, lr=1e-2, weight_decay=0.1, decoupled=decoupled)
    ref_cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    ref_opt = ref_cls([ref], lr=1e-2, weight_decay=0.1, foreach=False)
    for i, g in enumerate(grads):
        if i == 10:  # a plateau step halves the rate of both
            opt.param_groups[0]["lr"] = ref_opt.param_groups[0]["lr"] = 5e-3
        ours.grad, ref.grad = g.clone(), g.clone()
        opt.step()
        ref_opt.step()
    torch.testing.assert_close(ours.detach(), ref.detach(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="lr > 0"):
        FlatAdam(ours, lr=0.0)


def test_plateau_lr_is_torchs_reduce_on_plateau() -> None:
    losses = [1.0, 0.9, 0.9, 0.95, 0.91, 0.8, 0.80001, 0.85, 0.9, 0.7, 0.7, 0.7, 0.7, 0.7]
    for patience in (0, 1, 2):
        ref_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
        ref = torch.optim.lr_scheduler.ReduceLROnPlateau(ref_opt, factor=0.5, patience=patience)
        ours = FlatAdam(nn.Parameter(torch.zeros(1)), lr=1.0)
        plateau = PlateauLR(ours, factor=0.5, patience=patience)
        for loss in losses:
            ref.step(loss)
            plateau.step(loss)
            assert ours.param_groups[0]["lr"] == ref_opt.param_groups[0]["lr"]


@pytest.mark.parametrize("max_norm", [0.0, 0.5, 100.0])
def test_clipping_the_flat_gradient_is_clip_grad_norm(max_norm: float) -> None:
    gen = torch.Generator().manual_seed(0)
    params = [nn.Parameter(torch.zeros(s)) for s in ((3, 4), (4,), (2, 5))]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen)
    flat = torch.cat([p.grad.reshape(-1) for p in params if p.grad is not None])
    norm = clip_flat_grad_(flat, max_norm)
    if max_norm > 0:
        ref_norm = nn.utils.clip_grad_norm_(params, max_norm)
    else:
        ref_norm = nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    assert float(norm) == pytest.approx(float(ref_norm), rel=1e-6)
    ref = torch.cat([p.grad.reshape(-1) for p in params if p.grad is not None])
    torch.testing.assert_close(flat, ref)


def test_flat_parameters_share_one_buffer_and_are_given_back() -> None:
    net = PolicyNet(hidden_dim=8, num_layers=2, dropout=0.0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    flat, params = optim_mod.flatten_parameters(net)
    assert flat.numel() == sum(p.numel() for p in params)
    assert all(p.untyped_storage().data_ptr() == flat.untyped_storage().data_ptr() for p in params)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    x = torch.randn(6, otonom_schema.STATE_DIM)
    logits, strength = net(x)
    torch.autograd.backward(logits.sum() + strength.sum())
    grad = flat.grad
    assert grad is not None
    # backward accumulated into the flat buffer, which is what the per-parameter grads show
    ref = PolicyNet(hidden_dim=8, num_layers=2, dropout=0.0)
    ref.load_state_dict(before)
    ref_logits, ref_strength = ref(x)
    torch.autograd.backward(ref_logits.sum() + ref_strength.sum())
    expected = torch.cat([p.grad.reshape(-1) for p in ref.parameters() if p.grad is not None])
    torch.testing.assert_close(grad, expected)
    with torch.no_grad():
        flat.add_(1.0)  # an update of the flat parameter is an update of the model
    assert torch.equal(net.action_head.bias, before["action_head.bias"] + 1.0)
    optim_mod.unflatten_parameters(params)
    assert len({p.untyped_storage().data_ptr() for p in params}) == len(params)
    assert all(p.grad is None for p in params)
    assert torch.equal(net.action_head.bias, before["action_head.bias"] + 1.0)


def test_fast_dropout_is_unbiased_dropout() -> None:
    torch.manual_seed(0)
    x = torch.ones(1000, 1000)
    for p in (0.1, 0.5):
        layer = FastDropout(p).train()
        y = layer(x)
        kept = y != 0
        assert float(1 - kept.double().mean()) == pytest.approx(p, abs=2e-3)
        assert torch.allclose(y[kept], torch.tensor(1 / (1 - p)), rtol=1e-4)
        assert float(y.double().mean()) == pytest.approx(1.0, abs=5e-3)
    # every 16-bit lane of a 64-bit draw drops at the same rate
    y = FastDropout(0.25).train()(torch.ones(400_000))
    for lane in range(4):
        assert float((y[lane::4] == 0).double().mean()) == pytest.approx(0.25, abs=5e-3)
    # seeded through torch's generator; eval mode and p = 0 are the identity
    torch.manual_seed(3)
    a = FastDropout(0.3).train()(torch.ones(7, 5))
    torch.manual_seed(3)
    assert torch.equal(a, FastDropout(0.3).train()(torch.ones(7, 5)))
    z = torch.randn(9, 4)
    assert torch.equal(FastDropout(0.3).eval()(z), z)
    assert torch.equal(FastDropout(0.0).train()(z), z)
    # gradients flow through the kept elements only, scaled like the values
    z.requires_grad_(True)
    out = FastDropout(0.5).train()(z)
    out.sum().backward()
    assert z.grad is not None
    torch.testing.assert_close(z.grad, (out.detach() != 0).float() * 2.0)
    # off the CPU it is nn.Dropout (checked on the meta device: shapes only)
    meta = FastDropout(0.2).train()(torch.empty(3, 4, device="meta"))
    assert meta.shape == (3, 4)
    assert meta.device.type == "meta"


def test_train_loss_is_measured_on_a_fixed_sample_of_a_large_train_split() -> None:
    small = np.arange(100, dtype=np.int64) * 2
    assert np.array_equal(train_eval_rows(small, 0), small)
    large = np.arange(TRAIN_EVAL_ROWS * 3, dtype=np.int64) + 5
    rows = train_eval_rows(large, 0)
    assert rows.size == TRAIN_EVAL_ROWS
    assert np.all(np.diff(rows) > 0)
    assert np.isin(rows, large).all()
    assert np.array_equal(rows, train_eval_rows(large, 0))
    assert not np.array_equal(rows, train_eval_rows(large, 1))


def test_a_small_net_trains_on_one_cpu_thread_and_the_setting_is_restored(
    tmp_path: Path,
) -> None:
    make_dataset(tmp_path / "ds.npz", n=200)
    before = torch.get_num_threads()
    seen: list[int] = []
    trainer = BehaviorCloningTrainer(
        small_config(tmp_path, device="cpu"),
        on_epoch_end=lambda stats, model: seen.append(torch.get_num_threads()),
    )
    quiet_train(trainer)
    assert seen == [1, 1]
    assert torch.get_num_threads() == before
    # a large per-batch workload keeps the caller's setting
    seen.clear()
    big = small_config(tmp_path, device="cpu", batch_size=1024, hidden_dim=128, max_epochs=1)
    quiet_train(BehaviorCloningTrainer(big, on_epoch_end=lambda s, m: seen.append(0)))
    assert torch.get_num_threads() == before
    with optim_mod.intra_op_threads(torch.device("cpu"), big.batch_size * big.hidden_dim):
        assert torch.get_num_threads() == before
    with optim_mod.intra_op_threads(torch.device("cuda"), 1):
        assert torch.get_num_threads() == before


def test_an_epoch_gathers_its_rows_once_and_slices_batches(tmp_path: Path) -> None:
    """The device-agnostic data path (the one a CUDA run takes): whole split on the device, one
    gather per epoch in the epoch's order, contiguous batches, the last one partial."""
    make_dataset(tmp_path / "ds.npz", n=300)
    cfg = small_config(tmp_path, batch_size=32, max_epochs=1, device="cpu")  # CPU states seen
    trainer = BehaviorCloningTrainer(cfg)
    seen: list[torch.Tensor] = []
    real = PolicyNet.forward

    def spy(self: PolicyNet, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.training:
            seen.append(states.detach().clone())
        return real(self, states)

    with pytest.MonkeyPatch.context() as mp:
        order_seen: list[torch.Tensor] = []
        real_indices = train_mod.epoch_indices

        def indices(actions: torch.Tensor, mode: str, gen: torch.Generator) -> torch.Tensor:
            out = real_indices(actions, mode, gen)
            order_seen.append(out)
            return out

        mp.setattr(PolicyNet, "forward", spy)
        mp.setattr(train_mod, "epoch_indices", indices)
        quiet_train(trainer)
    n_train = trainer.split.train.size
    assert [len(b) for b in seen] == [32] * (n_train // 32) + (
        [n_train % 32] if n_train % 32 else []
    )
    states = torch.from_numpy(trainer.dataset.states[trainer.split.train])
    torch.testing.assert_close(torch.cat(seen), states[order_seen[0]])


# -- splits and devices ----------------------------------------------------------------------


def test_the_time_split_holds_out_the_latest_dates(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "ds.npz", n=150, symbols=3, shuffle=True)
    split = split_rows(ds.dates, 0.2, "time", seed=0)
    train_dates, val_dates = ds.dates[split.train], ds.dates[split.val]
    assert train_dates.max() < val_dates.min() == split.val_start
    assert len(split.train) + len(split.val) == len(ds)
    assert len(split.val) == pytest.approx(0.2 * len(ds), abs=3)  # whole days: 3 symbols a day
    assert set(split.train.tolist()).isdisjoint(split.val.tolist())
    trainer = BehaviorCloningTrainer(small_config(tmp_path, val_fraction=0.2))
    np.testing.assert_array_equal(trainer.val_states(), ds.states[split.val])
    assert trainer.val_states().dtype == np.float32


def test_the_random_split_is_seeded(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "ds.npz", n=200)
    a = split_rows(ds.dates, 0.25, "random", seed=1)
    b = split_rows(ds.dates, 0.25, "random", seed=1)
    c = split_rows(ds.dates, 0.25, "random", seed=2)
    assert len(a.val) == 50
    assert a.val_start is None
    np.testing.assert_array_equal(a.val, b.val)
    assert not np.array_equal(a.val, c.val)
    # random rows come from the whole period, not only its end
    assert ds.dates[a.val].min() < ds.dates[a.train].max()


def test_splits_that_cannot_be_made_are_errors() -> None:
    one_day = np.full(10, np.datetime64("2024-01-01"))
    with pytest.raises(TrainingError, match="at least two distinct dates"):
        split_rows(one_day, 0.1, "time", seed=0)
    with pytest.raises(TrainingError, match="needs >= 2"):
        split_rows(one_day[:1], 0.1, "random", seed=0)
    # the first date is never validation even when it holds most rows
    dates = np.array(["2024-01-01"] * 8 + ["2024-01-02"] * 2, dtype="datetime64[D]")
    split = split_rows(dates, 0.5, "time", seed=0)
    assert split.train.tolist() == list(range(8))


def test_device_selection() -> None:
    assert resolve_device("auto", cuda_devices=0) == torch.device("cpu")
    assert resolve_device("auto", cuda_devices=2) == torch.device("cuda")
    assert resolve_device("cpu", cuda_devices=2) == torch.device("cpu")
    assert resolve_device("cuda", cuda_devices=1) == torch.device("cuda", 0)
    assert resolve_device("cuda:1", cuda_devices=2) == torch.device("cuda", 1)
    with pytest.raises(
        TrainingError, match=r"'cuda' was requested but CUDA is not available.*'auto'"
    ):
        resolve_device("cuda", cuda_devices=0)
    with pytest.raises(TrainingError, match=r"only 1 CUDA device"):
        resolve_device("cuda:1", cuda_devices=1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_asking_for_cuda_without_it_fails_before_training(tmp_path: Path) -> None:
    make_dataset(tmp_path / "ds.npz", n=100)
    with pytest.raises(TrainingError, match="CUDA is not available"):
        quiet_train(BehaviorCloningTrainer(small_config(tmp_path, device="cuda")))
    assert not (tmp_path / "out").exists()


# -- metrics -----------------------------------------------------------------------------------


def test_confusion_matrix_and_per_class_metrics_by_hand() -> None:
    y_true = [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    y_pred = [0, 0, 0, 0, 0, 1, 0, 0, 1, 1, 1, 2]
    cm = confusion_matrix(y_true, y_pred)
    assert cm.tolist() == [[5, 1, 0], [2, 3, 1], [0, 0, 0]]
    m = per_class_metrics(cm)
    assert m["HOLD"].precision == pytest.approx(5 / 7)
    assert m["HOLD"].recall == pytest.approx(5 / 6)
    assert m["HOLD"].f1 == pytest.approx(2 * (5 / 7) * (5 / 6) / (5 / 7 + 5 / 6))
    assert (m["BUY"].precision, m["BUY"].recall, m["BUY"].support) == (0.75, 0.5, 6)
    assert (m["SELL"].precision, m["SELL"].recall, m["SELL"].f1, m["SELL"].support) == (0, 0, 0, 0)


def _epoch(e: int, tl: float, vl: float, ta: float, va: float) -> EpochStats:
    return EpochStats(e, tl, vl, ta, va, 1e-3, 1.0, 1.0, vl, 0.0)


def test_overfitting_signs() -> None:
    healthy = [_epoch(1, 0.9, 0.95, 0.6, 0.58), _epoch(2, 0.6, 0.65, 0.75, 0.72)]
    assert overfitting_warnings(healthy, 2) == []
    gap = [_epoch(1, 0.3, 0.55, 0.9, 0.85)]
    (w,) = overfitting_warnings(gap, 1)
    assert w.startswith("train/val loss gap 0.250 > 0.2 at the best epoch 1")
    acc = [_epoch(1, 0.5, 0.6, 0.9, 0.75)]
    (w,) = overfitting_warnings(acc, 1)
    assert w.startswith("train/val accuracy gap 15.0 points > 10")
    vals = [0.8, 0.5, 0.55, 0.6, 0.65]  # best at epoch 2, then 3 rises
    rising = [_epoch(i + 1, v - 0.05, v, 0.7, 0.7) for i, v in enumerate(vals)]
    (w,) = overfitting_warnings(rising, 2)
    assert w.startswith("val_loss rose for 3 consecutive epochs after its best (0.5000 at epoch 2")
    # two rises, or a noisy plateau above the best, is not the sign
    noisy = [
        _epoch(i + 1, v - 0.05, v, 0.7, 0.7)
        for i, v in enumerate([0.8, 0.5, 0.55, 0.6, 0.52, 0.56])
    ]
    assert overfitting_warnings(noisy, 2) == []


# -- a whole run (default network, weighted loss), shared by several tests ----------------------


class Run(NamedTuple):
    cfg: TrainingConfig
    dataset: OfflineDataset
    trainer: BehaviorCloningTrainer
    metrics: Any
    stdout: str


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    root = tmp_path_factory.mktemp("run")
    ds = make_dataset(root / "ds.npz", n=500)
    cfg = TrainingConfig(
        str(root / "ds.npz"),
        output_dir=str(root / "models" / "rl_bc"),
        max_epochs=3,
        batch_size=64,
        class_balance="weighted",
        patience=0,
        device="cpu",  # the tests below read "Device: cpu" and CPU tensors
    )
    trainer = BehaviorCloningTrainer(cfg)
    metrics, out = quiet_train(trainer)
    return Run(cfg, ds, trainer, metrics, out)


def test_console_output_follows_the_guide(run: Run) -> None:
    lines = run.stdout.splitlines()
    counts = run.dataset.action_counts()
    n_train, n_val = len(run.trainer.split.train), len(run.trainer.split.val)
    assert lines[:12] == [
        "=" * 60,
        "RL Behavior Cloning Training",
        "=" * 60,
        f"Dataset: {run.cfg.dataset_path}",
        "Loaded dataset: 500 samples, 34 features",
        f"Action distribution: HOLD={counts[0]}, BUY={counts[1]}, SELL={counts[2]}",
        f"Train size: {n_train}, Val size: {n_val}",
        "Model parameters: 21,508",  # the default 34-128-128-(3+1) network
        "Device: cpu",
        lines[9],  # a class balance other than "none" says so in the header
        "=" * 60,
        "",
    ]
    w = run.trainer.loss_fn.class_weights.tolist()  # type: ignore[union-attr]
    assert (
        lines[9]
        == f"Class balance: weighted loss (HOLD={w[0]:.3f}, BUY={w[1]:.3f}, SELL={w[2]:.3f})"
    )
    assert lines[12].startswith("[Epoch 1/3] ")
    epoch_re = re.compile(
        r"\[Epoch (\d+)/3\] train_loss=(\d+\.\d{4}) val_loss=(\d+\.\d{4}) "
        r"train_acc=(\d\.\d{3}) val_acc=(\d\.\d{3}) grad_norm=(\d+\.\d{3}) lr=([0-9.e-]+)"
    )
    epochs = [m for m in map(epoch_re.fullmatch, lines) if m]
    assert [int(m.group(1)) for m in epochs] == [1, 2, 3]
    for m, h in zip(epochs, run.metrics.history, strict=True):
        assert float(m.group(3)) == pytest.approx(h.val_loss, abs=5e-5)
        assert float(m.group(6)) == pytest.approx(h.grad_norm, abs=5e-4)
    best = run.metrics
    assert (
        f"✓ Saved best model (epoch {best.best_epoch}, val_loss={best.best_val_loss:.4f})" in lines
    )
    # three epochs of the weighted loss leave this model below the majority baseline (it
    # predicts BUY too often): the summary shows the baseline and a warning follows it; then
    # the export (train() ends with a deployable model)
    assert best.degenerate is not None
    assert best.degenerate["rules"] == ["below majority baseline"]
    onnx = Path(run.cfg.output_dir) / "policy_best.onnx"
    assert lines[-1] == f"ONNX model: {onnx} (matches torch at batch 1, 7 and 256)"
    assert lines[-12:-1] == [
        "",
        "=" * 60,
        "Training Complete!",
        "=" * 60,
        f"Best validation loss: {best.best_val_loss:.4f}",
        f"Best epoch: {best.best_epoch}",
        f"Val action accuracy: {best.val_action_acc:.3f}",
        f"Majority baseline: {best.majority_baseline_acc:.3f} (always HOLD, the train split's "
        "most common action)",
        f"Model saved to: {Path(run.cfg.output_dir) / 'policy_best.pt'}",
        "=" * 60,
        f"warning: DEGENERATE model (below majority baseline): validation accuracy "
        f"{best.val_action_acc:.3f} is below the majority baseline "
        f"{best.majority_baseline_acc:.3f} (always HOLD) + 2 points",
    ]


def test_metrics_describe_the_best_epoch(run: Run) -> None:
    m = run.metrics
    assert run.trainer.metrics is m
    val = run.dataset.actions[run.trainer.split.val]
    train_majority = np.bincount(run.dataset.actions[run.trainer.split.train]).argmax()
    assert m.majority_action == ("HOLD", "BUY", "SELL")[train_majority]
    assert m.majority_baseline_acc == pytest.approx(float((val == train_majority).mean()))
    assert m.epochs_run == len(m.history) == 3
    assert not m.stopped_early
    assert m.best_val_loss == min(h.val_loss for h in m.history)
    assert m.history[m.best_epoch - 1].val_loss == m.best_val_loss
    assert m.val_action_acc == m.history[m.best_epoch - 1].val_acc
    assert m.train_action_acc == m.history[m.best_epoch - 1].train_acc
    assert (m.n_params, m.device, m.train_size + m.val_size) == (21508, "cpu", 500)
    cm = np.array(m.confusion_matrix)
    assert cm.shape == (3, 3)
    assert cm.sum() == m.val_size
    assert np.trace(cm) / cm.sum() == pytest.approx(m.val_action_acc)
    assert m.per_class == per_class_metrics(cm)
    assert all(h.grad_norm > 0 and h.grad_norm_max >= h.grad_norm for h in m.history)
    assert all(h.lr == 1e-3 for h in m.history)
    # the weights come from the train split's counts
    train_counts = np.bincount(run.dataset.actions[run.trainer.split.train], minlength=3)
    assert run.trainer.loss_fn is not None
    assert run.trainer.loss_fn.class_weights is not None
    assert torch.equal(run.trainer.loss_fn.class_weights, class_weights(train_counts.tolist()))
    json.dumps(m.to_dict(), allow_nan=False)


def test_the_checkpoint_loads_with_weights_only(run: Run) -> None:
    path = Path(run.cfg.output_dir) / "policy_best.pt"
    ckpt = torch.load(path, weights_only=True)
    assert {"state_dict", "hparams", "config", "metrics"} <= set(ckpt)
    assert ckpt["hparams"] == {"state_dim": 34, "hidden_dim": 128, "num_layers": 2, "dropout": 0.1}
    assert ckpt["config"] == run.cfg.to_dict()
    assert ckpt["metrics"] == run.metrics.to_dict()
    assert ckpt["schema_fingerprint"] == otonom_schema.schema_fingerprint()
    net, again = load_checkpoint(path)
    assert not net.training
    x = torch.from_numpy(run.trainer.val_states())
    with torch.no_grad():
        for a, b in zip(net(x), run.trainer.model(x), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert again["metrics"]["best_epoch"] == run.metrics.best_epoch


def test_load_checkpoint_rejects_foreign_files(tmp_path: Path, run: Run) -> None:
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(junk)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="not an otonom-rl policy checkpoint"):
        load_checkpoint(other)
    ckpt = torch.load(Path(run.cfg.output_dir) / "policy_best.pt", weights_only=True)
    ckpt["schema_fingerprint"] = "0000000000000000"
    stale = tmp_path / "stale.pt"
    torch.save(ckpt, stale)
    with pytest.raises(otonom_schema.SchemaMismatchError, match="Retrain on a dataset"):
        load_checkpoint(stale)
    assert load_checkpoint(stale, check_schema=False)[0].hidden_dim == 128


def test_metadata_history_and_plots_are_written(run: Run) -> None:
    out = Path(run.cfg.output_dir)
    meta = json.loads((out / "metadata.json").read_text(encoding="utf-8"))
    digest = hashlib.sha256(Path(run.cfg.dataset_path).read_bytes()).hexdigest()
    assert meta["dataset"]["sha256"] == digest
    assert meta["dataset"]["path"] == run.cfg.dataset_path
    assert meta["schema"] == {
        "version": otonom_schema.SCHEMA_VERSION,
        "fingerprint": otonom_schema.schema_fingerprint(),
    }
    assert meta["config"] == run.cfg.to_dict()
    assert meta["metrics"]["best_val_loss"] == run.metrics.best_val_loss
    assert meta["metrics"]["majority_baseline_acc"] == run.metrics.majority_baseline_acc
    assert meta["degenerate"] == meta["metrics"]["degenerate"] == run.metrics.degenerate
    assert meta["versions"]["torch"] == torch.__version__
    assert meta["versions"]["numpy"] == np.__version__
    assert meta["versions"]["otonom-schema"] == otonom_schema.__version__
    assert {"otonom-runtime", "otonom-trainer"} <= set(meta["versions"])
    created = dt.datetime.fromisoformat(meta["created_at"])
    assert created.utcoffset() == dt.timedelta(0)
    assert meta["split"]["kind"] == "time"
    assert meta["split"]["train_dates"][1] < meta["split"]["val_dates"][0]
    with (out / "history.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == run.metrics.epochs_run
    assert {"epoch", "train_loss", "val_loss", "train_acc", "val_acc", "lr", "grad_norm"} <= set(
        rows[0]
    )
    assert float(rows[-1]["val_loss"]) == run.metrics.history[-1].val_loss
    for name in ("training_curves.png", "confusion_matrix.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(data) > 5000
    assert not list(out.glob(".*.tmp"))


# -- training behaviour --------------------------------------------------------------------------


def test_early_stopping_stops_and_restores_the_best_weights(tmp_path: Path) -> None:
    make_dataset(tmp_path / "ds.npz", n=400, labels="noise")
    snapshots: dict[int, dict[str, torch.Tensor]] = {}

    def snapshot(stats: EpochStats, net: PolicyNet) -> None:
        snapshots[stats.epoch] = {k: v.clone() for k, v in net.state_dict().items()}

    cfg = small_config(
        tmp_path,
        hidden_dim=128,
        dropout=0.0,
        batch_size=32,
        lr=3e-3,
        max_epochs=30,
        patience=3,
        lr_plateau_patience=0,
        split="random",
        device="cpu",  # the weights are compared with CPU tensors below
    )
    trainer = BehaviorCloningTrainer(cfg, on_epoch_end=snapshot)
    m, out = quiet_train(trainer)
    assert m.stopped_early
    assert m.best_epoch > 1  # the val loss first fell (class priors), then rose (memorising)
    assert m.epochs_run == m.best_epoch + 3 < 30
    assert f"Early stopping at epoch {m.epochs_run}: val_loss has not improved for 3 epochs" in out
    # the returned model, the saved model and the best epoch's snapshot are the same weights
    best = snapshots[m.best_epoch]
    last = snapshots[m.epochs_run]
    saved = torch.load(Path(cfg.output_dir) / "policy_best.pt", weights_only=True)["state_dict"]
    for k, v in best.items():
        assert torch.equal(saved[k], v)
        assert torch.equal(trainer.model.state_dict()[k], v)
    assert any(not torch.equal(best[k], last[k]) for k in best)
    # ... and they give the best validation loss, not the last epoch's
    assert m.best_val_loss < m.history[-1].val_loss
    loss_fn = trainer.loss_fn
    assert loss_fn is not None
    val = trainer.split.val
    x = torch.from_numpy(trainer.val_states())
    with torch.no_grad():
        logits, strength = trainer.model(x)
        again = loss_fn(
            logits,
            strength,
            torch.from_numpy(trainer.dataset.actions[val]),
            torch.from_numpy(trainer.dataset.strengths[val]),
        )
    assert float(again.total) == pytest.approx(m.best_val_loss, rel=1e-5)
    # memorising noise is overfitting: the signs are reported and printed
    assert m.overfitting_warnings
    for w in m.overfitting_warnings:
        assert f"warning: {w}" in out


def test_the_same_seed_gives_the_same_run(tmp_path: Path) -> None:
    make_dataset(tmp_path / "ds.npz", n=200)
    cfg = small_config(tmp_path, max_epochs=2, split="random")

    def fingerprint(c: TrainingConfig) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        t = BehaviorCloningTrainer(c)
        m, _ = quiet_train(t)
        d = m.to_dict()
        d.pop("elapsed_s")
        return d, t.model.state_dict()

    before = torch.get_rng_state()
    first, w1 = fingerprint(cfg)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's RNG is left alone
    torch.manual_seed(12345)  # global seeding does not leak into a run
    second, w2 = fingerprint(cfg)
    assert first == second
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    other, _ = fingerprint(cfg.replace(seed=43))
    assert other["history"] != first["history"]


def test_a_non_finite_loss_stops_training_with_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_dataset(tmp_path / "ds.npz", n=300)
    real_forward = model_mod.PolicyNet.forward
    calls = {"n": 0}

    def nan_strength_on_third_batch(
        self: PolicyNet, states: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits, strength = real_forward(self, states)
        if self.training:
            calls["n"] += 1
            if calls["n"] == 3:
                strength = strength * float("nan")
        return logits, strength

    monkeypatch.setattr(model_mod.PolicyNet, "forward", nan_strength_on_third_batch)
    trainer = BehaviorCloningTrainer(small_config(tmp_path, batch_size=32))
    with pytest.raises(
        TrainingError, match=r"^epoch 1, batch 3/\d+: the strength \(MSE\) loss is nan"
    ):
        quiet_train(trainer)


def test_a_diverging_learning_rate_is_caught(tmp_path: Path) -> None:
    make_dataset(tmp_path / "ds.npz", n=200)
    cfg = small_config(tmp_path, lr=1e30, grad_clip=0.0, max_epochs=3)
    with pytest.raises(
        TrainingError,
        match=r"^epoch \d+, batch \d+/\d+: .* loss is (nan|inf).*Lower lr \(now 1e\+30\)",
    ):
        quiet_train(BehaviorCloningTrainer(cfg))


def test_the_policy_learns_a_simple_rule(tmp_path: Path) -> None:
    """BUY when rsi < 0.3, SELL when rsi > 0.7, else HOLD: learnable to >= 90% on held-out days."""
    make_dataset(tmp_path / "ds.npz", n=700, seed=3, symbols=3)
    cfg = small_config(
        tmp_path, hidden_dim=64, num_layers=2, dropout=0.0, batch_size=128, max_epochs=30
    )
    m, _ = quiet_train(BehaviorCloningTrainer(cfg))
    assert m.val_action_acc >= 0.9
    assert m.val_action_acc > m.majority_baseline_acc + 0.02
    assert m.degenerate is None
    # not just the majority class: the minority actions are found too
    assert m.per_class["BUY"].support >= 10
    assert m.per_class["SELL"].support >= 10
    assert m.per_class["BUY"].recall > 0.6
    assert m.per_class["SELL"].recall > 0.6


def test_a_class_missing_from_the_train_split_is_a_warning(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "ds.npz", n=200)
    no_sell = OfflineDataset(
        ds.states, np.where(ds.actions == 2, 0, ds.actions), ds.strengths, ds.symbols, ds.dates
    )
    save_dataset(no_sell, tmp_path / "ds.npz")
    trainer = BehaviorCloningTrainer(small_config(tmp_path, class_balance="weighted", max_epochs=1))
    m, out = quiet_train(trainer)
    assert m.warnings == [
        "the train split has no SELL rows; the model cannot learn that action (class weight 0)"
    ]
    assert f"warning: {m.warnings[0]}" in out
    assert trainer.loss_fn is not None
    assert trainer.loss_fn.class_weights is not None
    assert float(trainer.loss_fn.class_weights[2]) == 0.0
    assert math.isfinite(m.best_val_loss)


def test_tensorboard_logs_when_available(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_dataset(tmp_path / "ds.npz", n=100)
    logged: list[tuple[str, float, int]] = []
    made: dict[str, Any] = {}

    class FakeWriter:
        def __init__(self, log_dir: str) -> None:
            made["log_dir"] = log_dir

        def add_scalar(self, tag: str, value: float, step: int) -> None:
            logged.append((tag, value, step))

        def close(self) -> None:
            made["closed"] = True

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = FakeWriter  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    m, out = quiet_train(BehaviorCloningTrainer(small_config(tmp_path, tensorboard=True)))
    assert made == {"log_dir": str(tmp_path / "out" / "tensorboard"), "closed": True}
    assert f"TensorBoard logs: {tmp_path / 'out' / 'tensorboard'}" in out
    assert ("loss/val", m.history[1].val_loss, 2) in logged
    assert {t for t, _, _ in logged} >= {"loss/train", "accuracy/val", "lr", "grad_norm"}


def test_tensorboard_missing_is_a_note_not_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_dataset(tmp_path / "ds.npz", n=100)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    m, out = quiet_train(BehaviorCloningTrainer(small_config(tmp_path, tensorboard=True)))
    assert "note: TensorBoard logging is off" in out
    assert "otonom-trainer[tensorboard]" in out
    assert m.epochs_run == 2


def test_a_progress_bar_only_for_large_train_splits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    make_dataset(tmp_path / "ds.npz", n=100)
    BehaviorCloningTrainer(small_config(tmp_path, max_epochs=1)).train()
    assert "batch" not in capsys.readouterr().err  # 90 rows: no bar
    monkeypatch.setattr(train_mod, "PROGRESS_MIN_ROWS", 50)
    BehaviorCloningTrainer(small_config(tmp_path, max_epochs=1)).train()
    assert "Epoch 1/1" in capsys.readouterr().err
    BehaviorCloningTrainer(small_config(tmp_path, max_epochs=1, progress=False)).train()
    assert capsys.readouterr().err == ""


def test_model_is_only_there_after_training(tmp_path: Path) -> None:
    make_dataset(tmp_path / "ds.npz", n=100)
    trainer = BehaviorCloningTrainer(small_config(tmp_path))
    with pytest.raises(TrainingError, match="call train"):
        _ = trainer.model
    with pytest.raises(TrainingError, match="call train"):
        _ = trainer.metrics


def test_export_needs_a_trained_model(tmp_path: Path) -> None:
    from otonom_trainer.config import TrainingConfig
    from otonom_trainer.train import BehaviorCloningTrainer, TrainingError

    trainer = BehaviorCloningTrainer(TrainingConfig(dataset_path=str(tmp_path / "x.npz")))
    with pytest.raises(TrainingError, match=r"call train\(\) first"):
        trainer.export_onnx()
