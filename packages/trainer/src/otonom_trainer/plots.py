"""The trainer's PNG plots: training curves and the confusion matrix.

Figures are drawn on ``otonom_runtime.plots.figure()`` (a ``matplotlib.figure.Figure`` on its
own Agg canvas), never through ``pyplot``: no global backend is chosen and no figure registry
is touched, so a process that imports the trainer (a daemon, a notebook) keeps its matplotlib
settings. Without matplotlib a plot raises ``otonom_runtime.plots.PlotUnavailableError``
saying how to install it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from otonom_runtime.plots import figure
from otonom_trainer.metrics import CLASS_NAMES

if TYPE_CHECKING:
    from otonom_trainer.training.results import EpochStats

__all__ = ["plot_confusion_matrix", "plot_training_curves"]


def plot_training_curves(
    history: Sequence[EpochStats], best_epoch: int, path: str | os.PathLike[str]
) -> Path:
    """Loss and action accuracy per epoch, train and validation, the best epoch marked."""
    out = Path(path)
    fig = figure(figsize=(10, 4), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    epochs = [h.epoch for h in history]
    for ax, key, title in ((ax_loss, "loss", "Loss"), (ax_acc, "acc", "Action accuracy")):
        ax.plot(epochs, [getattr(h, f"train_{key}") for h in history], "o-", label="train")
        ax.plot(epochs, [getattr(h, f"val_{key}") for h in history], "o-", label="val")
        ax.axvline(best_epoch, color="grey", linestyle="--", label="best epoch")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.savefig(out, dpi=100)
    return out


def plot_confusion_matrix(
    cm: npt.ArrayLike,
    path: str | os.PathLike[str],
    *,
    labels: Sequence[str] = CLASS_NAMES,
    title: str = "Confusion matrix",
) -> Path:
    """Draw ``cm`` (rows = true, columns = predicted) as an annotated heat map PNG at ``path``.

    Cells show the count and the share of its row (the recall of that true class). Folders are
    created; returns the path. ``ValueError`` if ``cm`` is not a square matrix of non-negative
    counts matching ``labels``; ``PlotUnavailableError`` without matplotlib.
    """
    m = np.asarray(cm)
    if m.ndim != 2 or m.shape != (len(labels), len(labels)):
        raise ValueError(
            f"confusion matrix has shape {m.shape}; expected ({len(labels)}, {len(labels)}) "
            f"for labels {list(labels)}"
        )
    if m.dtype.kind not in "iu" or (m.size and m.min() < 0):
        raise ValueError("confusion matrix must hold non-negative integer counts")
    rows = m.sum(axis=1, keepdims=True)
    share = np.divide(m, rows, out=np.zeros(m.shape, dtype=np.float64), where=rows > 0)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig = figure(figsize=(5, 4.5), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    ticks = np.arange(len(labels))
    ax.set_xticks(ticks, labels=list(labels))
    ax.set_yticks(ticks, labels=list(labels))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            colour = "white" if share[i, j] > 0.5 else "black"
            text = f"{int(m[i, j])}\n{share[i, j]:.0%}"
            ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=9)
    fig.savefig(out, dpi=110)
    return out
