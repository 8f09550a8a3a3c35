"""The behaviour-cloning loss: action cross-entropy (optionally class-weighted or focal), the
strength MSE on BUY/SELL rows, and the optional logit penalty.

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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TextIO

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn

from otonom_schema import Action
from otonom_trainer._errors import TrainingError

__all__ = [
    "BehaviorCloningLoss",
    "FocalLoss",
    "LossTerms",
    "check_finite_batches",
    "class_weights",
    "make_loss",
    "strength_weights",
]

if TYPE_CHECKING:
    from otonom_trainer.config import TrainingConfig

N_ACTIONS: Final = len(Action)
_NAMES: Final = tuple(a.name for a in Action)


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
        action_weights: torch.Tensor | None = None,
    ) -> LossTerms:
        """The loss of one training batch with fewer tensor operations than ``forward``.

        ``strength_weights[i]`` must be ``[y_i != HOLD] / max(1, #{j: y_j != HOLD})`` over the
        batch (``strength_weights(actions)``; the trainer computes them for a whole epoch at
        once); then the terms equal ``forward``'s up to float rounding. The action term is one
        ``F.cross_entropy`` call (with ``weight=`` for class weights), the focal term
        ``FocalLoss``. The batch must hold at least one row of positive class weight (a train
        batch always does: a class with weight 0 has no train row). ``action_weights``: per-row
        weights of the action term (``training.awr``): it becomes ``sum_i a_i l_i / D`` with
        ``l_i`` the row's (class-weighted, or focal) term and ``D`` the unweighted mean's
        denominator (the row count, or the class weights' sum), so weights of mean 1 keep its
        scale; None is the plain term, computed exactly as before.
        """
        if action_weights is not None:
            action = self.weighted_action(logits, actions, action_weights)
        elif self.focal is not None:
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

    def weighted_action(
        self,
        logits: torch.Tensor,
        actions: torch.Tensor,
        weights: torch.Tensor,
        denom: float | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``sum_i weights_i l_i / D`` (``batch_terms``' weighted action term); ``denom``: ``D``
        when given (a shard of a batch: the whole batch's), else these rows'."""
        if self.focal is not None:
            per_row = self.focal(logits, actions)
        else:
            per_row = F.cross_entropy(logits, actions, weight=self.class_weights, reduction="none")
        if denom is None:
            cw = self.class_weights
            use_rows = self.focal is not None or cw is None
            denom = float(actions.numel()) if use_rows else cw[actions].sum()  # type: ignore[index]
        return torch.dot(per_row, weights.to(per_row.dtype)) / denom

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


def check_finite_batches(
    terms: torch.Tensor, norms: torch.Tensor, epoch: int, lr: float
) -> npt.NDArray[np.float64]:
    """The gradient norms on the host; ``TrainingError`` naming the first batch whose loss term
    or gradient norm is not finite (``terms``: (n_batches, 2) action and strength terms;
    ``norms``: (n_batches,))."""
    n_batches = int(norms.shape[0])
    host_terms = terms.cpu().numpy()
    host_norms: npt.NDArray[np.float64] = norms.cpu().numpy().astype(np.float64)
    for b in range(n_batches):
        for t, name, weight in (
            (0, "action (cross-entropy)", "alpha"),
            (1, "strength (MSE)", "beta"),
        ):
            if not math.isfinite(host_terms[b, t]):
                raise TrainingError(
                    f"epoch {epoch}, batch {b + 1}/{n_batches}: the {name} loss is "
                    f"{host_terms[b, t]} (weighted by {weight}); training diverged. Lower lr "
                    f"(now {lr:g}), keep grad_clip on, or check "
                    "the dataset"
                )
        if not math.isfinite(host_norms[b]):
            raise TrainingError(
                f"epoch {epoch}, batch {b + 1}/{n_batches}: the gradient norm is "
                f"{host_norms[b]} although the loss is finite; lower lr or set grad_clip"
            )
    return host_norms


def make_loss(
    cfg: TrainingConfig, train_counts: list[int], notes: list[str], out: TextIO | None = None
) -> BehaviorCloningLoss:
    """The loss ``cfg`` asks for (``cfg.class_balance``, ``alpha``, ``beta``, ``logit_penalty``,
    given the train split's action counts); prints a ``Class balance:`` header line unless
    the mode is "none" (the guide's header), and a warning for a class with no train row."""
    absent = [_NAMES[c] for c, n in enumerate(train_counts) if n == 0]
    if absent:
        note = (
            f"the train split has no {'/'.join(absent)} rows; the model cannot learn "
            f"{'that action' if len(absent) == 1 else 'those actions'}"
            + (" (class weight 0)" if cfg.class_balance == "weighted" else "")
        )
        notes.append(note)
        print(f"warning: {note}", file=out)
    if cfg.class_balance == "weighted":
        weights = class_weights(train_counts)
        shown = zip(_NAMES, weights.tolist(), strict=True)
        print(
            "Class balance: weighted loss (" + ", ".join(f"{n}={w:.3f}" for n, w in shown) + ")",
            file=out,
        )
        return BehaviorCloningLoss(
            cfg.alpha, cfg.beta, class_weights=weights, logit_penalty=cfg.logit_penalty
        )
    if cfg.class_balance == "oversample":
        print("Class balance: oversample (rows drawn with probability ∝ 1/count(class))", file=out)
    if cfg.class_balance == "focal":
        print(f"Class balance: focal loss (gamma={cfg.focal_gamma:g})", file=out)
        return BehaviorCloningLoss(
            cfg.alpha, cfg.beta, focal_gamma=cfg.focal_gamma, logit_penalty=cfg.logit_penalty
        )
    return BehaviorCloningLoss(cfg.alpha, cfg.beta, logit_penalty=cfg.logit_penalty)
