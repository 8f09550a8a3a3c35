"""The extra heads' losses of a multi-task network (``otonom_trainer.networks.MultiTaskPolicyNet``,
``"multitask"``): the expected-return and risk heads learn the dataset's forward labels
(``otonom_schema.ForwardLabels``, ``otonom-train dataset --horizon H``).

Which rows teach them: the train split's rows (not teacher rows) that have a label whose last
bar (``label_end``) is on or before the training period's end, the last train row's date. A
train row whose horizon crosses that date would read bars of the validation period: it is
dropped from these losses (counted as ``train_rows_dropped``), as are rows without a full
horizon in the dataset (``train_rows_unlabelled``). From the kept rows only:

* the return target is standardised: ``z_i = (r_i - mean) / std`` (mean and std of the kept
  rows' forward returns, set on the network as its return scale, so the exported
  ``expected_return`` is a log return);
* the risk classes are the terciles of the forward volatility cut on the kept rows
  (``otonom_schema.tercile_cuts``; the dataset's own cuts, made on all its rows, are not used),
  applied to every row.

Per batch, over its kept rows ``K`` (a term is 0 when the batch has none)::

    L += return_weight * sum_{i in K} (return_z_i - z_i)^2 / |K|
       + risk_weight * sum_{i in K} CE(risk_logits_i, risk_i) / |K|

The per-row weights ``[i in K] / |K of i's batch|`` are computed once per epoch, as the
strength term's are. The best epoch is still chosen by the behaviour-cloning validation loss;
``report`` measures the heads on the validation rows with a label (return RMSE and correlation,
risk accuracy and the majority-class baseline), recorded as ``TrainingMetrics.multitask``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO, cast

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from otonom_schema import OfflineDataset, risk_levels, tercile_cuts
from otonom_trainer._errors import TrainingError
from otonom_trainer.architectures import get_architecture
from otonom_trainer.model import PolicyNetwork
from otonom_trainer.networks import MultiTaskPolicyNet
from otonom_trainer.training.data import EVAL_CHUNK, DataSplit

if TYPE_CHECKING:
    from otonom_trainer.config import TrainingConfig

__all__ = ["EpochTargets", "MultiTaskTargets", "multitask_targets"]


def _batch_weights(mask: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``mask_i / max(1, #masked rows in row i's batch)`` for rows taken in ``batch_size``
    slices in order (float32)."""
    n = int(mask.numel())
    keep = mask.to(torch.float32)
    n_batches = max(1, math.ceil(n / batch_size))
    per_batch = F.pad(keep, (0, n_batches * batch_size - n)).view(n_batches, -1).sum(dim=1)
    return keep / per_batch.clamp_min_(1.0).repeat_interleave(batch_size)[:n]


@dataclass
class EpochTargets:
    """One epoch's targets in the epoch's row order, and the batches' extra loss terms."""

    z: torch.Tensor
    risk: torch.Tensor
    weights: torch.Tensor
    return_weight: float
    risk_weight: float
    terms: list[torch.Tensor] = field(default_factory=list)
    extra: torch.Tensor | None = None

    def forward(
        self, model: PolicyNetwork, states: torch.Tensor, sl: slice
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch ``sl``'s ``(action_logits, strength)``; its extra loss (module docstring)
        is kept for ``add``."""
        net = cast(MultiTaskPolicyNet, model)
        logits, strength, return_z, risk_logits = net.heads(states)
        w = self.weights[sl]
        err = return_z.reshape(-1) - self.z[sl]
        ret = torch.dot(err * w, err)
        risk = torch.dot(F.cross_entropy(risk_logits, self.risk[sl], reduction="none"), w)
        self.terms.append(torch.stack([ret, risk]).detach())
        self.extra = ret * self.return_weight + risk * self.risk_weight
        return logits, strength

    def add(self, total: torch.Tensor) -> torch.Tensor:
        """``total`` plus the last ``forward``'s extra loss."""
        assert self.extra is not None, "forward first"
        extra, self.extra = self.extra, None
        return total + extra

    def check(self, epoch: int, lr: float) -> None:
        """``TrainingError`` naming the first batch whose return or risk term is not finite."""
        if not self.terms:
            return
        host = torch.stack(self.terms).cpu().numpy()
        bad = np.argwhere(~np.isfinite(host))
        if bad.size:
            b, t = (int(v) for v in bad[0])
            name = ("expected-return (MSE)", "risk (cross-entropy)")[t]
            raise TrainingError(
                f"epoch {epoch}, batch {b + 1}/{len(host)}: the {name} loss is {host[b, t]}; "
                f"training diverged. Lower lr (now {lr:g}) or the head's weight"
            )


@dataclass
class MultiTaskTargets:
    """The extra heads' targets on the training device (module docstring): per train row
    (the rows the trainer trains on, teacher rows last) ``z``, ``risk`` and ``mask`` (kept);
    ``val_rows``: the validation rows with a label (indices into the dataset), with their
    forward returns and risk classes; ``summary``: what the run records."""

    z: torch.Tensor
    risk: torch.Tensor
    mask: torch.Tensor
    kept_rows: npt.NDArray[np.int64]
    val_rows: npt.NDArray[np.int64]
    val_states: torch.Tensor
    val_returns: npt.NDArray[np.float64]
    val_risk: npt.NDArray[np.int64]
    return_mean: float
    return_std: float
    return_weight: float
    risk_weight: float
    summary: dict[str, Any]

    def epoch(self, model: PolicyNetwork, order: torch.Tensor, batch_size: int) -> EpochTargets:
        """The targets in ``order`` (the epoch's row order) with their per-row batch weights;
        sets ``model``'s return scale to the kept rows' mean and std first (the same every
        epoch, and what a resumed checkpoint holds)."""
        cast(MultiTaskPolicyNet, model).set_return_scale(self.return_mean, self.return_std)
        mask = self.mask[order]
        return EpochTargets(
            z=self.z[order],
            risk=self.risk[order],
            weights=_batch_weights(mask, batch_size),
            return_weight=self.return_weight,
            risk_weight=self.risk_weight,
        )

    @torch.no_grad()
    def report(self, model: PolicyNetwork) -> dict[str, Any]:
        """``summary`` plus the heads on the labelled validation rows (eval mode): return RMSE
        (log return) and correlation, risk accuracy and the accuracy of always answering the
        kept train rows' most common class (None where there is no row or no spread)."""
        model.eval()
        net = cast(MultiTaskPolicyNet, model)
        preds, classes = [], []
        for s in range(0, int(self.val_states.shape[0]), EVAL_CHUNK):
            _, _, expected, risk_probs = net.exported(self.val_states[s : s + EVAL_CHUNK])
            preds.append(expected.reshape(-1).double().cpu())
            classes.append(risk_probs.argmax(dim=-1).cpu())
        out = dict(self.summary)
        if not preds:
            return out | {"val_return_rmse": None, "val_return_corr": None, "val_risk_acc": None}
        pred = torch.cat(preds).numpy()
        cls = torch.cat(classes).numpy()
        actual = self.val_returns
        corr = None
        if pred.size > 1 and pred.std() > 0 and actual.std() > 0:
            corr = round(float(np.corrcoef(pred, actual)[0, 1]), 4)
        majority = int(np.bincount(self.risk.cpu().numpy()[self.mask.cpu().numpy()]).argmax())
        return out | {
            "val_return_rmse": round(float(np.sqrt(np.mean((pred - actual) ** 2))), 6),
            "val_return_corr": corr,
            "val_risk_acc": round(float(np.mean(cls == self.val_risk)), 4),
            "val_risk_majority_acc": round(float(np.mean(self.val_risk == majority)), 4),
        }

    def describe(self) -> str:
        """The training log's line about the labels."""
        s = self.summary
        q1, q2 = s["tercile_cuts"]
        return (
            f"Multi-task labels (horizon {s['horizon']} bars): {s['train_rows_labelled']} train "
            f"rows kept; {s['train_rows_dropped']} dropped (horizon crosses the training end "
            f"{s['train_end']}), {s['train_rows_unlabelled']} without a full horizon; risk "
            f"terciles cut on the kept rows at {q1:.4g} / {q2:.4g}"
        )


def multitask_targets(
    cfg: TrainingConfig,
    ds: OfflineDataset,
    split: DataSplit,
    n_rows: int,
    device: torch.device,
    out: TextIO | None = None,
    processes: int = 1,
) -> MultiTaskTargets | None:
    """The extra heads' targets for ``cfg.model`` (None for a network without them: nothing
    changes for it), for train rows ``split.train`` followed by ``n_rows - len(split.train)``
    teacher rows (unlabelled); prints ``describe()``. ``TrainingError`` when the dataset has no
    forward labels, no train row keeps one, or ``processes`` (torchrun's world size) is over 1:
    the extra heads' loss is computed beside the data-parallel forward, so they train in one
    process only."""
    if not issubclass(get_architecture(cfg.model), MultiTaskPolicyNet):
        return None
    if processes > 1:
        raise TrainingError(
            f"model {cfg.model!r} under torchrun ({processes} processes): its extra heads "
            "train in one process only; run `otonom-train train` without torchrun"
        )
    labels = ds.labels
    if labels is None:
        raise TrainingError(
            f"model {cfg.model!r} trains its expected-return and risk heads on forward labels; "
            f"{cfg.dataset_path} has none: regenerate it with `otonom-train dataset ... "
            "--horizon BARS`"
        )
    train = split.train
    train_end = ds.dates[train].max()
    labelled = labels.labelled[train]
    kept = labelled & (labels.ends[train] <= train_end)  # NaT compares false
    if not kept.any():
        raise TrainingError(
            f"no train row of {cfg.dataset_path} has a forward label ending by the training "
            f"end {train_end} (horizon {labels.horizon}, {int(labelled.sum())} labelled train "
            "rows); expected a shorter horizon or more data"
        )
    returns = labels.returns[train][kept].astype(np.float64)
    mean, std = float(returns.mean()), float(returns.std())
    std = std if std > 1e-12 else 1.0
    cuts = tercile_cuts(labels.volatility[train][kept])
    risk_all = risk_levels(labels.volatility, cuts).astype(np.int64)
    z, risk, mask = np.zeros(n_rows, np.float32), np.zeros(n_rows, np.int64), np.zeros(n_rows, bool)
    n_train = train.size
    z[:n_train][kept] = (returns - mean) / std
    risk[:n_train][kept] = risk_all[train][kept]
    mask[:n_train] = kept
    val_rows = split.val[labels.labelled[split.val]]
    summary = {
        "horizon": labels.horizon,
        "return_weight": cfg.return_weight,
        "risk_weight": cfg.risk_weight,
        "train_end": str(train_end),
        "train_rows_labelled": int(kept.sum()),
        "train_rows_dropped": int((labelled & ~kept).sum()),
        "train_rows_unlabelled": int((~labelled).sum()),
        "teacher_rows_unlabelled": n_rows - n_train,
        "tercile_cuts": [round(c, 8) for c in cuts],
        "return_mean": mean,
        "return_std": std,
        "val_rows_labelled": int(val_rows.size),
    }
    targets = MultiTaskTargets(
        z=torch.from_numpy(z).to(device),
        risk=torch.from_numpy(risk).to(device),
        mask=torch.from_numpy(mask).to(device),
        kept_rows=train[kept],
        val_rows=val_rows,
        val_states=torch.from_numpy(np.ascontiguousarray(ds.states[val_rows])).to(device),
        val_returns=labels.returns[val_rows].astype(np.float64),
        val_risk=risk_all[val_rows],
        return_mean=mean,
        return_std=std,
        return_weight=float(cfg.return_weight),
        risk_weight=float(cfg.risk_weight),
        summary=summary,
    )
    print(targets.describe(), file=out)
    return targets
