"""Policy checkpoints: what ``policy_best.pt`` holds, how it is written and read back.

A checkpoint is a dict saved with ``torch.save`` and read with ``weights_only=True``::

    format, format_version, schema_version, schema_fingerprint, run_id,
    architecture      the network's name in otonom_trainer.architectures (absent before the
                      registry: read as "mlp")
    state_dict, hparams, config, metrics
    training_state    (format 2) what resuming needs: epoch, history, the optimizer's and the
                      scheduler's state_dict, the RNG states (epoch order, dropout), the best
                      epoch so far and, in a state file (not the best checkpoint), its weights

``load_checkpoint`` rebuilds the network from ``architecture`` + ``hparams``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Final

import torch

from otonom_schema import atomic_path, require_schema
from otonom_trainer._errors import ArchitectureError, CheckpointError
from otonom_trainer.architectures import DEFAULT_ARCHITECTURE, get_architecture
from otonom_trainer.model import PolicyNetwork
from otonom_trainer.training.files import checkpoint_file

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_FORMAT_VERSION",
    "CHECKPOINT_NAME",
    "load_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
]

CHECKPOINT_NAME: Final = "policy_best.pt"
CHECKPOINT_FORMAT: Final = "otonom-rl/policy-checkpoint"
CHECKPOINT_FORMAT_VERSION: Final = 2
"""1: no ``architecture`` / ``training_state``; 2: both (version 1 files still load)."""


def save_checkpoint(checkpoint: dict[str, Any], path: Path) -> None:
    """``torch.save`` to ``path`` atomically (a reader never sees half a file)."""
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


def read_checkpoint(
    path: str | os.PathLike[str],
    *,
    map_location: str | torch.device = "cpu",
    check_schema: bool = True,
) -> dict[str, Any]:
    """The checkpoint dict of ``path``, checked for format and (``check_schema``) schema.

    Raises ``FileNotFoundError``, ``CheckpointError`` for a foreign or broken file and
    ``SchemaMismatchError`` when it was trained under another state schema.
    """
    src = checkpoint_file(path)
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
    if check_schema:
        require_schema(
            src,
            ckpt.get("schema_fingerprint"),
            ckpt.get("schema_version"),
            "Retrain on a dataset of the installed schema.",
        )
    return ckpt


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    map_location: str | torch.device = "cpu",
    check_schema: bool = True,
) -> tuple[PolicyNetwork, dict[str, Any]]:
    """Read ``policy_best.pt`` safely (``weights_only=True``); return the model (eval mode) and
    the whole checkpoint dict (``state_dict``, ``hparams``, ``config``, ``metrics``, schema keys).

    The network class is the checkpoint's ``architecture`` (``"mlp"`` when absent); building it
    leaves torch's global RNG as it was. Raises
    ``FileNotFoundError``, ``CheckpointError`` for a foreign or broken file (or an architecture
    that is not registered in this process) and ``SchemaMismatchError`` when it was trained
    under another state schema (``check_schema``).
    """
    src = Path(path)
    ckpt = read_checkpoint(src, map_location=map_location, check_schema=check_schema)
    name = ckpt.get("architecture", DEFAULT_ARCHITECTURE)
    try:
        # building the network draws initial weights: from a forked RNG, not the caller's
        with torch.random.fork_rng(devices=[]):
            model = get_architecture(str(name))(**ckpt["hparams"])
        model.load_state_dict(ckpt["state_dict"])
    except ArchitectureError as exc:
        raise CheckpointError(f"{src}: {exc}") from None
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{src}: the network cannot be rebuilt: {exc}") from None
    model.to(map_location)
    model.eval()
    return model, ckpt
