"""``TrainingConfig``: every knob of behaviour-cloning training, validated in one place.

The configuration is a frozen dataclass. Its constructor only stores the values; ``__post_init__``
then walks one table of rules (``_RULES``) that coerces and checks every field, plus the few
rules that join two fields (``_CROSS_RULES``). A bad value raises ``ConfigError`` (a
``ValueError``) that names the field, what was received and what was expected::

    ConfigError: batch_size: got 0; expected an integer >= 1

Each field carries its command-line flag and help text in its dataclass metadata;
``config_fields()`` lists them so that a command line can make one flag per field (the guide's
``--dataset``, ``--output`` and ``--epochs`` included) without repeating defaults or help.

Importing this module does not import torch.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from otonom_trainer._errors import OtonomTrainerError
from otonom_trainer.architectures import (
    DEFAULT_ARCHITECTURE,
    is_architecture,
)

__all__ = [
    "BALANCE_MODES",
    "DEVICES",
    "OPTIMIZERS",
    "SPLITS",
    "ConfigError",
    "ConfigField",
    "TrainingConfig",
    "config_fields",
]

OPTIMIZERS: Final = ("adam", "adamw")
BALANCE_MODES: Final = ("none", "weighted", "oversample", "focal")
SPLITS: Final = ("time", "random")
DEVICES: Final = ("auto", "cpu", "cuda")
_CUDA_INDEX = re.compile(r"cuda:\d+")


class ConfigError(OtonomTrainerError, ValueError):
    """A configuration value (or file) is invalid; the message names the field."""


def _meta(help_text: str, flag: str | None = None) -> dict[str, str]:
    return {"help": help_text, **({"flag": flag} if flag else {})}


@dataclass(frozen=True)
class TrainingConfig:
    """Behaviour-cloning training configuration (see the guide, "Training Configuration").

    The loss, per batch of rows ``i`` with predicted logits ``z_i``, predicted strength ``s_i``,
    target action ``y_i`` and target strength ``t_i``::

        L = alpha * L_action + beta * L_strength + logit_penalty * mean_i,k z_ik^2

        L_action   = sum_i w[y_i] * CE(z_i, y_i) / sum_i w[y_i]     (w = 1 unless "weighted")
                   or mean_i (1 - p_i)^gamma * CE(z_i, y_i)           (class_balance = "focal",
                                                                       p_i = softmax(z_i)[y_i])
        L_strength = mean over BUY/SELL rows of (s_i - t_i)^2        (0 if the batch has none)

    ``class_balance`` picks exactly one way to handle imbalanced actions: ``"none"``,
    ``"weighted"`` (``w[c] = total / (3 * count[c])`` over the train split), ``"oversample"``
    (each epoch draws train rows with probability proportional to ``1 / count[class]``, with
    replacement) or ``"focal"`` (focusing parameter ``focal_gamma``).

    Float fields also accept numeric strings, because YAML 1.1 reads ``1e-3`` as a string.
    ``dataset_path`` and ``output_dir`` are kept as strings (relative to the working directory).
    """

    dataset_path: str = field(metadata=_meta("offline dataset (.npz)", "--dataset"))
    output_dir: str = field(
        default="models/rl_bc",
        metadata=_meta("folder for policy_best.pt, metadata.json, history and plots", "--output"),
    )
    batch_size: int = field(default=256, metadata=_meta("rows per gradient step"))
    lr: float = field(default=1e-3, metadata=_meta("learning rate"))
    max_epochs: int = field(default=20, metadata=_meta("maximum epochs", "--epochs"))
    model: str = field(
        default=DEFAULT_ARCHITECTURE,
        metadata=_meta(
            "network architecture, a name of otonom_trainer.architectures ('mlp': the guide's "
            "PolicyNet, shaped by hidden_dim, num_layers and dropout)",
            "--architecture",
        ),
    )
    hidden_dim: int = field(default=128, metadata=_meta("width of each hidden layer"))
    num_layers: int = field(default=2, metadata=_meta("number of hidden layers"))
    dropout: float = field(default=0.1, metadata=_meta("dropout after each hidden layer"))
    weight_decay: float = field(default=1e-5, metadata=_meta("optimizer weight decay"))
    alpha: float = field(default=1.0, metadata=_meta("weight of the action (cross-entropy) loss"))
    beta: float = field(default=1.0, metadata=_meta("weight of the strength (MSE) loss"))
    logit_penalty: float = field(
        default=0.0,
        metadata=_meta(
            "weight of the mean squared action logit added to the loss (0 = off; d3rlpy's "
            "DiscreteBC uses 0.5)"
        ),
    )
    optimizer: str = field(default="adam", metadata=_meta("optimizer: adam or adamw"))
    class_balance: str = field(
        default="none",
        metadata=_meta("class imbalance handling: none, weighted, oversample or focal"),
    )
    focal_gamma: float = field(
        default=2.0, metadata=_meta("focusing parameter of the focal loss (class_balance=focal)")
    )
    val_fraction: float = field(default=0.1, metadata=_meta("share of rows held out"))
    split: str = field(
        default="time",
        metadata=_meta("validation split: time (the latest dates) or random rows"),
    )
    patience: int = field(
        default=5, metadata=_meta("early stopping: epochs without val-loss progress (0 = off)")
    )
    lr_plateau_patience: int = field(
        default=2,
        metadata=_meta("epochs without val-loss progress before the lr is reduced (0 = off)"),
    )
    lr_plateau_factor: float = field(
        default=0.5, metadata=_meta("factor applied to the lr on a plateau")
    )
    grad_clip: float = field(
        default=1.0, metadata=_meta("clip the gradient's total L2 norm to this (0 = off)")
    )
    seed: int = field(default=42, metadata=_meta("random seed (split, init, batches, dropout)"))
    device: str = field(
        default="auto", metadata=_meta("auto (cuda when available, else cpu), cpu, cuda or cuda:N")
    )
    tensorboard: bool = field(
        default=False,
        metadata=_meta("write TensorBoard event logs (needs the tensorboard package)"),
    )
    progress: bool = field(
        default=True,
        metadata=_meta("show a progress bar within epochs when the train split is large"),
    )

    def __post_init__(self) -> None:
        for name, rule in _RULES.items():
            object.__setattr__(self, name, rule.apply(name, getattr(self, name)))
        for check, message in _CROSS_RULES:
            if not check(self):
                raise ConfigError(message(self))

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], overrides: Mapping[str, Any] | None = None
    ) -> TrainingConfig:
        """Build from a mapping (``overrides`` win); unknown or missing keys are errors."""
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"a training configuration must be a mapping of field names to values; "
                f"got a {type(data).__name__}"
            )
        merged = {**data, **(overrides or {})}
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(str(k) for k in merged if k not in names)
        if unknown:
            raise ConfigError(
                f"unknown configuration key(s) {unknown}; expected some of {', '.join(names)}"
            )
        missing = [
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.name not in merged
        ]
        if missing:
            raise ConfigError(f"missing required configuration key(s) {missing}")
        return cls(**merged)

    @classmethod
    def from_yaml(
        cls, path: str | os.PathLike[str], overrides: Mapping[str, Any] | None = None
    ) -> TrainingConfig:
        """Read a flat YAML mapping of field names (``overrides``, e.g. flags, win)."""
        src = Path(path)
        if not src.is_file():
            raise FileNotFoundError(f"no training configuration file at {src}")
        try:
            data = yaml.safe_load(src.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{src} is not valid YAML: {exc}") from None
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"{src}: expected a mapping of field names to values at the top level; "
                f"got a {type(data).__name__}"
            )
        try:
            return cls.from_dict(data, overrides)
        except ConfigError as exc:
            raise ConfigError(f"{src}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """Field name -> value (str, int, float, bool only): JSON-, YAML- and torch-safe."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def replace(self, **changes: Any) -> TrainingConfig:
        """A copy with ``changes`` applied, validated again."""
        return dataclasses.replace(self, **changes)


# -- the one table of rules ----------------------------------------------------------------


@dataclass(frozen=True)
class _Rule:
    """Coerce a value to ``kind`` and check ``ok``; ``expected`` is the error's wording."""

    kind: type
    expected: str
    ok: Callable[[Any], bool] = lambda _: True

    def apply(self, name: str, value: Any) -> Any:
        coerced = _coerce(self.kind, value)
        if coerced is _BAD or not self.ok(coerced):
            raise ConfigError(f"{name}: got {value!r}; expected {self.expected}")
        return coerced


_BAD: Final = object()


def _coerce(kind: type, value: Any) -> Any:
    if kind is bool:
        return value if isinstance(value, bool) else _BAD
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            return _BAD
        return int(value)
    if kind is float:
        if isinstance(value, bool):
            return _BAD
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                return _BAD
        if not isinstance(value, numbers.Real):
            return _BAD
        out = float(value)
        return out if math.isfinite(out) else _BAD
    if kind is Path:  # a path: str or os.PathLike, kept as a non-empty str
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        return value if isinstance(value, str) and value.strip() else _BAD
    return value if isinstance(value, str) else _BAD


def _choice(options: tuple[str, ...]) -> _Rule:
    return _Rule(str, f"one of {', '.join(repr(o) for o in options)}", lambda v: v in options)


_POS_INT = _Rule(int, "an integer >= 1", lambda v: v >= 1)
_NONNEG_INT = _Rule(int, "an integer >= 0", lambda v: v >= 0)
_NONNEG_FLOAT = _Rule(float, "a finite number >= 0", lambda v: v >= 0.0)
_PATH = _Rule(Path, "a non-empty path (str or os.PathLike)")

_RULES: Final[dict[str, _Rule]] = {
    "dataset_path": _PATH,
    "output_dir": _PATH,
    "batch_size": _POS_INT,
    "lr": _Rule(float, "a finite number > 0", lambda v: v > 0.0),
    "max_epochs": _POS_INT,
    "model": _Rule(
        str,
        "'mlp' or a name registered with otonom_trainer.architectures.register_architecture",
        is_architecture,
    ),
    "hidden_dim": _POS_INT,
    "num_layers": _POS_INT,
    "dropout": _Rule(float, "a number in [0, 1)", lambda v: 0.0 <= v < 1.0),
    "weight_decay": _NONNEG_FLOAT,
    "alpha": _NONNEG_FLOAT,
    "beta": _NONNEG_FLOAT,
    "logit_penalty": _NONNEG_FLOAT,
    "optimizer": _choice(OPTIMIZERS),
    "class_balance": _choice(BALANCE_MODES),
    "focal_gamma": _NONNEG_FLOAT,
    "val_fraction": _Rule(float, "a number in (0, 1)", lambda v: 0.0 < v < 1.0),
    "split": _choice(SPLITS),
    "patience": _NONNEG_INT,
    "lr_plateau_patience": _NONNEG_INT,
    "lr_plateau_factor": _Rule(float, "a number in (0, 1)", lambda v: 0.0 < v < 1.0),
    "grad_clip": _NONNEG_FLOAT,
    "seed": _Rule(int, "an integer in [0, 2**63)", lambda v: 0 <= v < 2**63),
    "device": _Rule(
        str,
        "'auto', 'cpu', 'cuda' or 'cuda:N'",
        lambda v: v in DEVICES or _CUDA_INDEX.fullmatch(v) is not None,
    ),
    "tensorboard": _Rule(bool, "true or false"),
    "progress": _Rule(bool, "true or false"),
}

_CROSS_RULES: Final[
    tuple[tuple[Callable[[TrainingConfig], bool], Callable[[TrainingConfig], str]], ...]
] = (
    (
        lambda c: c.alpha + c.beta > 0.0,
        lambda c: (
            f"alpha and beta: got alpha={c.alpha!r}, beta={c.beta!r}; expected at least one > 0 "
            "(both zero leaves nothing to learn)"
        ),
    ),
)


# -- one flag per field --------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigField:
    """One ``TrainingConfig`` field as a command line sees it."""

    name: str
    flag: str
    kind: type
    default: Any
    required: bool
    choices: tuple[str, ...] | None
    help: str


_CHOICES: Final[dict[str, tuple[str, ...]]] = {
    "optimizer": OPTIMIZERS,
    "class_balance": BALANCE_MODES,
    "split": SPLITS,
}


def config_fields() -> tuple[ConfigField, ...]:
    """The fields in declaration order, each with its flag (``--batch-size``), type and help.

    ``kind`` is ``str``, ``int``, ``float`` or ``bool`` (bool fields suit
    ``argparse.BooleanOptionalAction``); ``required`` is true for ``dataset_path`` only.
    """
    out = []
    for f in dataclasses.fields(TrainingConfig):
        rule = _RULES[f.name]
        required = f.default is dataclasses.MISSING
        out.append(
            ConfigField(
                name=f.name,
                flag=f.metadata.get("flag", "--" + f.name.replace("_", "-")),
                kind=str if rule.kind is Path else rule.kind,
                default=None if required else f.default,
                required=required,
                choices=_CHOICES.get(f.name),
                help=f.metadata["help"],
            )
        )
    return tuple(out)
