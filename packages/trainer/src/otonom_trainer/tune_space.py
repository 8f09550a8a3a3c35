"""What ``otonom-train tune`` searches: the guide's hyperparameter knobs, their ranges, and the
size-based defaults a study starts from (its trial 0).

The guide ("Training Configuration", "Hyperparameter Tuning") gives the knobs and, for the
batch size and the hidden width, a default by dataset size (``SIZE_TABLE``)::

    rows            batch size (trial 0; searched)    hidden width (trial 0; searched)
    < 5,000         64   (32, 64, 128)                 64   (32, 64, 128)
    5,000-50,000    256  (128, 256, 512)               128  (64, 128, 256)
    > 50,000        512  (256, 512, 1024)              256  (128, 256, 512)

``SearchSpace`` holds one entry per knob: a range ``(low, high)`` (``lr`` and ``weight_decay``
on a log scale; ``dropout`` linear; ``num_layers``, ``max_epochs`` and ``patience`` integers)
or a tuple of choices (``hidden_dim``, ``batch_size``, ``class_balance``, ``optimizer``);
``None`` leaves a knob at the base configuration's value. ``SearchSpace.for_rows(n)`` is the
default space of a dataset of ``n`` rows; ``first_params`` is trial 0: the size table's batch
size and width, the base configuration's value of every other knob, each moved to the nearest
value the space allows. A space file (``--space FILE.yaml``) changes some entries::

    lr: [1.0e-4, 3.0e-2]      # a range
    hidden_dim: [32, 64]      # choices
    class_balance: null       # not tuned

Importing this module imports neither torch nor optuna.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from otonom_runtime.config_rules import Validated, rule
from otonom_trainer._errors import OtonomTrainerError
from otonom_trainer.config import (
    BALANCE_MODES,
    OPTIMIZERS,
    ConfigError,
    TrainingConfig,
    read_flat_yaml,
)

if TYPE_CHECKING:
    import optuna

__all__ = [
    "LOG_KNOBS",
    "SIZE_TABLE",
    "SearchSpace",
    "SizeRow",
    "TuneError",
    "size_row",
]


class TuneError(OtonomTrainerError, ValueError):
    """A tuning option, search space or study that cannot be used; the message names it."""


class SizeRow(NamedTuple):
    """One row of the guide's size table: datasets of fewer than ``below`` rows (None: any)."""

    below: int | None
    name: str
    batch_size: int
    hidden_dim: int
    batch_choices: tuple[int, ...]
    width_choices: tuple[int, ...]


SIZE_TABLE: Final = (
    SizeRow(5_000, "small (< 5,000 rows)", 64, 64, (32, 64, 128), (32, 64, 128)),
    SizeRow(50_000, "medium (5,000-50,000 rows)", 256, 128, (128, 256, 512), (64, 128, 256)),
    SizeRow(None, "large (> 50,000 rows)", 512, 256, (256, 512, 1024), (128, 256, 512)),
)
"""The guide's batch size and hidden width by dataset size: trial 0 and the searched choices."""

LOG_KNOBS: Final = ("lr", "weight_decay")
"""The knobs searched on a log scale."""
_INT_RANGES: Final = ("num_layers", "max_epochs", "patience")
_CHOICES: Final = ("hidden_dim", "batch_size", "class_balance", "optimizer")


def size_row(n_rows: int) -> SizeRow:
    """The row of ``SIZE_TABLE`` for a dataset of ``n_rows`` rows."""
    return next(r for r in SIZE_TABLE if r.below is None or n_rows < r.below)


def _range_ok(log: bool, ints: bool) -> dict[str, Any]:
    def ok(v: tuple[float, float]) -> bool:
        return v[0] <= v[1] and (v[0] > 0 if log else v[0] >= 0)

    low = "0 < low" if log else "0 <= low"
    kind = "integers" if ints else "numbers"
    scale = ", log scale" if log else ""
    return rule(test=ok, described=f"[low, high] ({kind}{scale}) with {low} <= high, or null")


def _choices_ok(allowed: tuple[str, ...] | None = None) -> dict[str, Any]:
    def ok(v: tuple[Any, ...]) -> bool:
        fine = all(c >= 1 for c in v) if allowed is None else all(c in allowed for c in v)
        return bool(v) and len(set(v)) == len(v) and fine

    what = "integers >= 1" if allowed is None else "of " + ", ".join(allowed)
    return rule(test=ok, described=f"a non-empty list of distinct {what}, or null")


@dataclass(frozen=True)
class SearchSpace(Validated):
    """The knobs a study tunes (see the module docstring); ``None``: not tuned. The defaults
    are the space of a medium dataset (``for_rows`` picks the batch size and width choices by
    size)."""

    lr: tuple[float, float] | None = field(default=(1e-4, 1e-2), metadata=_range_ok(True, False))
    weight_decay: tuple[float, float] | None = field(
        default=(1e-6, 1e-3), metadata=_range_ok(True, False)
    )
    dropout: tuple[float, float] | None = field(
        default=(0.0, 0.4), metadata=_range_ok(False, False)
    )
    num_layers: tuple[int, int] | None = field(default=(1, 4), metadata=_range_ok(False, True))
    hidden_dim: tuple[int, ...] | None = field(default=(64, 128, 256), metadata=_choices_ok())
    batch_size: tuple[int, ...] | None = field(default=(128, 256, 512), metadata=_choices_ok())
    max_epochs: tuple[int, int] | None = field(default=(10, 40), metadata=_range_ok(False, True))
    patience: tuple[int, int] | None = field(default=(3, 10), metadata=_range_ok(False, True))
    class_balance: tuple[str, ...] | None = field(
        default=BALANCE_MODES, metadata=_choices_ok(BALANCE_MODES)
    )
    optimizer: tuple[str, ...] | None = field(default=OPTIMIZERS, metadata=_choices_ok(OPTIMIZERS))

    _error_class = TuneError

    @classmethod
    def for_rows(cls, n_rows: int) -> SearchSpace:
        """The default space of a dataset of ``n_rows`` rows (the size table's choices)."""
        row = size_row(n_rows)
        return cls(hidden_dim=row.width_choices, batch_size=row.batch_choices)

    def knobs(self) -> dict[str, tuple[Any, ...]]:
        """The tuned knobs: name -> range or choices, in declaration order."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) is not None
        }

    def to_dict(self) -> dict[str, list[Any] | None]:
        """Knob -> list (range or choices) or None: YAML- and JSON-safe."""
        return {
            f.name: None if getattr(self, f.name) is None else list(getattr(self, f.name))
            for f in dataclasses.fields(self)
        }

    def replace(self, **changes: Any) -> SearchSpace:
        """A copy with ``changes`` applied, validated again."""
        return dataclasses.replace(self, **changes)

    def check_against(self, base: TrainingConfig) -> None:
        """``TuneError`` unless every end of every range and every choice is a value
        ``TrainingConfig`` takes (``dropout`` below 1, ...)."""
        for name, values in self.knobs().items():
            for value in values:
                try:
                    base.replace(**{name: value})
                except ConfigError as exc:
                    raise TuneError(f"search space {name}: {exc}") from None

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """The trial's value of every tuned knob (optuna's ``suggest_*``)."""
        params: dict[str, Any] = {}
        for name, values in self.knobs().items():
            if name in _CHOICES:
                params[name] = trial.suggest_categorical(name, list(values))
            elif name in _INT_RANGES:
                params[name] = trial.suggest_int(name, int(values[0]), int(values[1]))
            else:
                low, high = float(values[0]), float(values[1])
                params[name] = trial.suggest_float(name, low, high, log=name in LOG_KNOBS)
        return params

    def first_params(self, base: TrainingConfig, n_rows: int) -> dict[str, Any]:
        """Trial 0: the size table's batch size and width for ``n_rows``, ``base``'s value of
        every other knob; each tuned knob moved to the nearest value the space allows."""
        row = size_row(n_rows)
        wanted = {**base.to_dict(), "batch_size": row.batch_size, "hidden_dim": row.hidden_dim}
        return {name: _nearest(name, wanted[name], v) for name, v in self.knobs().items()}

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], base: SearchSpace) -> SearchSpace:
        """``base`` with the entries of the YAML mapping at ``path`` (``knob: [..]`` or
        ``knob: null``). A problem names the file and line (``space.yaml:2: lr: got ...``)."""
        names = [f.name for f in dataclasses.fields(cls)]

        def build(data: Mapping[str, Any]) -> SearchSpace:
            for key in data:
                if key not in names:
                    raise TuneError(f"{key}: not a knob; expected one of {', '.join(names)}")
            return base.replace(**{str(k): _numbers(v) for k, v in data.items()})

        return read_flat_yaml(path, "search space", "knobs to lists", TuneError, build)


def _numbers(value: Any) -> Any:
    """A YAML list with numeric text (YAML 1.1 reads ``1e-3`` as text) as numbers."""
    if not isinstance(value, list):
        return value
    out = []
    for v in value:
        try:
            out.append(float(v) if isinstance(v, str) and v.strip() else v)
        except ValueError:
            out.append(v)
    return out


def _nearest(name: str, value: Any, allowed: tuple[Any, ...]) -> Any:
    """``value`` clamped into knob ``name``'s range, or its closest choice (on a log scale;
    the first choice for text)."""
    if name not in _CHOICES:
        low, high = allowed
        return type(low)(min(max(value, low), high))
    if value in allowed:
        return value
    if isinstance(value, str):
        return allowed[0]
    return min(allowed, key=lambda c: abs(math.log(c / value)))
