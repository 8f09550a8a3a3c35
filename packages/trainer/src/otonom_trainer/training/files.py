"""The training's input files found before torch is imported: a missing dataset or checkpoint
is a one-line error at once, not after the seconds torch's import takes.

``dataset_file`` and ``checkpoint_file`` return the path when it is a file and raise
``FileNotFoundError`` (its message names the file and where the path came from) when not.
``checkpoint.read_checkpoint`` calls ``checkpoint_file`` too: the message is written here
only.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["checkpoint_file", "dataset_file"]


def dataset_file(path: str | os.PathLike[str], source: str) -> Path:
    """``path`` when it is a file; else ``FileNotFoundError`` naming it and ``source`` (where
    the path was given: a flag, or a config file's key)."""
    src = Path(path)
    if not src.is_file():
        raise FileNotFoundError(f"no dataset file at {src} ({source})")
    return src


def checkpoint_file(path: str | os.PathLike[str]) -> Path:
    """``path`` when it is a file; else ``FileNotFoundError`` naming it and the command that
    writes a checkpoint."""
    src = Path(path)
    if not src.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {src}; `otonom-train train --dataset FILE.npz --output FOLDER` "
            "writes FOLDER/policy_best.pt"
        )
    return src
