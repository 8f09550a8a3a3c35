"""The model in service of ``otonom-train retrain`` and the symbols a retrain trains on.

``service_model``: the version a model folder serves (``latest``, else ``default``), with when
it was trained and on which symbols and dates (its ONNX metadata and ``metadata.json``).
``choose_symbols``: the symbols of a retrain given none, never a synthetic market generated
beside real data. ``serving_note``: whether the strategy's RL analyst serves another model
than the folder a retrain promotes into. ``RetrainError``: the retrain's error class.
Importing this module imports neither torch nor the store.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from otonom_trainer._errors import OtonomTrainerError
from otonom_trainer.config import DEMO_SYMBOLS

if TYPE_CHECKING:
    from otonom_runtime.strategy import StrategyConfig

__all__ = [
    "RetrainError",
    "ServiceModel",
    "choose_symbols",
    "service_model",
    "serving_note",
]


class RetrainError(OtonomTrainerError, ValueError):
    """A retrain setting, or the model in service it reads, that cannot be used."""


@dataclass(frozen=True)
class ServiceModel:
    """The model in service: its version folder's name, when it was trained
    (``otonom.created_at``), its training data's first and last day (None: unknown) and the
    symbols of its training dataset (empty: unknown)."""

    version: str
    created_at: dt.datetime
    train_start: dt.date | None
    train_end: dt.date | None
    symbols: tuple[str, ...] = ()


def service_model(model_dir: str | Path) -> ServiceModel | None:
    """The model ``load_rl_policy(model_dir)`` serves (``registry.current_version``), read
    from its ONNX metadata and ``metadata.json``; None when nothing is in service."""
    from otonom_trainer.registry import current_version

    version = current_version(model_dir)
    return None if version is None else _version_model(version)


def _version_model(version: Path) -> ServiceModel:
    """The ``ServiceModel`` of a version folder (its ``policy_best.onnx`` and
    ``metadata.json``)."""
    from otonom_runtime import PolicyError
    from otonom_runtime.integrity import scan_model
    from otonom_runtime.policy import MODEL_FILENAME
    from otonom_trainer.registry import trained_period, trained_symbols

    onnx = version / MODEL_FILENAME
    try:
        meta = scan_model(onnx.read_bytes(), onnx).metadata
        created = dt.datetime.fromisoformat(meta["otonom.created_at"].replace("Z", "+00:00"))
    except (OSError, PolicyError, KeyError, ValueError) as exc:
        raise RetrainError(
            f"cannot read when the model in service {onnx} was trained ({exc}); expected a "
            "model exported by otonom-train with its otonom.created_at metadata"
        ) from None
    start, end = trained_period(version)
    return ServiceModel(version.name, created, start, end, trained_symbols(version))


def _model_symbols(model_dir: str | Path, strategy: StrategyConfig) -> tuple[tuple[str, ...], str]:
    """The training symbols of the model in service, else of the strategy's RL model (when on
    and exported by otonom-train), and where they come from; ``((), "")`` for neither."""
    from otonom_trainer.registry import trained_symbols

    model = service_model(model_dir)
    if model is not None and model.symbols:
        return model.symbols, f"the training symbols of {model.version}, the model in service"
    rl = strategy.ensemble.rl_policy
    served = rl.model_file if rl.enabled else None
    if served is not None:
        trained = trained_symbols(served.parent)
        if trained:
            return trained, f"the training symbols of {served.parent}, the strategy's RL model"
    return (), ""


def serving_note(model_dir: str | Path, strategy: StrategyConfig) -> str | None:
    """A note when the strategy's RL analyst serves another model than ``model_dir``'s version
    in service (its ``model_path`` names a version, a file or another folder): a model the
    retrain promotes under ``model_dir`` does not reach the strategy's daemon. None otherwise
    (the RL analyst off, or the same version)."""
    from otonom_trainer.registry import current_version

    rl = strategy.ensemble.rl_policy
    if not rl.enabled or rl.model_file is None:
        return None
    version = current_version(model_dir)
    if version is not None and version.resolve() == rl.model_file.parent.resolve():
        return None
    return (
        f"note: strategy {strategy.name} serves {rl.model_file} (model_path {rl.model_path!r}), "
        f"not the version in service under {model_dir}: a model promoted there reaches its "
        f"daemon only when model_path names {model_dir}"
    )


def choose_symbols(
    model_dir: str | Path, strategy: StrategyConfig, database_url: str | None
) -> tuple[tuple[str, ...], str]:
    """The symbols a retrain trains on when none are given, and where they come from, the
    first that gives any: the training symbols of the model in service (``service_model``); of
    the model the strategy's RL analyst serves (its ``model_path``, when it resolves to another
    version); the symbols of the strategy's live decisions in the store (its daemon's); the
    synthetic market's ``DEMO_SYMBOLS``. Where the symbols chosen are ``DEMO-*`` names the
    store lacks and it holds real data, ``RetrainError`` asks for ``--symbol`` instead: a
    retrain never generates a synthetic market beside real data."""
    from otonom_runtime import StoreError
    from otonom_runtime.cli import require_store
    from otonom_runtime.store import get_session, list_symbols
    from otonom_runtime.store.ticks import live_symbols

    model_symbols, origin = _model_symbols(model_dir, strategy)
    try:
        url = require_store(database_url)
    except StoreError:  # no store yet: the pipeline makes the synthetic market in a new one
        return model_symbols or DEMO_SYMBOLS, origin or "the synthetic market (no store yet)"
    with get_session(url) as session:
        live = tuple(live_symbols(session, strategy.name))
        stored = list_symbols(session)
    real = [s.name for s in stored if not s.is_synthetic]
    if not model_symbols and live:
        return live, f"the symbols of strategy {strategy.name}'s live decisions"
    chosen = model_symbols or DEMO_SYMBOLS
    made = [s for s in chosen if s.startswith("DEMO-") and s not in {i.name for i in stored}]
    if made and real:  # the pipeline would make a synthetic market beside real data
        shown = ", ".join(real[:5]) + (f" and {len(real) - 5} more" if len(real) > 5 else "")
        given = (
            f"{origin}, are synthetic ({', '.join(made)}) and not in the store"
            if origin
            else f"neither a model nor live decisions of strategy {strategy.name} name any, and "
            f"the default is the synthetic market ({', '.join(made)})"
        )
        raise RetrainError(
            f"no symbols given; {given}: a retrain would generate them beside the store's real "
            f"data ({shown}); expected the symbols to train on with --symbol"
        )
    return chosen, origin or "the synthetic market (the store holds no real data)"
