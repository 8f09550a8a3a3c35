"""Where a model lives: the file names of a model folder and the pointer files (``latest``,
``default``) that name its versions; ``resolve_model_path`` turns what a user passes into the
``.onnx`` file. Only pointer files are read here."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Final

from otonom_runtime._errors import PolicyError
from otonom_runtime._text import counted

__all__ = [
    "CHECKPOINT_FILENAME",
    "DEFAULT_POINTER",
    "LATEST_POINTER",
    "MODEL_FILENAME",
    "TRAINING_RECORD",
    "resolve_model_path",
    "resolve_version_dir",
]

logger = logging.getLogger("otonom_runtime.policy")  # one logger for the whole loader

MODEL_FILENAME: Final = "policy_best.onnx"
"""The model a model folder holds."""
CHECKPOINT_FILENAME: Final = "policy_best.pt"
"""The trainer's PyTorch checkpoint (never loaded here: it stands for the ``.onnx`` beside it)."""
LATEST_POINTER: Final = "latest"
"""A file in a model folder holding the name of the promoted sub-folder (versioned exports)."""
DEFAULT_POINTER: Final = "default"
"""A file in a model folder naming the sub-folder to use while nothing is promoted (the
repository's shipped default model; ``latest``, when present, wins)."""
TRAINING_RECORD: Final = "metadata.json"
"""The trainer's record of the training run, beside the checkpoint and its export."""


def _listing(folder: Path) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    if not names:
        return "it is empty"
    shown = ", ".join(names[:20])
    more = f" (+{len(names) - 20} more)" if len(names) > 20 else ""
    return f"it holds: {shown}{more}"


def _unpromoted(folder: Path) -> str:
    """For a model folder with no pointer: its trained versions (sub-folders holding a model)
    and how to serve one, or "" when it has none."""
    if not folder.is_dir():
        return ""
    versions = sorted(d.name for d in folder.iterdir() if (d / MODEL_FILENAME).is_file())
    if not versions:
        return ""
    newest = versions[-1]
    return (
        f"{folder} holds {counted(len(versions), 'trained version')} "
        f"(newest {newest}) but none is promoted (no {LATEST_POINTER!r} file; the production "
        f"gate refused it, or it was trained without promotion): pass the version's folder "
        f"({folder / newest}) to serve it anyway, or promote it when it passes: otonom-train "
        f"check {folder / newest} --strategy-path FILE --promote"
    )


def _pointer(folder: Path) -> Path | None:
    """The pointer file ``folder`` follows: ``latest`` when present, else ``default``."""
    for name in (LATEST_POINTER, DEFAULT_POINTER):
        if (folder / name).is_file():
            return folder / name
    return None


def _follow(pointer: Path) -> Path:
    folder = pointer.parent
    target = pointer.read_text(encoding="utf-8").strip()
    if not target or Path(target).is_absolute() or ".." in Path(target).parts:
        raise PolicyError(
            f"{pointer} holds {target!r}; expected the name of a sub-folder of {folder} "
            "(a relative path without '..')"
        )
    sub = folder / target
    if not sub.is_dir():
        raise PolicyError(
            f"{pointer} points to {target!r} but {sub} is not a folder; {_listing(folder)}"
        )
    return sub


def resolve_version_dir(folder: str | os.PathLike[str]) -> Path | None:
    """The version sub-folder a versioned model folder stands for, by its pointer files: the
    one ``folder/latest`` names (the promoted version), else the one ``folder/default`` names
    (the shipped default), else None. Only the pointers are read.

    The rule ``load_rl_policy`` follows (after a model of the folder's own, which wins) and the
    trainer's registry uses. Raises ``PolicyError`` for a pointer that names no sub-folder.
    """
    pointer = _pointer(Path(folder))
    return None if pointer is None else _follow(pointer)


def resolve_model_path(path: str | os.PathLike[str]) -> Path:
    """The ``.onnx`` file that ``path`` stands for (see ``load_rl_policy``); nothing is read
    but pointer files.

    Raises ``PolicyError`` when there is none, saying what was found and what was expected.
    """
    p = Path(path)
    if p.suffix == ".pt":
        onnx_path = p.with_suffix(".onnx")
        pointer = _pointer(p.parent)
        if not onnx_path.is_file() and not p.exists() and pointer is not None:
            # the guide's "models/rl_bc/policy_best.pt" in a versioned model folder: the
            # promoted (else the default) version's export
            onnx_path = _follow(pointer) / onnx_path.name
            logger.info("%s: following %s to %s", p, pointer, onnx_path)
        if not onnx_path.is_file():
            if p.exists():
                step = (
                    f"export it: otonom-train export --checkpoint {p}, or pass the path of "
                    "an .onnx file"
                )
            elif pointer is None and (versions := _unpromoted(p.parent)):
                step = f"{p} does not exist either; {versions}"
            else:
                step = (
                    f"{p} does not exist either: train a model first (otonom-train train "
                    f"--dataset FILE.npz --output {p.parent}), or pass an existing .onnx file "
                    "or model folder"
                )
            raise PolicyError(
                f"there is no ONNX model for {p}: the runtime never loads PyTorch checkpoints, "
                f"it loads the ONNX export beside one, and there is no {onnx_path}; {step}"
            )
        logger.info("%s is a PyTorch checkpoint: loading the ONNX export %s", p, onnx_path)
        return onnx_path
    if p.is_dir():
        own = p / MODEL_FILENAME
        pointer = _pointer(p)
        if own.is_file():
            # a folder holding a model is that model (what `otonom-train train --output DIR`
            # writes); its pointers, if any, are for folders that hold only versions
            if pointer is not None:
                logger.warning(
                    "%s holds %s and a %r pointer: using %s (the %s version is used once the "
                    "folder holds no %s of its own)",
                    p,
                    MODEL_FILENAME,
                    pointer.name,
                    own,
                    "promoted" if pointer.name == LATEST_POINTER else "default",
                    MODEL_FILENAME,
                )
            return own
        folder = _follow(pointer) if pointer is not None else p
        model = folder / MODEL_FILENAME
        if not model.is_file():
            via = f" (followed {pointer})" if pointer is not None else ""
            checkpoint = folder / CHECKPOINT_FILENAME
            versions = "" if pointer is not None else _unpromoted(folder)
            step = (
                f" Its checkpoint is not exported: otonom-train export --checkpoint {checkpoint}"
                if checkpoint.is_file()
                else (f" {versions[0].upper()}{versions[1:]}" if versions else "")
            )
            raise PolicyError(
                f"model folder {folder}{via} has no {MODEL_FILENAME}; {_listing(folder)}. "
                f"Expected {MODEL_FILENAME} (+ its .sha256 sidecar), or a {LATEST_POINTER!r} "
                f"or {DEFAULT_POINTER!r} file naming a sub-folder that holds one.{step}"
            )
        return model
    if not p.exists():
        raise PolicyError(
            f"model path {p} does not exist; expected a .onnx file, a model folder holding "
            f"{MODEL_FILENAME} (or a {LATEST_POINTER!r} / {DEFAULT_POINTER!r} pointer), or a "
            f"{CHECKPOINT_FILENAME} path with the .onnx export beside it"
        )
    if not p.is_file():
        raise PolicyError(f"model path {p} is not a regular file or folder")
    return p
