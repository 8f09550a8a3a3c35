"""Where a strategy's RL model is found: the models root and ``resolve_strategy_model``."""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Final

from otonom_runtime._errors import PolicyError, StrategyError
from otonom_runtime.config_rules import Problem
from otonom_runtime.policy import resolve_model_path

if TYPE_CHECKING:
    from otonom_runtime.strategy._config import RlPolicyConfig

__all__ = ["MODELS_ROOT_ENV", "models_root", "resolve_strategy_model"]

MODELS_ROOT_ENV: Final = "OTONOM_MODELS_ROOT"
"""The environment variable naming the models root (an absolute folder) for every strategy;
unset, the root is found from the strategy file (see ``models_root``)."""
_MODELS_DIR: Final = "models"
_MODEL_SUFFIX: Final = ".onnx"


def _world_writable(folder: Path) -> bool:
    try:
        return bool(folder.stat().st_mode & stat.S_IWOTH)
    except OSError:
        return True  # unknown: not trusted as a root either


def _root_from_env() -> Path | None:
    value = os.environ.get(MODELS_ROOT_ENV, "")
    if not value:
        return None
    given = Path(value).expanduser()
    if not given.is_absolute():
        raise StrategyError(
            f"{MODELS_ROOT_ENV}={value!r} is a relative path; expected the absolute path of "
            "the folder that holds the models (or unset it to use the project root found from "
            "the strategy file)"
        )
    if not given.is_dir():
        raise StrategyError(
            f"{MODELS_ROOT_ENV}={value!r} is not a folder; expected an existing folder that "
            "holds the models (or unset it)"
        )
    return given.resolve()


_WHAT: Final = (
    "a .onnx file, a model folder or a policy_best.pt path with the .onnx export beside it"
)


def models_root(base_dir: str | os.PathLike[str] | None) -> Path:
    """The folder a strategy's model paths resolve against and must stay inside (resolved,
    absolute).

    ``$OTONOM_MODELS_ROOT`` when set (an absolute folder); else the nearest of ``base_dir``
    (the strategy file's folder; the working directory for a mapping parsed without one) and
    its ancestors that holds a ``models/`` folder: the project root, so
    ``strategies/ensemble_rl_v1.yaml``'s ``models/rl_bc`` is the project's ``models/rl_bc``
    whatever the working directory. The climb stops below a folder anyone may write to (such
    as ``/tmp``), where anyone could plant a ``models/``. With no such ancestor the root is
    ``base_dir`` itself. Raises ``StrategyError`` for a relative or missing
    ``$OTONOM_MODELS_ROOT``.
    """
    return _find_root(base_dir)[0]


def _find_root(base_dir: str | os.PathLike[str] | None) -> tuple[Path, str]:
    """``models_root(base_dir)`` and how it was found (for messages)."""
    env = _root_from_env()
    if env is not None:
        return env, f"from {MODELS_ROOT_ENV}"
    start = (Path.cwd() if base_dir is None else Path(base_dir)).resolve()
    for folder in (start, *start.parents):
        if folder != start and _world_writable(folder):
            break
        if (folder / _MODELS_DIR).is_dir():
            return folder, f"the nearest folder holding {_MODELS_DIR}/, from {start}"
    what = "the working directory" if base_dir is None else "the strategy's folder"
    return start, f"{what}: no folder up from it holds {_MODELS_DIR}/"


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def resolve_strategy_model(
    model_path: str | os.PathLike[str], base_dir: str | os.PathLike[str] | None
) -> Path:
    """The ``.onnx`` file a strategy's ``ensemble.rl_policy.model_path`` stands for (absolute,
    symlinks resolved); nothing is read but pointer files.

    A relative ``model_path`` resolves against ``models_root(base_dir)``, never the working
    directory (unless that is ``base_dir``); an absolute one must be inside that root. It may
    name what ``otonom_runtime.policy.resolve_model_path`` accepts: a ``.onnx`` file, a model
    folder (its ``latest`` / ``default`` pointer), or a ``policy_best.pt`` path standing for
    the ``.onnx`` export beside it (or the promoted version's). After symlinks are resolved the
    model must still be inside the root (no ``..`` or symlink leads out of it) and be a regular
    ``*.onnx`` file. ``load_rl_policy(path)`` called directly keeps ordinary path rules.

    Raises ``StrategyError`` saying what was given, the root, and how to set another root
    (``$OTONOM_MODELS_ROOT``).
    """
    try:
        root, how = _find_root(base_dir)
    except StrategyError as exc:  # a bad $OTONOM_MODELS_ROOT
        message = f"received {str(model_path)!r}, which resolves to no model: {exc}"
        raise StrategyError(message, [message]) from None
    given = Path(model_path).expanduser()

    def refuse(problem: str, says_what: bool = False) -> StrategyError:
        # ``says_what``: the problem already says what a model path may name
        what = "it" if says_what else _WHAT
        message = (
            f"received {str(model_path)!r}, which resolves to no model: {problem}; "
            f"expected {what} inside the models root {root} ({how}), which a relative path "
            f"resolves against; to use another root set {MODELS_ROOT_ENV}=/absolute/folder"
        )
        return StrategyError(message, [message])

    candidate = given if given.is_absolute() else root / given
    try:
        lexical = candidate.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise refuse(f"{candidate} cannot be resolved ({exc})") from None
    if not _inside(lexical, root):  # before anything outside is looked at
        real_as = "" if lexical == candidate else f" (that is {lexical})"
        raise refuse(f"{candidate}{real_as} is outside the models root")
    try:
        found = resolve_model_path(candidate)
    except PolicyError as exc:  # its message says what a model path may name
        raise refuse(str(exc), says_what=True) from None
    except (OSError, ValueError) as exc:  # an unreadable or binary latest/default pointer
        raise refuse(f"{candidate}: its pointer file cannot be read ({exc})") from None
    try:
        real = found.resolve(strict=True)
        mode = real.stat().st_mode
    except (OSError, RuntimeError) as exc:  # a dangling or looping symlink
        raise refuse(f"{found} cannot be resolved ({exc})") from None
    if not _inside(real, root):
        real_as = "" if real == found else f" (that is {real})"
        raise refuse(f"{found}{real_as} is outside the models root")
    if not stat.S_ISREG(mode):
        raise refuse(f"{real} is not a regular file; expected a {_MODEL_SUFFIX} model file")
    if real.suffix != _MODEL_SUFFIX:
        raise refuse(f"{real} is not a {_MODEL_SUFFIX} file; expected an ONNX model")
    return real


def resolve_rl(
    rl: RlPolicyConfig, base_dir: Path | None, problems: list[Problem]
) -> RlPolicyConfig:
    """``rl`` with ``model_file`` set (when enabled), or ``rl`` after adding a problem."""
    key = "ensemble.rl_policy.model_path"
    if not rl.enabled:
        return rl
    if rl.model_path is None:
        problems.append(
            Problem(
                key,
                "missing; a model path is required when ensemble.rl_policy.enabled is true "
                "(a .onnx file, a model folder or a policy_best.pt path)",
            )
        )
        return rl
    try:
        return dataclasses.replace(rl, model_file=resolve_strategy_model(rl.model_path, base_dir))
    except StrategyError as exc:
        problems.append(
            Problem(
                key,
                f"{exc} (required while ensemble.rl_policy.enabled is true)",
            )
        )
    return rl
