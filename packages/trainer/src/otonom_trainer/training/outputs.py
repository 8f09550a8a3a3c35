"""What a training run writes besides the checkpoint: ``metadata.json``, ``history.csv``, the two
PNG plots, TensorBoard event logs and the progress bar."""

from __future__ import annotations

import csv
import datetime as dt
import json
import platform
from collections.abc import Mapping, Sequence
from dataclasses import fields
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt
import torch

from otonom_schema import SCHEMA_VERSION, OfflineDataset, atomic_path, schema_fingerprint
from otonom_trainer.architectures import architecture_name
from otonom_trainer.model import PolicyNetwork
from otonom_trainer.plots import plot_confusion_matrix, plot_training_curves
from otonom_trainer.training.data import DataSplit
from otonom_trainer.training.results import EpochStats, TrainingMetrics
from otonom_trainer.trials import record_trial

__all__ = [
    "log_tensorboard",
    "progress_bar",
    "run_metadata",
    "tensorboard_writer",
    "write_run_files",
]


def run_metadata(
    *,
    run_id: str | None,
    config: Mapping[str, Any],
    model: PolicyNetwork,
    metrics: TrainingMetrics,
    dataset: OfflineDataset,
    dataset_sha256: str | None,
    split: DataSplit,
    device: torch.device,
    files: Sequence[str],
) -> dict[str, Any]:
    """The content of ``metadata.json`` (format ``otonom-rl/training-run``)."""
    ds = dataset
    return {
        "format": "otonom-rl/training-run",
        "run_id": run_id,
        "created_at": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "config": dict(config),
        "metrics": metrics.to_dict(),
        "degenerate": metrics.degenerate,
        "model": {
            "class": type(model).__name__,
            "architecture": architecture_name(model),
            "hparams": model.hparams(),
            "n_params": metrics.n_params,
        },
        "dataset": {
            "path": config["dataset_path"],
            "sha256": dataset_sha256,
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
        "files": list(files),
    }


def write_run_files(out: Path, meta: Mapping[str, Any], metrics: TrainingMetrics) -> None:
    """``metadata.json``, ``history.csv``, ``training_curves.png`` and ``confusion_matrix.png``
    in ``out`` (the first two atomically), then the run's line in the trials ledger
    (``otonom_trainer.trials``)."""
    with atomic_path(out / "metadata.json") as tmp:
        tmp.write_text(
            json.dumps(meta, indent=2, allow_nan=False, default=str) + "\n", encoding="utf-8"
        )
    names = [f.name for f in fields(EpochStats)]
    history_csv = atomic_path(out / "history.csv")
    with history_csv as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(names)
        for row in metrics.history:
            w.writerow([getattr(row, k) for k in names])
    plot_training_curves(metrics.history, metrics.best_epoch, out / "training_curves.png")
    plot_confusion_matrix(
        np.asarray(metrics.confusion_matrix, dtype=np.int64),
        out / "confusion_matrix.png",
        title="Validation confusion matrix",
    )
    # one ledger line per finished run, written once (rank 0), tuning trials included
    config = meta.get("config") or {}
    record_trial(
        "train",
        output=str(out),
        run_id=meta.get("run_id"),
        **{k: config.get(k) for k in ("dataset_path", "model", "seed", "awr_beta")},
    )


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


def progress_bar(total: int, epoch: int, max_epochs: int) -> Any:
    """A tqdm bar over one epoch's batches (closed by the caller)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=f"Epoch {epoch}/{max_epochs}", unit="batch", leave=False)


def tensorboard_writer(out_dir: Path, out: TextIO | None = None) -> Any:
    """A SummaryWriter on ``out_dir/tensorboard``, or None (with a note) without tensorboard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        print(
            f"note: TensorBoard logging is off: {exc}. Install it with "
            "pip install 'otonom-trainer[tensorboard]'; training goes on without event logs.",
            file=out,
        )
        return None
    log_dir = out_dir / "tensorboard"
    print(f"TensorBoard logs: {log_dir}", file=out)
    return SummaryWriter(log_dir=str(log_dir))


def log_tensorboard(writer: Any, stats: EpochStats) -> None:
    """One epoch's losses, accuracies, lr and gradient norm as scalars."""
    for tag, value in (
        ("loss/train", stats.train_loss),
        ("loss/val", stats.val_loss),
        ("accuracy/train", stats.train_acc),
        ("accuracy/val", stats.val_acc),
        ("lr", stats.lr),
        ("grad_norm", stats.grad_norm),
    ):
        writer.add_scalar(tag, value, stats.epoch)


def training_summary(metrics: TrainingMetrics, majority: str, checkpoint: Path, rule: str) -> str:
    """The closing lines a training run prints (the guide's console output), after a blank
    line; a degenerate model's warning last."""
    lines = [
        "",
        rule,
        "Training Complete!",
        rule,
        f"Best validation loss: {metrics.best_val_loss:.4f}",
        f"Best epoch: {metrics.best_epoch}",
        f"Val action accuracy: {metrics.val_action_acc:.3f}",
        f"Majority baseline: {metrics.majority_baseline_acc:.3f} (always {majority}, the train "
        "split's most common action)",
        f"Model saved to: {checkpoint}",
        rule,
    ]
    extra = metrics.multitask
    if extra is not None:  # the extra heads on the labelled validation rows
        lines.insert(-2, _heads_line(extra))
    mark = metrics.degenerate
    if mark is not None:
        lines.append(f"warning: DEGENERATE model ({' and '.join(mark['rules'])}): {mark['reason']}")
    return "\n".join(lines)


def _heads_line(report: Mapping[str, Any]) -> str:
    """The summary line of a multi-task network's extra heads (``TrainingMetrics.multitask``)."""

    def show(key: str) -> str:
        value = report.get(key)
        return "n/a" if value is None else f"{value:.4g}"

    return (
        f"Extra heads on {report['val_rows_labelled']} labelled val rows: return RMSE "
        f"{show('val_return_rmse')} (log return over {report['horizon']} bars), corr "
        f"{show('val_return_corr')}; risk accuracy {show('val_risk_acc')} (majority "
        f"{show('val_risk_majority_acc')})"
    )
