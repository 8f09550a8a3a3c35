"""Advantage-weighted imitation (AWR-style offline learning, ``TrainingConfig.awr_beta``):
the teacher's actions weighted by how well they turned out.

Each train row ``i`` has the reward ``r_i`` the dataset records (``otonom-train dataset
--rewards``: the teacher run's sleeve return from the decision to the next one, after costs,
``otonom_trainer.rewards``). With ``beta = awr_beta`` and ``m = awr_max_weight``::

    A_i = r_i - mean_{j in train split, r_j known} r_j      (the baseline: the overall mean)
    A_i = 0 where r_i is unknown (NaN: a symbol's last row)
    w_i = min(exp(A_i / beta), m)
    w_i = w_i / mean_{train split} w                          (mean 1 over the train split)

and the action term of the loss becomes ``sum_i w_i l_i / D`` (``BehaviorCloningLoss.
batch_terms``: the weighted form of the unweighted mean, so its scale is kept). Rows that
earned more than the average decision are imitated more, rows that lost less. ``beta`` is in
return units (the rewards are per-decision returns: try about their standard deviation, which
the trainer prints); a large ``beta`` tends to plain imitation. Teacher rows
(``teacher_rows``) have no reward and weigh 1. The strength term, the validation loss (which
picks the best epoch) and the export are unchanged. ``awr_beta=None`` (the default) adds
nothing: the loss is computed exactly as before. The baseline is the overall mean, not a
learned value: the smallest honest version (the reference AWR fits a value function).
Rewards read the teacher's equity one decision ahead: the last train row's reward may read
the first validation day's equity (it changes only that row's weight).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TextIO

import numpy as np
import numpy.typing as npt
import torch

from otonom_schema import OfflineDataset
from otonom_trainer._errors import TrainingError
from otonom_trainer.training.data import SplitTensors, to_device

if TYPE_CHECKING:
    from otonom_trainer.config import TrainingConfig

__all__ = ["advantage_weights", "train_tensors"]


def advantage_weights(
    rewards: npt.ArrayLike, beta: float, max_weight: float
) -> npt.NDArray[np.float64]:
    """The AWR weights of rows with ``rewards`` (NaN: unknown), mean 1 (module docstring)."""
    r = np.asarray(rewards, dtype=np.float64)
    known = np.isfinite(r)
    if not known.any():
        return np.ones(r.shape)
    adv = np.where(known, r - r[known].mean(), 0.0)
    w = np.minimum(np.exp(np.minimum(adv / beta, np.log(max_weight))), max_weight)
    out: npt.NDArray[np.float64] = w / w.mean()
    return out


def train_tensors(
    rows: OfflineDataset,
    device: torch.device,
    cfg: TrainingConfig,
    dataset: OfflineDataset,
    train: npt.NDArray[np.int64],
    out: TextIO | None = None,
) -> SplitTensors:
    """The train rows ``rows`` (the train split ``train`` of ``dataset``, then any teacher
    rows) on ``device``, with their AWR weights when ``cfg.awr_beta`` is set (printing one
    line about them). ``TrainingError`` when it is set and ``dataset`` has no rewards."""
    tensors = to_device(rows, np.arange(len(rows)), device)
    beta = cfg.awr_beta
    if beta is None:
        return tensors
    if dataset.rewards is None:
        raise TrainingError(
            f"awr_beta {beta:g}: the dataset {cfg.dataset_path} has no rewards; expected one "
            "made with `otonom-train dataset --rewards` (format version 3), or no --awr-beta"
        )
    r = dataset.rewards[train]
    w = np.ones(len(rows))
    w[: train.size] = advantage_weights(r, beta, cfg.awr_max_weight)
    known = r[np.isfinite(r)]
    std = float(known.std()) if known.size else float("nan")
    ess = float(w[: train.size].sum() ** 2 / (w[: train.size] ** 2).sum()) if train.size else 0.0
    print(
        f"AWR: beta={beta:g}, {known.size}/{train.size} train rows with a reward (mean "
        f"{float(known.mean()) if known.size else float('nan'):.5f}, std {std:.5f}); weights "
        f"max {float(w.max()):.3f}, effective rows {ess:.0f}",
        file=out,
    )
    tensors.weights = torch.from_numpy(w.astype(np.float32)).to(device)
    return tensors
