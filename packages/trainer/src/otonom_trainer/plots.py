"""The trainer's PNG plots: training curves, the confusion matrix and feature importance.

Figures are drawn on ``otonom_runtime.plots.figure()`` (a ``matplotlib.figure.Figure`` on its
own Agg canvas), never through ``pyplot``: no global backend is chosen and no figure registry
is touched, so a process that imports the trainer (a daemon, a notebook) keeps its matplotlib
settings. Without matplotlib a plot raises ``otonom_runtime.plots.PlotUnavailableError``
saying how to install it.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from otonom_runtime.plots import figure
from otonom_trainer.metrics import CLASS_NAMES

if TYPE_CHECKING:
    from otonom_trainer.training.results import EpochStats

__all__ = [
    "plot_comparison",
    "plot_confusion_matrix",
    "plot_feature_importance",
    "plot_training_curves",
]


def plot_training_curves(
    history: Sequence[EpochStats], best_epoch: int, path: str | os.PathLike[str]
) -> Path:
    """Loss and action accuracy per epoch, train and validation, the best epoch marked."""
    out = Path(path)
    fig = figure(figsize=(10, 4))
    # fixed margins: constrained layout measured every text box again (a third of the chart's
    # time, paid by every training run)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.92, wspace=0.22)
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
    fig = figure(figsize=(5, 4.5))
    fig.subplots_adjust(left=0.16, right=0.9, bottom=0.12, top=0.92)  # fixed, as above
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


def plot_feature_importance(
    names: Sequence[str],
    means: npt.ArrayLike,
    stds: npt.ArrayLike,
    *,
    panels: Sequence[str],
    xlabel: str,
    title: str = "",
) -> bytes:
    """One horizontal bar chart per panel, side by side, as PNG bytes (the caller writes them,
    so a report is written whole or not at all).

    ``means`` and ``stds`` are (len(names), len(panels)): panel ``j`` draws column ``j``, a bar
    per name in the given order from the top, with ``stds`` as error bars. A column that is
    all NaN (an action without rows) is drawn empty and titled so; other NaNs draw no bar.
    ``ValueError`` for mismatched shapes; ``PlotUnavailableError`` without matplotlib.
    """
    m = np.asarray(means, dtype=np.float64)
    s = np.asarray(stds, dtype=np.float64)
    shape = (len(names), len(panels))
    if m.shape != shape or s.shape != shape or not names:
        raise ValueError(
            f"means {m.shape} and stds {s.shape} for {len(names)} names and {len(panels)} "
            f"panels; expected both {shape} with at least one name"
        )
    fig = figure(figsize=(3.6 * len(panels) + 1.5, 0.28 * len(names) + 1.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels), sharey=True))
    rows = np.arange(len(names))
    for j, (ax, panel) in enumerate(zip(axes, panels, strict=True)):
        empty = bool(np.isnan(m[:, j]).all())
        if not empty:
            ax.barh(rows, np.nan_to_num(m[:, j]), xerr=np.nan_to_num(s[:, j]), color="tab:blue")
        ax.axvline(0.0, color="grey", linewidth=0.8)
        ax.set_title(f"{panel} (no rows)" if empty else panel)
        ax.set_xlabel(xlabel)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(rows, labels=list(names))
    axes[0].invert_yaxis()  # the first name on top
    if title:
        fig.suptitle(title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def plot_comparison(
    path: str | os.PathLike[str],
    *,
    equity: Mapping[str, tuple[npt.ArrayLike, npt.ArrayLike]],
    windows: Sequence[str],
    differences: Mapping[str, Sequence[tuple[float, float, float]]],
    regimes: Sequence[str],
    departures: Sequence[float],
    earned: Sequence[float],
) -> Path:
    """The comparison's figure (``otonom-train compare``): growth of 1 per arm over the joined
    test periods (``equity``: name -> (dates, values)); the Sharpe differences per window
    (name -> (point, low, high) per window) as points with interval bars; the share of days
    the agent departs from the teacher and what it earned, per regime. Returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig = figure(figsize=(12, 8), layout="constrained")
    grid = fig.add_gridspec(2, 2)
    curves = fig.add_subplot(grid[0, :])
    for name, (dates, values) in equity.items():
        style = {"oracle": "--", "oracle_state": ":"}.get(name, "-")
        curves.plot(np.asarray(dates), np.asarray(values), style, label=name, linewidth=1.2)
    curves.set_title("Growth of 1 over the joined test periods")
    curves.grid(alpha=0.3)
    curves.legend()
    diff_ax = fig.add_subplot(grid[1, 0])
    x = np.arange(len(windows), dtype=np.float64)
    for k, (name, rows) in enumerate(differences.items()):
        pts = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
        errors = np.vstack([pts[:, 0] - pts[:, 1], pts[:, 2] - pts[:, 0]])
        diff_ax.errorbar(x + 0.15 * (k - 0.5), pts[:, 0], yerr=errors, fmt="o", capsize=4,
                         label=name)  # fmt: skip
    diff_ax.axhline(0.0, color="black", linewidth=0.7)
    diff_ax.set_xticks(x, labels=list(windows))
    diff_ax.set_title("Sharpe difference per window (bootstrap interval)")
    diff_ax.grid(axis="y", alpha=0.3)
    diff_ax.legend()
    reg_ax = fig.add_subplot(grid[1, 1])
    pos = np.arange(len(regimes), dtype=np.float64)
    reg_ax.bar(pos - 0.2, 100.0 * np.asarray(departures, np.float64), 0.4,
               label="departure days (%)")  # fmt: skip
    reg_ax.bar(pos + 0.2, 100.0 * np.asarray(earned, np.float64), 0.4,
               label="earned vs teacher (% summed)")  # fmt: skip
    reg_ax.axhline(0.0, color="black", linewidth=0.7)
    reg_ax.set_xticks(pos, labels=list(regimes))
    reg_ax.set_title("Where the agent departs, by trend regime")
    reg_ax.grid(axis="y", alpha=0.3)
    reg_ax.legend()
    fig.savefig(out, dpi=100)
    return out
