"""What a training run reports: ``EpochStats`` per epoch, ``TrainingMetrics`` for the run, and
the guide's signs of overfitting (``overfitting_warnings``). Torch-free."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final

from otonom_trainer.metrics import ClassMetrics

__all__ = ["EpochStats", "TrainingMetrics", "overfitting_warnings"]

# the guide's signs of overfitting
LOSS_GAP: Final = 0.2
ACC_GAP: Final = 0.10
RISING_EPOCHS: Final = 3


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
    (``{"reason": ..., "rules": [...], ...}``) when the model is degenerate; ``multitask``:
    None, or for a network with extra heads their labels (horizon, rows kept and dropped,
    tercile cuts) and validation figures (``otonom_trainer.training.multitask``).
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
    teacher_rows: int = 0  # teacher-labelled rows added to the train split (``augment``)
    majority_action: str = "HOLD"
    majority_baseline_acc: float = math.nan
    degenerate: dict[str, Any] | None = None
    multitask: dict[str, Any] | None = None  # the extra heads' labels and validation figures

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
