"""The data side of training: the device, the train/validation split, each epoch's row order,
the split's tensors on the device and the exact loss / accuracy of a whole split.

The whole dataset is kept on the training device as tensors (on a GPU as on the CPU: one code
path): each epoch gathers the train split once in the epoch's order (a permutation, or the
oversampled draw) and the batches are contiguous slices of it, so there is no ``DataLoader``,
no per-batch gather and no host-device copy per batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt
import torch

from otonom_schema import Action, OfflineDataset
from otonom_trainer._errors import TrainingError
from otonom_trainer.model import PolicyNetwork
from otonom_trainer.training.losses import BehaviorCloningLoss

__all__ = [
    "EVAL_CHUNK",
    "TRAIN_EVAL_ROWS",
    "DataSplit",
    "SplitEval",
    "SplitTensors",
    "epoch_indices",
    "evaluate_split",
    "resolve_device",
    "split_rows",
    "to_device",
    "train_eval_rows",
]

N_ACTIONS: Final = len(Action)
# rows per forward pass when evaluating a whole split (no gradients, so larger than a batch)
EVAL_CHUNK: Final = 8192
# train_loss / train_acc are measured on at most this many train rows (a fixed random sample)
TRAIN_EVAL_ROWS: Final = 20_000


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


@dataclass
class SplitTensors:
    """One split's states, actions and strengths on the training device; ``weights``: the
    rows' action-loss weights (``training.awr``; None: every row 1, plain behaviour cloning)."""

    states: torch.Tensor
    actions: torch.Tensor
    strengths: torch.Tensor
    weights: torch.Tensor | None = None

    def ordered_weights(self, order: torch.Tensor) -> torch.Tensor | None:
        """``weights`` in the epoch's row order ``order`` (None without weights)."""
        return None if self.weights is None else self.weights[order]


@dataclass
class SplitEval:
    """The exact loss terms and action accuracy of a whole split, and its predicted actions."""

    loss: float
    action_loss: float
    strength_loss: float
    acc: float
    preds: torch.Tensor = field(repr=False)


def to_device(
    ds: OfflineDataset, rows: npt.NDArray[np.int64], device: torch.device
) -> SplitTensors:
    """The rows ``rows`` of ``ds`` as contiguous tensors on ``device``."""
    return SplitTensors(
        torch.from_numpy(np.ascontiguousarray(ds.states[rows], dtype=np.float32)).to(device),
        torch.from_numpy(np.ascontiguousarray(ds.actions[rows], dtype=np.int64)).to(device),
        torch.from_numpy(np.ascontiguousarray(ds.strengths[rows], dtype=np.float32)).to(device),
    )


@torch.no_grad()
def evaluate_split(
    model: PolicyNetwork, loss_fn: BehaviorCloningLoss, data: SplitTensors
) -> SplitEval:
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
    return SplitEval(host[0], host[1], host[2], host[3], pred.cpu())


def train_eval_rows(train: npt.NDArray[np.int64], seed: int) -> npt.NDArray[np.int64]:
    """The train rows ``train_loss`` / ``train_acc`` are measured on: all of them, or a fixed
    random sample of ``TRAIN_EVAL_ROWS`` (sorted) when the split is larger."""
    if train.size <= TRAIN_EVAL_ROWS:
        return train
    pick = np.random.default_rng(seed).choice(train.size, size=TRAIN_EVAL_ROWS, replace=False)
    return train[np.sort(pick)]
