"""The mutable state of a training run and its round trip through a checkpoint (resuming).

``TrainState`` is what an epoch changes: the network (its parameters in the flat buffer), the
optimizer, the scheduler, the epoch-order generator, the history and the best epoch so far.
``checkpoint_dict`` writes it (with the network) in the checkpoint layout of
``otonom_trainer.training.checkpoint``; ``read_resumable`` (``check_resumable`` on a read
checkpoint) and ``restore`` read it back, so a
run of k epochs resumed for N - k more ends with the weights of N epochs in one go, bit for bit
(the optimizer's moments, the scheduler's plateau count and the RNG states of batch order and
dropout are restored).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import torch
from torch import nn

from otonom_schema import SCHEMA_VERSION, schema_fingerprint
from otonom_trainer._errors import CheckpointError, TrainingError
from otonom_trainer.architectures import architecture_name
from otonom_trainer.model import PolicyNetwork
from otonom_trainer.training.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_FORMAT_VERSION,
    read_checkpoint,
)
from otonom_trainer.training.losses import BehaviorCloningLoss
from otonom_trainer.training.optim import PlateauLR
from otonom_trainer.training.results import EpochStats

__all__ = [
    "RESUMABLE_CHANGES",
    "TrainState",
    "check_resumable",
    "checkpoint_dict",
    "read_resumable",
    "restore",
]

RESUMABLE_CHANGES: Final = frozenset(
    {"max_epochs", "output_dir", "progress", "tensorboard", "patience", "device"}
)
"""Config fields a resumed run may change (they do not enter the maths)."""


@dataclass
class TrainState:
    """What an epoch changes and a resume restores."""

    model: PolicyNetwork
    flat: nn.Parameter
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: PlateauLR | None
    loss_fn: BehaviorCloningLoss
    generator: torch.Generator
    history: list[EpochStats] = field(default_factory=list)
    best_loss: float = math.inf
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    stopped_early: bool = False

    @property
    def first_epoch(self) -> int:
        """The epoch the loop starts at (1, or the one after a resumed checkpoint's)."""
        return len(self.history) + 1


def checkpoint_dict(
    model: PolicyNetwork,
    *,
    run_id: str | None,
    config: Mapping[str, Any],
    metrics: Mapping[str, Any],
    state: TrainState | None = None,
    with_best_weights: bool = False,
) -> dict[str, Any]:
    """The checkpoint of ``model``; with ``state``, its ``training_state`` too (and, with
    ``with_best_weights``, the best epoch's weights: a state file's, not the best checkpoint's,
    whose own weights are the best)."""
    out: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "schema_version": SCHEMA_VERSION,
        "schema_fingerprint": schema_fingerprint(),
        "run_id": run_id,
        "architecture": architecture_name(model),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "hparams": model.hparams(),
        "config": dict(config),
        "metrics": dict(metrics),
    }
    if state is None:
        return out
    saved: dict[str, Any] = {
        "epoch": len(state.history),
        "history": [asdict(h) for h in state.history],
        "optimizer": state.optimizer.state_dict(),
        "scheduler": None if state.scheduler is None else state.scheduler.state_dict(),
        "generator": state.generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "best_loss": state.best_loss,
        "best_epoch": state.best_epoch,
    }
    device = state.flat.device
    if device.type == "cuda":
        saved["cuda_rng"] = torch.cuda.get_rng_state(device)
    if with_best_weights:
        saved["best_state"] = {k: v.detach().cpu() for k, v in state.best_state.items()}
    out["training_state"] = saved
    return out


def read_resumable(
    path: str | os.PathLike[str] | None, config: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The checkpoint at ``path`` once ``check_resumable`` accepts it for ``config``; ``None``
    when ``path`` is ``None`` (a fresh run)."""
    if path is None:
        return None
    ckpt = read_checkpoint(path)
    check_resumable(ckpt, Path(path), config)
    return ckpt


def check_resumable(ckpt: Mapping[str, Any], path: Path, config: Mapping[str, Any]) -> None:
    """``CheckpointError`` unless ``ckpt`` has a training state of a run with ``config`` (the
    ``RESUMABLE_CHANGES`` aside); ``TrainingError`` when it already reached ``max_epochs``."""
    if "training_state" not in ckpt:
        raise CheckpointError(
            f"{path} has no training state (written before checkpoint format 2); resume from "
            "a policy_best.pt or a state file of a run of this version"
        )
    saved = ckpt.get("config", {})
    differ = sorted(
        k
        for k in set(saved) | set(config)
        if k not in RESUMABLE_CHANGES and saved.get(k) != config.get(k)
    )
    if differ:
        raise CheckpointError(
            f"{path} was trained with another configuration ("
            + ", ".join(f"{k}={saved.get(k)!r} there, {config.get(k)!r} here" for k in differ)
            + f"); only {', '.join(sorted(RESUMABLE_CHANGES))} may change on resume"
        )
    epoch = ckpt["training_state"]["epoch"]
    if epoch >= config["max_epochs"]:
        raise TrainingError(
            f"{path} is already at epoch {epoch}; max_epochs is {config['max_epochs']}: "
            "nothing left to train"
        )


def restore(state: TrainState, ckpt: Mapping[str, Any], device: torch.device) -> None:
    """Put ``state`` (its network's weights already loaded from ``ckpt``) back where ``ckpt``'s
    epoch ended: optimizer, scheduler, RNG states, history and best epoch."""
    saved = ckpt["training_state"]
    try:
        state.optimizer.load_state_dict(saved["optimizer"])
        if state.scheduler is not None and saved["scheduler"] is not None:
            state.scheduler.load_state_dict(saved["scheduler"])
        state.generator.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        if device.type == "cuda" and "cuda_rng" in saved:
            torch.cuda.set_rng_state(saved["cuda_rng"], device)
        state.history = [EpochStats(**h) for h in saved["history"]]
        state.best_loss = float(saved["best_loss"])
        state.best_epoch = int(saved["best_epoch"])
        best = saved.get("best_state", ckpt["state_dict"])
        state.best_state = {k: v.to(device) for k, v in best.items()}
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"the checkpoint's training state cannot be restored: {exc}"
        ) from None
