"""Behaviour cloning: train ``PolicyNet`` to imitate the ensemble's actions and strengths.

The maths (per batch; ``z_i`` logits, ``s_i`` predicted strength, ``y_i`` action, ``t_i`` target
strength, ``p_i = softmax(z_i)[y_i]``, ``CE_i = -log p_i``)::

    L = alpha * L_action + beta * L_strength + logit_penalty * L_logit

    L_logit = mean_i mean_k z_ik^2   (d3rlpy DiscreteBC's regulariser; logit_penalty 0 = off)

    class_balance "none" / "oversample":  L_action = mean_i CE_i
    class_balance "weighted":             L_action = sum_i w[y_i] CE_i / sum_i w[y_i]
                                          w[c] = total / (3 * count[c])   (train split counts;
                                          a class with no train row gets w = 0)
    class_balance "focal":                L_action = mean_i (1 - p_i)^gamma CE_i
    L_strength = sum_{i: y_i != HOLD} (s_i - t_i)^2 / #{i: y_i != HOLD}   (0 when there is none)

The weighted mean is exactly ``nn.CrossEntropyLoss(weight=w)`` (the guide's "Option 1"); the
focal term is the guide's ``FocalLoss``; "oversample" changes which rows an epoch sees, not the
loss: each epoch draws ``n_train`` rows with replacement, row ``i`` with probability
proportional to ``1 / count[y_i]``, so every present class gets an equal share on average.

Why the strength loss ignores HOLD rows: a HOLD row's strength is 0 by construction and means
"keep the position", not "target a 0 position". Regressing it to 0 would teach the strength head
that most states want no exposure and drag every BUY/SELL strength towards 0; so the strength
head learns from BUY/SELL rows only (at inference a HOLD's strength is unused).

The data pipeline keeps the whole dataset on the training device as tensors (on a GPU as on the
CPU: one code path): each epoch gathers the train split once in the epoch's order (a permutation,
or the oversampled draw) and the batches are contiguous slices of it, so there is no
``DataLoader``, no per-batch gather and no host-device copy per batch. Per-batch loss terms and
gradient norms stay on the device and are checked once per epoch, so a GPU run does not
synchronise on every batch.

The training step is lean because this net is small (about 22k parameters): on a CPU core a step
is a few hundred microseconds of maths, so the per-operation overhead decides the speed
(``bench/train.py``, docs/benchmarks.md "Training throughput"). Hence: the batch loss is
``BehaviorCloningLoss.batch_terms`` (one cross-entropy call; the strength term's per-row
weights ``[y_i != HOLD] / #trade rows of the batch`` are computed once per epoch); the
parameters live in one flat buffer, so zeroing, the gradient norm, clipping and the optimizer
(``FlatAdam``, torch's Adam / AdamW maths) are each one or a few tensor operations; dropout is
``model.FastDropout``; and on the CPU a small net (``batch_size * hidden_dim <=
SINGLE_THREAD_MAX_WORK``) trains on one intra-op thread (the caller's setting is restored):
splitting a 256 x 128 matmul between threads gains nothing, and on a busy machine a descheduled
OpenMP worker stalls every operation.

All randomness (split, initialisation, batch order, dropout) comes from ``cfg.seed``; the global
torch RNG is forked inside ``train()`` so the caller's RNG state is left as it was.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import itertools
import json
import math
import os
import platform
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn

from otonom_schema import (
    SCHEMA_VERSION,
    STATE_DIM,
    Action,
    OfflineDataset,
    SchemaMismatchError,
    load_dataset,
    schema_fingerprint,
)
from otonom_trainer.config import TrainingConfig
from otonom_trainer.degenerate import degenerate_mark, majority_baseline
from otonom_trainer.export import export_onnx, sha256_file
from otonom_trainer.model import PolicyNet

__all__ = [
    "ACTION_NAMES",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAME",
    "BehaviorCloningLoss",
    "BehaviorCloningTrainer",
    "CheckpointError",
    "ClassMetrics",
    "DataSplit",
    "EpochStats",
    "FlatAdam",
    "FocalLoss",
    "LossTerms",
    "PlateauLR",
    "TrainingError",
    "TrainingMetrics",
    "class_weights",
    "clip_flat_grad_",
    "confusion_matrix",
    "epoch_indices",
    "load_checkpoint",
    "overfitting_warnings",
    "per_class_metrics",
    "resolve_device",
    "split_rows",
    "strength_weights",
    "train_eval_rows",
]

ACTION_NAMES: Final = tuple(a.name for a in Action)  # ("HOLD", "BUY", "SELL")
N_ACTIONS: Final = len(ACTION_NAMES)
CHECKPOINT_NAME: Final = "policy_best.pt"
ONNX_NAME: Final = "policy_best.onnx"
CHECKPOINT_FORMAT: Final = "otonom-rl/policy-checkpoint"
CHECKPOINT_FORMAT_VERSION: Final = 1
RULE: Final = "=" * 60
# a progress bar within epochs only when the train split is at least this large
PROGRESS_MIN_ROWS: Final = 20_000
# rows per forward pass when evaluating a whole split (no gradients, so larger than a batch)
EVAL_CHUNK: Final = 8192
# train_loss / train_acc are measured on at most this many train rows (a fixed random sample)
TRAIN_EVAL_ROWS: Final = 20_000
# on the CPU, train on one intra-op thread when batch_size * hidden_dim is at most this
SINGLE_THREAD_MAX_WORK: Final = 256 * 256
# the guide's signs of overfitting
LOSS_GAP: Final = 0.2
ACC_GAP: Final = 0.10
RISING_EPOCHS: Final = 3


class TrainingError(RuntimeError):
    """Training cannot go on: a non-finite loss, an unusable split, an unavailable device."""


class CheckpointError(ValueError):
    """A file is not a policy checkpoint written by ``BehaviorCloningTrainer``."""


# -- devices -------------------------------------------------------------------------------


def resolve_device(spec: str, *, cuda_devices: int | None = None) -> torch.device:
    """``"auto"`` -> cuda when available, else cpu; ``"cpu"``; ``"cuda"`` / ``"cuda:N"``.

    ``cuda_devices`` (the number of visible CUDA devices) defaults to
    ``torch.cuda.device_count()`` when CUDA is available, else 0; tests pass it to exercise every
    branch without a GPU. Asking for a CUDA device that is not there raises ``TrainingError``.
    """
    if cuda_devices is None:
        cuda_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if spec == "auto":
        return torch.device("cuda" if cuda_devices > 0 else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        index = int(spec.partition(":")[2] or 0)
        if cuda_devices == 0:
            raise TrainingError(
                f"device {spec!r} was requested but CUDA is not available (torch "
                f"{torch.__version__}, built for CUDA {torch.version.cuda}); use device 'auto' "
                "or 'cpu', or install a CUDA build of torch"
            )
        if index >= cuda_devices:
            raise TrainingError(
                f"device {spec!r} was requested but only {cuda_devices} CUDA device(s) are "
                f"visible (cuda:0 .. cuda:{cuda_devices - 1})"
            )
        return torch.device("cuda", index)
    raise TrainingError(f"device: got {spec!r}; expected 'auto', 'cpu', 'cuda' or 'cuda:N'")


# -- class balance and losses ----------------------------------------------------------------


def class_weights(counts: Sequence[int]) -> torch.Tensor:
    """The guide's weights ``w[c] = total / (3 * count[c])``; ``w[c] = 0`` where ``count[c] = 0``.

    Balanced counts give 1 for every class; a class twice as common as the average gets 1/2.
    """
    c = torch.as_tensor(list(counts), dtype=torch.float64)
    if c.numel() != N_ACTIONS or bool((c < 0).any()):
        raise ValueError(f"counts: got {list(counts)}; expected {N_ACTIONS} counts >= 0")
    total = c.sum()
    w = torch.where(c > 0, total / (N_ACTIONS * c.clamp_min(1.0)), torch.zeros_like(c))
    return w.to(torch.float32)


def epoch_indices(actions: torch.Tensor, mode: str, generator: torch.Generator) -> torch.Tensor:
    """The order of the train rows for one epoch: a CPU int64 tensor of ``len(actions)`` indices.

    ``mode == "oversample"``: ``n`` draws with replacement, row ``i`` drawn with probability
    ``(1 / k) * (1 / count[y_i])`` (``k`` = number of classes present): a class is picked
    uniformly, then a row uniformly within it, which is the same law and works for any ``n``.
    Any other mode: a random permutation (every row once).
    """
    n = int(actions.numel())
    if mode != "oversample":
        return torch.randperm(n, generator=generator)
    acts = actions.detach().cpu().to(torch.int64)
    counts = torch.bincount(acts, minlength=N_ACTIONS)
    present = torch.nonzero(counts).flatten()
    by_class = torch.argsort(acts, stable=True)  # rows grouped HOLD, BUY, SELL
    offsets = torch.cumsum(counts, 0) - counts
    cls = present[torch.randint(len(present), (n,), generator=generator)]
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    within = torch.minimum((u * counts[cls]).to(torch.int64), counts[cls] - 1)
    return by_class[offsets[cls] + within]


class FocalLoss(nn.Module):
    """The guide's focal loss: ``mean_i (1 - p_i)^gamma * CE_i`` with ``p_i = exp(-CE_i)``.

    ``gamma = 0`` is plain cross-entropy; larger ``gamma`` down-weights rows the model already
    gets right (``p_i`` near 1) so the loss concentrates on hard, often minority, rows.
    ``reduction="none"`` returns the per-row terms.
    """

    def __init__(self, gamma: float = 2.0, reduction: str = "mean") -> None:
        super().__init__()
        if gamma < 0 or reduction not in ("mean", "none"):
            raise ValueError(
                f"FocalLoss(gamma={gamma}, reduction={reduction!r}); "
                "expected gamma >= 0 and reduction 'mean' or 'none'"
            )
        self.gamma = gamma
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits, targets, reduction="none")
        pt = torch.exp(-ce)
        focal = (1.0 - pt) ** self.gamma * ce
        return focal.mean() if self.reduction == "mean" else focal


@dataclass(frozen=True)
class LossTerms:
    """``total = alpha * action + beta * strength`` (0-d tensors)."""

    total: torch.Tensor
    action: torch.Tensor
    strength: torch.Tensor


class BehaviorCloningLoss(nn.Module):
    """``alpha * L_action + beta * L_strength`` (see the module docstring for the maths).

    ``class_weights`` (shape (3,)) makes the action term the weighted mean cross-entropy;
    ``focal_gamma`` makes it the focal loss; at most one of them may be given.
    ``logit_penalty`` adds ``logit_penalty * mean(z^2)`` to the total (not to the action term).
    ``sums(...)`` returns the six sums the loss is made of, ``[sum w CE, sum w,
    sum_{trade rows} (s - t)^2, #trade rows, sum_i mean_k z_ik^2, #rows]``, so a whole split can
    be evaluated in chunks and ``combine``d into the exact split loss.
    """

    class_weights: torch.Tensor | None

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 1.0,
        *,
        class_weights: torch.Tensor | None = None,
        focal_gamma: float | None = None,
        logit_penalty: float = 0.0,
    ) -> None:
        super().__init__()
        if class_weights is not None and focal_gamma is not None:
            raise ValueError("give class_weights or focal_gamma, not both")
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.logit_penalty = float(logit_penalty)
        self.register_buffer(
            "class_weights",
            None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32),
        )
        self.focal = None if focal_gamma is None else FocalLoss(focal_gamma, reduction="none")

    def sums(
        self,
        logits: torch.Tensor,
        strength_pred: torch.Tensor,
        actions: torch.Tensor,
        strengths: torch.Tensor,
    ) -> torch.Tensor:
        """``[action numerator, action denominator, strength numerator, strength count,
        sum of the per-row mean squared logits, row count]``."""
        if self.focal is not None:
            per_row = self.focal(logits, actions)
            weights = torch.ones_like(per_row)
        else:
            per_row = F.cross_entropy(logits, actions, reduction="none")
            weights = (
                torch.ones_like(per_row)
                if self.class_weights is None
                else self.class_weights.to(per_row.dtype)[actions]
            )
        trade = actions != int(Action.HOLD)
        sq_err = torch.where(trade, (strength_pred.reshape(-1) - strengths) ** 2, 0.0)
        return torch.stack(
            [
                (weights * per_row).sum(),
                weights.sum(),
                sq_err.sum(),
                trade.sum().to(per_row.dtype),
                (logits * logits).mean(dim=-1).sum().to(per_row.dtype),
                torch.tensor(float(actions.numel()), dtype=per_row.dtype, device=per_row.device),
            ]
        )

    def batch_terms(
        self,
        logits: torch.Tensor,
        strength_pred: torch.Tensor,
        actions: torch.Tensor,
        strengths: torch.Tensor,
        strength_weights: torch.Tensor,
    ) -> LossTerms:
        """The loss of one training batch with fewer tensor operations than ``forward``.

        ``strength_weights[i]`` must be ``[y_i != HOLD] / max(1, #{j: y_j != HOLD})`` over the
        batch (``strength_weights(actions)``; the trainer computes them for a whole epoch at
        once); then the terms equal ``forward``'s up to float rounding. The action term is one
        ``F.cross_entropy`` call (with ``weight=`` for class weights), the focal term
        ``FocalLoss``. The batch must hold at least one row of positive class weight (a train
        batch always does: a class with weight 0 has no train row).
        """
        if self.focal is not None:
            action = self.focal(logits, actions).mean()
        else:
            action = F.cross_entropy(logits, actions, weight=self.class_weights)
        err = strength_pred.reshape(-1) - strengths
        strength = torch.dot(err * strength_weights, err)
        a = action if self.alpha == 1.0 else action * self.alpha
        b = strength if self.beta == 1.0 else strength * self.beta
        total = a + b
        if self.logit_penalty:
            total = total + (logits * logits).mean() * self.logit_penalty
        return LossTerms(total, action, strength)

    def combine(self, sums: torch.Tensor) -> LossTerms:
        """Turn ``sums`` (possibly added over chunks) into the loss terms; 0/0 terms are 0."""
        action = sums[0] / sums[1].clamp_min(1e-12)
        strength = sums[2] / sums[3].clamp_min(1.0)
        total = self.alpha * action + self.beta * strength
        if self.logit_penalty:
            total = total + self.logit_penalty * sums[4] / sums[5].clamp_min(1.0)
        return LossTerms(total, action, strength)

    def forward(
        self,
        logits: torch.Tensor,
        strength_pred: torch.Tensor,
        actions: torch.Tensor,
        strengths: torch.Tensor,
    ) -> LossTerms:
        return self.combine(self.sums(logits, strength_pred, actions, strengths))


def strength_weights(actions: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Per-row weights of the strength term for rows taken in ``batch_size`` slices in order:
    ``[y_i != HOLD] / max(1, #trade rows in row i's batch)`` (float32, on ``actions``' device)."""
    n = int(actions.numel())
    trade = (actions != int(Action.HOLD)).to(torch.float32)
    n_batches = max(1, math.ceil(n / batch_size))
    padded = F.pad(trade, (0, n_batches * batch_size - n))
    per_batch = padded.view(n_batches, batch_size).sum(dim=1).clamp_min_(1.0)
    return trade / per_batch.repeat_interleave(batch_size)[:n]


# -- optimizer -----------------------------------------------------------------------------


class FlatAdam:
    """torch's Adam (``decoupled=False``; L2 ``weight_decay`` added to the gradient) or AdamW
    (``decoupled=True``; the weights shrink by ``lr * weight_decay``) for one flat parameter.

    The maths are torch's single-tensor implementation (``amsgrad=False``, no ``maximize``)::

        t += 1;  g = grad (+ weight_decay * p for Adam);  p *= 1 - lr * weight_decay (AdamW)
        m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g^2
        p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    on one buffer, so a step is seven tensor operations (torch's ``Optimizer.step`` machinery,
    even fused, cost several times the update itself for this small net). It is not a
    ``torch.optim.Optimizer``: constructing one imports ``torch._dynamo`` (over 2 s, a third of
    a 3-epoch run on 180k rows). ``param_groups[0]["lr"]`` is read on every step
    (``PlateauLR`` lowers it).
    """

    def __init__(
        self,
        param: torch.Tensor,
        *,
        lr: float,
        weight_decay: float = 0.0,
        decoupled: bool = False,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        if lr <= 0 or weight_decay < 0 or eps <= 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(
                f"FlatAdam(lr={lr}, weight_decay={weight_decay}, betas={betas}, eps={eps}): "
                "expected lr > 0, weight_decay >= 0, betas in [0, 1), eps > 0"
            )
        self.param_groups: list[dict[str, Any]] = [
            {"params": [param], "lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        ]
        self.decoupled = decoupled
        self.param = param
        self.steps = 0
        self.exp_avg = torch.zeros_like(param, memory_format=torch.preserve_format)
        self.exp_avg_sq = torch.zeros_like(param, memory_format=torch.preserve_format)

    @torch.no_grad()
    def step(self) -> None:
        """One update from ``param.grad`` (no-op when it is None)."""
        p, group = self.param, self.param_groups[0]
        grad = p.grad
        if grad is None:
            return
        self.steps += 1
        t = self.steps
        lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        if wd != 0.0:
            if self.decoupled:
                p.mul_(1.0 - lr * wd)
            else:
                grad = grad.add(p, alpha=wd)
        m, v = self.exp_avg, self.exp_avg_sq
        m.lerp_(grad, 1.0 - beta1)
        v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        denom = v.sqrt().div_(math.sqrt(1.0 - beta2**t)).add_(eps)
        p.addcdiv_(m, denom, value=-lr / (1.0 - beta1**t))


class PlateauLR:
    """``torch.optim.lr_scheduler.ReduceLROnPlateau`` with its defaults (mode "min", relative
    threshold 1e-4, no cooldown, min_lr 0, eps 1e-8) for ``FlatAdam``: after more than
    ``patience`` epochs in a row without ``loss < best * (1 - 1e-4)``, ``lr *= factor``."""

    THRESHOLD: Final = 1e-4
    EPS: Final = 1e-8

    def __init__(self, optimizer: FlatAdam, *, factor: float, patience: int) -> None:
        self.optimizer = optimizer
        self.factor = factor
        self.patience = patience
        self.best = math.inf
        self.bad_epochs = 0

    def step(self, loss: float) -> None:
        if loss < self.best * (1.0 - self.THRESHOLD):
            self.best = loss
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
        if self.bad_epochs > self.patience:
            group = self.optimizer.param_groups[0]
            new = group["lr"] * self.factor
            if group["lr"] - new > self.EPS:
                group["lr"] = new
            self.bad_epochs = 0


def clip_flat_grad_(grad: torch.Tensor, max_norm: float) -> torch.Tensor:
    """The L2 norm of ``grad`` (0-d, before clipping); when ``max_norm > 0``, scale ``grad`` in
    place by ``min(1, max_norm / (norm + 1e-6))``: ``nn.utils.clip_grad_norm_``'s rule for the
    gradient of all parameters at once (here one flat buffer)."""
    norm = torch.linalg.vector_norm(grad)
    if max_norm > 0:
        grad.mul_(torch.clamp(max_norm / (norm + 1e-6), max=1.0))
    return norm  # type: ignore[no-any-return]


def _flatten_parameters(model: nn.Module) -> tuple[nn.Parameter, list[nn.Parameter]]:
    """Move the model's parameters into one flat buffer (each parameter becomes a view of it) and
    give them gradient views of one flat gradient buffer; returns the flat parameter (whose
    ``.grad`` is that buffer) and the model's parameters. Backward then accumulates into the
    flat gradient, so zeroing it, its norm and clipping are one operation each."""
    params = [p for p in model.parameters() if p.requires_grad]
    flat = nn.Parameter(torch.cat([p.detach().reshape(-1) for p in params]))
    flat.grad = torch.zeros_like(flat)
    offset = 0
    with torch.no_grad():
        for p in params:
            n = p.numel()
            p.data = flat.detach()[offset : offset + n].view_as(p)
            p.grad = flat.grad[offset : offset + n].view_as(p)
            offset += n
    return flat, params


def _unflatten_parameters(params: Sequence[nn.Parameter]) -> None:
    """Give each parameter its own storage again and drop the gradient views."""
    with torch.no_grad():
        for p in params:
            p.data = p.detach().clone()
            p.grad = None


@contextlib.contextmanager
def _intra_op_threads(device: torch.device, cfg: TrainingConfig) -> Iterator[None]:
    """One intra-op thread for a small net on the CPU (see the module docstring); restored."""
    if device.type != "cpu" or cfg.batch_size * cfg.hidden_dim > SINGLE_THREAD_MAX_WORK:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# -- splits --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataSplit:
    """Row indices (ascending) of the train and validation splits.

    ``val_start``: for the time split, the first validation date (every row dated on or after it
    is validation, every earlier row is train); ``None`` for the random split.
    """

    train: npt.NDArray[np.int64]
    val: npt.NDArray[np.int64]
    kind: str
    val_start: np.datetime64 | None = None


def split_rows(
    dates: npt.NDArray[np.datetime64], val_fraction: float, kind: str, seed: int
) -> DataSplit:
    """Split rows into train and validation.

    ``"time"``: validation is the latest period: the rows dated on or after the date below which
    ``1 - val_fraction`` of the rows lie. Whole days go to one side, so rows of several symbols on
    the same day never straddle the split. ``"random"``: ``round(n * val_fraction)`` rows
    (at least one) drawn with ``numpy.random.default_rng(seed)``.
    """
    n = int(dates.shape[0])
    if n < 2:
        raise TrainingError(f"the dataset has {n} row(s); a train/validation split needs >= 2")
    n_val = min(max(1, round(n * val_fraction)), n - 1)
    if kind == "random":
        perm = np.random.default_rng(seed).permutation(n)
        return DataSplit(np.sort(perm[n_val:]), np.sort(perm[:n_val]), kind)
    if kind != "time":
        raise TrainingError(f"split: got {kind!r}; expected 'time' or 'random'")
    day = np.asarray(dates, dtype="datetime64[D]")
    cutoff = np.sort(day)[n - n_val]
    if not (day < cutoff).any():  # the cutoff is the first date: move it to the next one
        unique = np.unique(day)
        if unique.size < 2:
            raise TrainingError(
                f"the time split needs at least two distinct dates; every row is dated "
                f"{unique[0]} (use split 'random')"
            )
        cutoff = unique[1]
    is_val = day >= cutoff
    return DataSplit(
        np.flatnonzero(~is_val).astype(np.int64),
        np.flatnonzero(is_val).astype(np.int64),
        kind,
        cutoff,
    )


# -- metrics -------------------------------------------------------------------------------


def confusion_matrix(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """3x3 counts: ``cm[t, p]`` = rows whose true action is ``t`` and predicted action ``p``."""
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    flat = np.bincount(t * N_ACTIONS + p, minlength=N_ACTIONS * N_ACTIONS)
    return flat.reshape(N_ACTIONS, N_ACTIONS).astype(np.int64)


@dataclass(frozen=True)
class ClassMetrics:
    """precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = 2PR / (P + R); 0 when 0/0."""

    precision: float
    recall: float
    f1: float
    support: int


def per_class_metrics(cm: npt.ArrayLike) -> dict[str, ClassMetrics]:
    """Precision, recall, F1 and support per action name from a confusion matrix."""
    m = np.asarray(cm, dtype=np.int64)
    out = {}
    for c, name in enumerate(ACTION_NAMES):
        tp = int(m[c, c])
        predicted = int(m[:, c].sum())
        support = int(m[c, :].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[name] = ClassMetrics(precision, recall, f1, support)
    return out


@dataclass(frozen=True)
class EpochStats:
    """One epoch. Losses and accuracies are measured after the epoch's updates, in eval mode
    (no dropout), with the training loss: train and val compare like with like. ``val_*`` are on
    the whole validation split; ``train_loss`` / ``train_acc`` on the whole train split when it
    has at most ``TRAIN_EVAL_ROWS`` (20,000) rows, else on a fixed random sample of that many
    train rows (the same rows every epoch, drawn from ``cfg.seed``; the standard error of an
    accuracy near 0.95 is then 0.0015). Evaluating all 180k train rows of the benchmark took
    0.12 s per epoch, a tenth of the epoch's training, for a figure that only the overfitting
    checks and the log read.
    ``lr`` is the rate the epoch trained with; ``grad_norm`` / ``grad_norm_max`` are the mean and
    maximum over the epoch's batches of the gradient's total L2 norm before clipping.
    """

    epoch: int
    train_loss: float
    val_loss: float
    train_acc: float
    val_acc: float
    lr: float
    grad_norm: float
    grad_norm_max: float
    val_action_loss: float
    val_strength_loss: float


@dataclass
class TrainingMetrics:
    """The result of ``BehaviorCloningTrainer.train()``: everything is the best epoch's.

    ``confusion_matrix[t][p]`` and ``per_class`` are on the validation split; ``warnings`` holds
    other notes (e.g. a class absent from the train split). ``majority_baseline_acc``: the
    accuracy on the validation rows of always predicting ``majority_action``, the train split's
    most common action; ``degenerate``: None, or the mark of ``otonom_trainer.degenerate``
    (``{"reason": ..., "rules": [...], ...}``) when the model is degenerate.
    """

    best_val_loss: float
    best_epoch: int
    val_action_acc: float
    train_action_acc: float
    per_class: dict[str, ClassMetrics]
    confusion_matrix: list[list[int]]
    history: list[EpochStats]
    overfitting_warnings: list[str]
    warnings: list[str]
    elapsed_s: float
    n_params: int
    device: str
    epochs_run: int
    stopped_early: bool
    train_size: int
    val_size: int
    majority_action: str = "HOLD"
    majority_baseline_acc: float = math.nan
    degenerate: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values only (what the checkpoint and metadata.json store)."""
        return asdict(self)


def overfitting_warnings(history: Sequence[EpochStats], best_epoch: int) -> list[str]:
    """The guide's signs of overfitting, checked at the best epoch and after it.

    * val loss - train loss > 0.2 at the best epoch;
    * train accuracy - val accuracy > 10 points at the best epoch;
    * val loss rose for >= 3 consecutive epochs after its best ("increases after initial
      decrease"; the best epoch's weights are kept anyway).
    """
    best = history[best_epoch - 1]
    out = []
    if best.val_loss - best.train_loss > LOSS_GAP:
        out.append(
            f"train/val loss gap {best.val_loss - best.train_loss:.3f} > {LOSS_GAP} at the best "
            f"epoch {best_epoch} (train_loss={best.train_loss:.4f}, val_loss={best.val_loss:.4f}):"
            " the model may be overfitting; try more dropout or weight_decay, or a smaller model"
        )
    if best.train_acc - best.val_acc > ACC_GAP:
        out.append(
            f"train/val accuracy gap {100 * (best.train_acc - best.val_acc):.1f} points > "
            f"{100 * ACC_GAP:.0f} at the best epoch {best_epoch} (train_acc={best.train_acc:.3f}"
            f", val_acc={best.val_acc:.3f}): the model may be overfitting"
        )
    streak = longest = 0
    for prev, cur in itertools.pairwise(history[best_epoch - 1 :]):
        streak = streak + 1 if cur.val_loss > prev.val_loss else 0
        longest = max(longest, streak)
    if longest >= RISING_EPOCHS:
        out.append(
            f"val_loss rose for {longest} consecutive epochs after its best ({best.val_loss:.4f} "
            f"at epoch {best_epoch}; last {history[-1].val_loss:.4f}): later epochs overfit; the "
            f"saved model is epoch {best_epoch}'s"
        )
    return out


# -- the trainer ---------------------------------------------------------------------------


@dataclass
class _Eval:
    loss: float
    action_loss: float
    strength_loss: float
    acc: float
    preds: torch.Tensor = field(repr=False)


@dataclass
class _Tensors:
    states: torch.Tensor
    actions: torch.Tensor
    strengths: torch.Tensor


class BehaviorCloningTrainer:
    """Train a ``PolicyNet`` on ``cfg.dataset_path`` and write the run to ``cfg.output_dir``.

    ``train()`` prints the guide's training log, exports the best epoch to ONNX (as
    ``otonom-train train`` does) and returns ``TrainingMetrics``. Afterwards ``model`` is the
    best epoch's network (eval mode, on the training device), ``onnx_path`` the export,
    ``run_id`` the training run's id and ``val_states()`` the held-out states (for an export
    parity check). ``on_epoch_end`` (optional) is called after every epoch with its
    ``EpochStats`` and the model in its current state.

    Files written to ``output_dir``: ``policy_best.pt`` (see ``load_checkpoint``),
    ``metadata.json``, ``history.csv``, ``training_curves.png``, ``confusion_matrix.png`` and
    ``policy_best.onnx`` + ``.sha256`` (plus ``tensorboard/`` when asked for and available).
    The checkpoint, ``metadata.json`` and the ONNX model carry the same run id (a fresh
    ``uuid4().hex`` per ``train()``), so ``load_rl_policy`` refuses an older export left beside
    a newer run.
    """

    def __init__(
        self,
        cfg: TrainingConfig,
        *,
        on_epoch_end: Callable[[EpochStats, PolicyNet], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self._on_epoch_end = on_epoch_end
        self._dataset: OfflineDataset | None = None
        self._dataset_sha256: str | None = None
        self._split: DataSplit | None = None
        self._model: PolicyNet | None = None
        self._metrics: TrainingMetrics | None = None
        self._onnx_path: Path | None = None
        self._export = True
        self.loss_fn: BehaviorCloningLoss | None = None
        self.run_id: str | None = None
        """The id of the last ``train()`` (None before)."""

    # -- data ------------------------------------------------------------------------------

    @property
    def dataset(self) -> OfflineDataset:
        """The dataset (read on first use)."""
        if self._dataset is None:
            path = Path(self.cfg.dataset_path)
            self._dataset = load_dataset(path)
            self._dataset_sha256 = sha256_file(path)
        return self._dataset

    @property
    def split(self) -> DataSplit:
        """The train/validation split (deterministic for a config)."""
        if self._split is None:
            self._split = split_rows(
                self.dataset.dates, self.cfg.val_fraction, self.cfg.split, self.cfg.seed
            )
        return self._split

    def val_states(self) -> npt.NDArray[np.float32]:
        """The validation states, shape (n_val, 34) float32, in dataset order."""
        return np.array(self.dataset.states[self.split.val], dtype=np.float32)

    @property
    def model(self) -> PolicyNet:
        """The best epoch's network after ``train()``."""
        if self._model is None:
            raise TrainingError("no model yet: call train() first")
        return self._model

    @property
    def metrics(self) -> TrainingMetrics:
        """What the last ``train()`` returned."""
        if self._metrics is None:
            raise TrainingError("no metrics yet: call train() first")
        return self._metrics

    @property
    def onnx_path(self) -> Path | None:
        """The ONNX model ``train()`` exported (None before, or with ``export=False``)."""
        return self._onnx_path

    def export_onnx(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Export the trained model (default ``output_dir / "policy_best.onnx"``) with its
        metrics, config, training run id and the dataset's sha256, parity-checked on the
        validation states (``train()`` calls this unless ``export=False``)."""
        target = Path(path) if path is not None else Path(self.cfg.output_dir) / ONNX_NAME
        model, metrics = self.model, self.metrics  # TrainingError before train()
        assert self._dataset_sha256 is not None  # set when train() read the dataset
        return export_onnx(
            model,
            target,
            metrics=metrics.to_dict(),
            training_config=self.cfg.to_dict(),
            dataset_sha256=self._dataset_sha256,
            parity_states=self.val_states(),
            training_run_id=self.run_id,
        )

    @property
    def checkpoint_path(self) -> Path:
        """``output_dir / "policy_best.pt"``."""
        return Path(self.cfg.output_dir) / CHECKPOINT_NAME

    # -- training --------------------------------------------------------------------------

    def train(self, *, export: bool = True) -> TrainingMetrics:
        """Train, keep the best epoch by validation loss, write the outputs, export the model to
        ``output_dir/policy_best.onnx`` (unless ``export=False``: then an older export there is
        refused by ``load_rl_policy`` as stale), return metrics."""
        cfg = self.cfg
        start = time.perf_counter()
        self.run_id = uuid.uuid4().hex
        self._export = export
        self._onnx_path = None
        device = resolve_device(cfg.device)
        print(RULE)
        print("RL Behavior Cloning Training")
        print(RULE)
        print(f"Dataset: {cfg.dataset_path}")
        ds = self.dataset
        split = self.split
        counts = ds.action_counts()
        print(f"Loaded dataset: {len(ds)} samples, {ds.states.shape[1]} features")
        print("Action distribution: " + ", ".join(f"{a.name}={counts[a]}" for a in Action))
        print(f"Train size: {split.train.size}, Val size: {split.val.size}")
        fork = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=fork), _intra_op_threads(device, cfg):
            torch.manual_seed(cfg.seed)
            metrics = self._fit(device, start)
        if export:
            self._onnx_path = self.export_onnx()
            print(f"ONNX model: {self._onnx_path} (matches torch at batch 1, 7 and 256)")
        return metrics

    def _fit(self, device: torch.device, start: float) -> TrainingMetrics:
        cfg = self.cfg
        ds, split = self.dataset, self.split
        train = _to_device(ds, split.train, device)
        val = _to_device(ds, split.val, device)
        train_eval = _to_device(ds, train_eval_rows(split.train, cfg.seed), device)
        notes: list[str] = []

        model = PolicyNet(STATE_DIM, cfg.hidden_dim, cfg.num_layers, cfg.dropout).to(device)
        n_params = sum(p.numel() for p in model.parameters())
        print(f"Model parameters: {n_params:,}")
        print(f"Device: {device}")
        train_counts = torch.bincount(train.actions.cpu(), minlength=N_ACTIONS).tolist()
        self.loss_fn = loss_fn = self._make_loss(train_counts, notes).to(device)
        print(RULE)
        print()
        flat, params = _flatten_parameters(model)
        optimizer = FlatAdam(
            flat, lr=cfg.lr, weight_decay=cfg.weight_decay, decoupled=cfg.optimizer == "adamw"
        )
        scheduler = (
            PlateauLR(optimizer, factor=cfg.lr_plateau_factor, patience=cfg.lr_plateau_patience)
            if cfg.lr_plateau_patience > 0
            else None
        )
        generator = torch.Generator().manual_seed(cfg.seed)
        train_actions_cpu = train.actions.cpu()
        out_dir = Path(cfg.output_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        writer = _tensorboard_writer(out_dir) if cfg.tensorboard else None

        history: list[EpochStats] = []
        best_loss, best_epoch = math.inf, 0
        best_state: dict[str, torch.Tensor] = {}
        stopped_early = False
        try:
            for epoch in range(1, cfg.max_epochs + 1):
                lr = float(optimizer.param_groups[0]["lr"])
                order = epoch_indices(train_actions_cpu, cfg.class_balance, generator)
                norms = self._run_epoch(
                    model, flat, optimizer, loss_fn, train, order.to(device), epoch
                )
                ev_train = _evaluate(model, loss_fn, train_eval)
                ev_val = _evaluate(model, loss_fn, val)
                for which, ev in (("train", ev_train), ("validation", ev_val)):
                    if not math.isfinite(ev.loss):
                        raise TrainingError(
                            f"epoch {epoch}: the {which} loss is {ev.loss} after the epoch's "
                            f"updates (action term {ev.action_loss}, strength term "
                            f"{ev.strength_loss}); the weights diverged: lower lr (now {lr:g})"
                        )
                stats = EpochStats(
                    epoch=epoch,
                    train_loss=ev_train.loss,
                    val_loss=ev_val.loss,
                    train_acc=ev_train.acc,
                    val_acc=ev_val.acc,
                    lr=lr,
                    grad_norm=float(norms.mean()),
                    grad_norm_max=float(norms.max()),
                    val_action_loss=ev_val.action_loss,
                    val_strength_loss=ev_val.strength_loss,
                )
                history.append(stats)
                print(
                    f"[Epoch {epoch}/{cfg.max_epochs}] train_loss={stats.train_loss:.4f} "
                    f"val_loss={stats.val_loss:.4f} train_acc={stats.train_acc:.3f} "
                    f"val_acc={stats.val_acc:.3f} grad_norm={stats.grad_norm:.3f} lr={lr:.3g}",
                    flush=True,
                )
                if writer is not None:
                    _log_tensorboard(writer, stats)
                if scheduler is not None:
                    scheduler.step(stats.val_loss)
                if stats.val_loss < best_loss:
                    best_loss, best_epoch = stats.val_loss, epoch
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    self._save_checkpoint(
                        model,
                        {
                            "best_epoch": epoch,
                            "best_val_loss": best_loss,
                            "val_action_acc": ev_val.acc,
                        },
                    )
                    print(f"✓ Saved best model (epoch {epoch}, val_loss={best_loss:.4f})")
                if self._on_epoch_end is not None:
                    self._on_epoch_end(stats, model)
                if cfg.patience and epoch - best_epoch >= cfg.patience:
                    stopped_early = True
                    print(
                        f"Early stopping at epoch {epoch}: val_loss has not improved for "
                        f"{cfg.patience} epochs (best {best_loss:.4f} at epoch {best_epoch})"
                    )
                    break
        finally:
            if writer is not None:
                writer.close()
            _unflatten_parameters(params)

        model.load_state_dict(best_state)
        model.eval()
        self._model = model
        final_val = _evaluate(model, loss_fn, val)
        cm = confusion_matrix(val.actions.cpu().numpy(), final_val.preds.numpy())
        warnings = overfitting_warnings(history, best_epoch)
        majority, baseline = majority_baseline(train_actions_cpu.numpy(), val.actions.cpu().numpy())
        mark = degenerate_mark(cm, majority)
        metrics = TrainingMetrics(
            best_val_loss=best_loss,
            best_epoch=best_epoch,
            val_action_acc=final_val.acc,
            train_action_acc=history[best_epoch - 1].train_acc,
            per_class=per_class_metrics(cm),
            confusion_matrix=cm.tolist(),
            history=history,
            overfitting_warnings=warnings,
            warnings=notes,
            elapsed_s=time.perf_counter() - start,
            n_params=n_params,
            device=str(device),
            epochs_run=len(history),
            stopped_early=stopped_early,
            train_size=int(split.train.size),
            val_size=int(split.val.size),
            majority_action=ACTION_NAMES[majority],
            majority_baseline_acc=baseline,
            degenerate=mark,
        )
        self._metrics = metrics
        for line in warnings:
            print(f"warning: {line}")
        self._write_outputs(model, metrics, device)
        print()
        print(RULE)
        print("Training Complete!")
        print(RULE)
        print(f"Best validation loss: {metrics.best_val_loss:.4f}")
        print(f"Best epoch: {metrics.best_epoch}")
        print(f"Val action accuracy: {metrics.val_action_acc:.3f}")
        print(
            f"Majority baseline: {baseline:.3f} (always {ACTION_NAMES[majority]}, the train "
            "split's most common action)"
        )
        print(f"Model saved to: {self.checkpoint_path}")
        print(RULE)
        if mark is not None:
            print(f"warning: DEGENERATE model ({' and '.join(mark['rules'])}): {mark['reason']}")
        return metrics

    def _make_loss(self, train_counts: list[int], notes: list[str]) -> BehaviorCloningLoss:
        """The loss for ``cfg.class_balance``; prints a ``Class balance:`` header line unless
        the mode is "none" (the guide's header), and a warning for a class with no train row."""
        cfg = self.cfg
        absent = [ACTION_NAMES[c] for c, n in enumerate(train_counts) if n == 0]
        if absent:
            note = (
                f"the train split has no {'/'.join(absent)} rows; the model cannot learn "
                f"{'that action' if len(absent) == 1 else 'those actions'}"
                + (" (class weight 0)" if cfg.class_balance == "weighted" else "")
            )
            notes.append(note)
            print(f"warning: {note}")
        if cfg.class_balance == "weighted":
            weights = class_weights(train_counts)
            shown = zip(ACTION_NAMES, weights.tolist(), strict=True)
            print(
                "Class balance: weighted loss (" + ", ".join(f"{n}={w:.3f}" for n, w in shown) + ")"
            )
            return BehaviorCloningLoss(
                cfg.alpha, cfg.beta, class_weights=weights, logit_penalty=cfg.logit_penalty
            )
        if cfg.class_balance == "oversample":
            print("Class balance: oversample (rows drawn with probability ∝ 1/count(class))")
        if cfg.class_balance == "focal":
            print(f"Class balance: focal loss (gamma={cfg.focal_gamma:g})")
            return BehaviorCloningLoss(
                cfg.alpha, cfg.beta, focal_gamma=cfg.focal_gamma, logit_penalty=cfg.logit_penalty
            )
        return BehaviorCloningLoss(cfg.alpha, cfg.beta, logit_penalty=cfg.logit_penalty)

    def _run_epoch(
        self,
        model: PolicyNet,
        flat: nn.Parameter,
        optimizer: FlatAdam,
        loss_fn: BehaviorCloningLoss,
        data: _Tensors,
        order: torch.Tensor,
        epoch: int,
    ) -> npt.NDArray[np.float64]:
        """One pass of gradient steps; returns the per-batch gradient norms (before clipping).

        The train split is gathered once in ``order`` (on its device); the batches are
        contiguous slices. ``flat`` holds the model's parameters (``_flatten_parameters``).
        Loss terms and norms stay on the device until the end of the epoch, then a non-finite
        one raises ``TrainingError`` naming the first bad batch and term.
        """
        cfg = self.cfg
        model.train()
        n = int(order.numel())
        bs = cfg.batch_size
        n_batches = math.ceil(n / bs)
        states, actions = data.states[order], data.actions[order]
        strengths = data.strengths[order]
        s_weights = strength_weights(actions, bs)
        grad = flat.grad
        assert grad is not None
        clip = cfg.grad_clip
        action_terms: list[torch.Tensor] = []
        strength_terms: list[torch.Tensor] = []
        norm_list: list[torch.Tensor] = []
        bar = _progress(n_batches, epoch, cfg) if cfg.progress and n >= PROGRESS_MIN_ROWS else None
        try:
            for b in range(n_batches):
                sl = slice(b * bs, (b + 1) * bs)
                logits, strength = model(states[sl])
                loss = loss_fn.batch_terms(
                    logits, strength, actions[sl], strengths[sl], s_weights[sl]
                )
                grad.zero_()
                torch.autograd.backward(loss.total)
                norm = clip_flat_grad_(grad, clip)
                optimizer.step()
                action_terms.append(loss.action.detach())
                strength_terms.append(loss.strength.detach())
                norm_list.append(norm)
                if bar is not None:
                    bar.update(1)
                    if b % 50 == 0:
                        bar.set_postfix(loss=f"{float(loss.total.detach()):.4f}")
        finally:
            if bar is not None:
                bar.close()
        terms = torch.stack([torch.stack(action_terms), torch.stack(strength_terms)], dim=1)
        norms = torch.stack(norm_list)
        host_terms = terms.cpu().numpy()
        host_norms = norms.cpu().numpy().astype(np.float64)
        for b in range(n_batches):
            for t, name, weight in (
                (0, "action (cross-entropy)", "alpha"),
                (1, "strength (MSE)", "beta"),
            ):
                if not math.isfinite(host_terms[b, t]):
                    raise TrainingError(
                        f"epoch {epoch}, batch {b + 1}/{n_batches}: the {name} loss is "
                        f"{host_terms[b, t]} (weighted by {weight}); training diverged. Lower lr "
                        f"(now {optimizer.param_groups[0]['lr']:g}), keep grad_clip on, or check "
                        "the dataset"
                    )
            if not math.isfinite(host_norms[b]):
                raise TrainingError(
                    f"epoch {epoch}, batch {b + 1}/{n_batches}: the gradient norm is "
                    f"{host_norms[b]} although the loss is finite; lower lr or set grad_clip"
                )
        return host_norms

    # -- outputs ---------------------------------------------------------------------------

    def _checkpoint(self, model: PolicyNet, metrics: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_FORMAT_VERSION,
            "schema_version": SCHEMA_VERSION,
            "schema_fingerprint": schema_fingerprint(),
            "run_id": self.run_id,
            "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            "hparams": model.hparams(),
            "config": self.cfg.to_dict(),
            "metrics": dict(metrics),
        }

    def _save_checkpoint(self, model: PolicyNet, metrics: Mapping[str, Any]) -> None:
        checkpoint = self._checkpoint(model, metrics)
        with _atomic(self.checkpoint_path) as tmp:
            torch.save(checkpoint, tmp)

    def _write_outputs(
        self, model: PolicyNet, metrics: TrainingMetrics, device: torch.device
    ) -> None:
        out = Path(self.cfg.output_dir)
        metrics_dict = metrics.to_dict()
        self._save_checkpoint(model, metrics_dict)
        ds, split = self.dataset, self.split
        meta = {
            "format": "otonom-rl/training-run",
            "run_id": self.run_id,
            "created_at": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
            "config": self.cfg.to_dict(),
            "metrics": metrics_dict,
            "degenerate": metrics.degenerate,
            "model": {
                "class": "PolicyNet",
                "hparams": model.hparams(),
                "n_params": metrics.n_params,
            },
            "dataset": {
                "path": self.cfg.dataset_path,
                "sha256": self._dataset_sha256,
                "rows": len(ds),
                "action_counts": {a.name: n for a, n in ds.action_counts().items()},
                "metadata": dict(ds.metadata),
            },
            "split": {
                "kind": split.kind,
                "train_size": int(split.train.size),
                "val_size": int(split.val.size),
                "val_start_date": None if split.val_start is None else str(split.val_start),
                "train_dates": _date_range(ds.dates[split.train]),
                "val_dates": _date_range(ds.dates[split.val]),
            },
            "schema": {"version": SCHEMA_VERSION, "fingerprint": schema_fingerprint()},
            "versions": _versions(),
            "device": str(device),
            "files": [
                CHECKPOINT_NAME,
                "history.csv",
                "training_curves.png",
                "confusion_matrix.png",
                *((ONNX_NAME, ONNX_NAME + ".sha256") if self._export else ()),
            ],
        }
        with _atomic(out / "metadata.json") as tmp:
            tmp.write_text(
                json.dumps(meta, indent=2, allow_nan=False, default=str) + "\n", encoding="utf-8"
            )
        names = [f.name for f in fields(EpochStats)]
        with _atomic(out / "history.csv") as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(names)
            for row in metrics.history:
                w.writerow([getattr(row, k) for k in names])
        _plot_curves(metrics, out / "training_curves.png")
        _plot_confusion(metrics.confusion_matrix, out / "confusion_matrix.png")


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    map_location: str | torch.device = "cpu",
    check_schema: bool = True,
) -> tuple[PolicyNet, dict[str, Any]]:
    """Read ``policy_best.pt`` safely (``weights_only=True``); return the model (eval mode) and
    the whole checkpoint dict (``state_dict``, ``hparams``, ``config``, ``metrics``, schema keys).

    Raises ``FileNotFoundError``, ``CheckpointError`` for a foreign or broken file and
    ``SchemaMismatchError`` when it was trained under another state schema (``check_schema``).
    """
    src = Path(path)
    if not src.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {src}; `otonom-train train --dataset FILE.npz --output FOLDER` "
            "writes FOLDER/policy_best.pt"
        )
    try:
        ckpt = torch.load(src, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for foreign or truncated files
        raise CheckpointError(f"{src} cannot be read as a policy checkpoint: {exc}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{src} is not an otonom-rl policy checkpoint (format "
            f"{ckpt.get('format') if isinstance(ckpt, dict) else type(ckpt).__name__!r}; "
            f"expected {CHECKPOINT_FORMAT!r})"
        )
    if check_schema and ckpt.get("schema_fingerprint") != schema_fingerprint():
        raise SchemaMismatchError(
            f"{src} was trained under state schema {ckpt.get('schema_version')} (fingerprint "
            f"{ckpt.get('schema_fingerprint')}); the installed schema is {SCHEMA_VERSION} "
            f"(fingerprint {schema_fingerprint()}): retrain on a dataset of the installed schema"
        )
    try:
        model = PolicyNet(**ckpt["hparams"])
        model.load_state_dict(ckpt["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{src}: the network cannot be rebuilt: {exc}") from None
    model.to(map_location)
    model.eval()
    return model, ckpt


# -- helpers -------------------------------------------------------------------------------


def _to_device(ds: OfflineDataset, rows: npt.NDArray[np.int64], device: torch.device) -> _Tensors:
    return _Tensors(
        torch.from_numpy(np.ascontiguousarray(ds.states[rows], dtype=np.float32)).to(device),
        torch.from_numpy(np.ascontiguousarray(ds.actions[rows], dtype=np.int64)).to(device),
        torch.from_numpy(np.ascontiguousarray(ds.strengths[rows], dtype=np.float32)).to(device),
    )


@torch.no_grad()
def _evaluate(model: PolicyNet, loss_fn: BehaviorCloningLoss, data: _Tensors) -> _Eval:
    """The exact loss and accuracy of a whole split (eval mode, in chunks)."""
    model.eval()
    sums = torch.zeros(6, device=data.states.device, dtype=torch.float64)
    preds = []
    for s in range(0, int(data.states.shape[0]), EVAL_CHUNK):
        sl = slice(s, s + EVAL_CHUNK)
        logits, strength = model(data.states[sl])
        sums += loss_fn.sums(logits, strength, data.actions[sl], data.strengths[sl]).double()
        preds.append(logits.argmax(dim=-1))
    terms = loss_fn.combine(sums)
    pred = torch.cat(preds)
    acc = (pred == data.actions).double().mean()
    host = torch.stack([terms.total, terms.action, terms.strength, acc]).cpu().tolist()
    return _Eval(host[0], host[1], host[2], host[3], pred.cpu())


def train_eval_rows(train: npt.NDArray[np.int64], seed: int) -> npt.NDArray[np.int64]:
    """The train rows ``train_loss`` / ``train_acc`` are measured on: all of them, or a fixed
    random sample of ``TRAIN_EVAL_ROWS`` (sorted) when the split is larger."""
    if train.size <= TRAIN_EVAL_ROWS:
        return train
    pick = np.random.default_rng(seed).choice(train.size, size=TRAIN_EVAL_ROWS, replace=False)
    return train[np.sort(pick)]


def _date_range(dates: npt.NDArray[np.datetime64]) -> list[str] | None:
    return [str(dates.min()), str(dates.max())] if dates.size else None


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    for dist in ("otonom-schema", "otonom-runtime", "otonom-trainer"):
        try:
            out[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


class _atomic:
    """``with _atomic(final) as tmp:`` write ``tmp``; it is renamed to ``final`` on success."""

    def __init__(self, final: Path) -> None:
        self.final = final

    def __enter__(self) -> Path:
        self.tmp = self.final.with_name(f".{self.final.name}.{os.getpid()}.tmp")
        return self.tmp

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.tmp.replace(self.final)
        else:
            self.tmp.unlink(missing_ok=True)


def _progress(total: int, epoch: int, cfg: TrainingConfig) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=f"Epoch {epoch}/{cfg.max_epochs}", unit="batch", leave=False)


def _tensorboard_writer(out_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        print(
            f"note: TensorBoard logging is off: {exc}. Install it with "
            "pip install 'otonom-trainer[tensorboard]'; training goes on without event logs."
        )
        return None
    log_dir = out_dir / "tensorboard"
    print(f"TensorBoard logs: {log_dir}")
    return SummaryWriter(log_dir=str(log_dir))


def _log_tensorboard(writer: Any, stats: EpochStats) -> None:
    for tag, value in (
        ("loss/train", stats.train_loss),
        ("loss/val", stats.val_loss),
        ("accuracy/train", stats.train_acc),
        ("accuracy/val", stats.val_acc),
        ("lr", stats.lr),
        ("grad_norm", stats.grad_norm),
    ):
        writer.add_scalar(tag, value, stats.epoch)


def _figure(**kwargs: Any) -> Any:
    """A matplotlib Figure drawn by Agg without pyplot (no global backend change)."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _plot_curves(metrics: TrainingMetrics, path: Path) -> None:
    fig = _figure(figsize=(10, 4), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    epochs = [h.epoch for h in metrics.history]
    for ax, key, title in ((ax_loss, "loss", "Loss"), (ax_acc, "acc", "Action accuracy")):
        ax.plot(epochs, [getattr(h, f"train_{key}") for h in metrics.history], "o-", label="train")
        ax.plot(epochs, [getattr(h, f"val_{key}") for h in metrics.history], "o-", label="val")
        ax.axvline(metrics.best_epoch, color="grey", linestyle="--", label="best epoch")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.savefig(path, dpi=100)


def _plot_confusion(cm: Sequence[Sequence[int]], path: Path) -> None:
    m = np.asarray(cm, dtype=np.int64)
    fig = _figure(figsize=(4.5, 4), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(m, cmap="Blues")
    fig.colorbar(image, ax=ax)
    ticks = list(range(N_ACTIONS))
    ax.set_xticks(ticks, ACTION_NAMES)
    ax.set_yticks(ticks, ACTION_NAMES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Validation confusion matrix")
    threshold = m.max() / 2 if m.size else 0
    for t in ticks:
        for p in ticks:
            ax.text(
                p,
                t,
                str(m[t, p]),
                ha="center",
                va="center",
                color="white" if m[t, p] > threshold else "black",
            )
    fig.savefig(path, dpi=100)
