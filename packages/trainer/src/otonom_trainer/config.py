"""``TrainingConfig``: every knob of behaviour-cloning training, validated in one place.

The configuration is a frozen dataclass on the project's one validation engine
(``otonom_runtime.config_rules``): each field declares its rule in its metadata, the rule that
joins two fields is a cross check, and ``__post_init__`` coerces and checks every field once. A
bad value raises ``ConfigError`` (a ``ValueError``) that names the field, what was received and
what was expected::

    ConfigError: batch_size: got 0; expected an integer >= 1

Each field carries its command-line flag and help text in its dataclass metadata;
``config_fields()`` lists them so that a command line can make one flag per field (the guide's
``--dataset``, ``--output`` and ``--epochs`` included) without repeating defaults or help.

Importing this module does not import torch.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

import yaml

from otonom_runtime.baseline import default_strategy_path
from otonom_runtime.config_rules import (
    CrossCheck,
    Problem,
    Validated,
    field_specs,
    rule,
    yaml_key_lines,
)
from otonom_trainer._errors import OtonomTrainerError
from otonom_trainer.architectures import (
    DEFAULT_ARCHITECTURE,
    is_architecture,
)

__all__ = [
    "BALANCE_MODES",
    "DAY",
    "DEMO_SYMBOLS",
    "DEVICES",
    "FRACTION",
    "NONNEGATIVE",
    "OPTIMIZERS",
    "POSITIVE_INT",
    "SPLITS",
    "START_BEFORE_END",
    "SYMBOLS",
    "ConfigError",
    "ConfigField",
    "TrainingConfig",
    "WindowedRun",
    "config_fields",
    "read_flat_yaml",
]

OPTIMIZERS: Final = ("adam", "adamw")
BALANCE_MODES: Final = ("none", "weighted", "oversample", "focal")
SPLITS: Final = ("time", "random")
DEVICES: Final = ("auto", "cpu", "cuda")
_CUDA_INDEX = re.compile(r"cuda:\d+")
_T = TypeVar("_T")


class ConfigError(OtonomTrainerError, ValueError):
    """A configuration value (or file) is invalid; the message names the field."""


def _meta(
    checks: dict[str, Any], help_text: str, flag: str | None = None, *aliases: str
) -> dict[str, Any]:
    """A field's metadata: its rule (``otonom_runtime.config_rules``), help, flag and the
    flag's aliases."""
    extra: dict[str, Any] = {"help": help_text, **({"flag": flag} if flag else {})}
    if aliases:
        extra["aliases"] = aliases
    return rule(**checks, **extra)


def _checks(**checks: Any) -> dict[str, Any]:
    return checks


def _one_of(options: tuple[str, ...]) -> str:
    return f"one of {', '.join(repr(o) for o in options)}"


def _is_device(value: str) -> bool:
    return value in DEVICES or _CUDA_INDEX.fullmatch(value) is not None


_ARCHITECTURE: Final = (
    "'mlp', 'multitask', 'attention' or a name registered with "
    "otonom_trainer.architectures.register_architecture"
)
_PATH: Final = "a non-empty path (str or os.PathLike)"
_POS_INT: Final = "an integer >= 1"
_NONNEG_INT: Final = "an integer >= 0"
_NONNEG_FLOAT: Final[dict[str, Any]] = {
    "ge": 0,
    "text_numbers": True,
    "described": "a finite number >= 0",
}


@dataclass(frozen=True)
class TrainingConfig(Validated):
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

    A network with extra heads adds their losses (``otonom_trainer.training.multitask``):
    ``+ return_weight * L_return + risk_weight * L_risk`` for ``"multitask"``; for the others
    (``"mlp"``, ``"attention"``) those two weights have no effect.

    Float fields also accept numeric strings, because YAML 1.1 reads ``1e-3`` as a string.
    ``dataset_path`` and ``output_dir`` are kept as strings (relative to the working directory).
    """

    dataset_path: str = field(
        metadata=_meta(
            _checks(nonempty=True, path=True, described=_PATH),
            "offline dataset (.npz)",
            "--dataset",
        )
    )
    output_dir: str = field(
        default="models/rl_bc",
        metadata=_meta(
            _checks(nonempty=True, path=True, described=_PATH),
            "folder for policy_best.pt, metadata.json, history and plots",
            "--output",
        ),
    )
    batch_size: int = field(
        default=256, metadata=_meta(_checks(ge=1, described=_POS_INT), "rows per gradient step")
    )
    lr: float = field(
        default=1e-3,
        metadata=_meta(
            _checks(gt=0, text_numbers=True, described="a finite number > 0"), "learning rate"
        ),
    )
    max_epochs: int = field(
        default=20, metadata=_meta(_checks(ge=1, described=_POS_INT), "maximum epochs", "--epochs")
    )
    model: str = field(
        default=DEFAULT_ARCHITECTURE,
        metadata=_meta(
            _checks(test=is_architecture, described=_ARCHITECTURE),
            "network architecture, a name of otonom_trainer.architectures ('mlp': the guide's "
            "PolicyNet, shaped by hidden_dim, num_layers and dropout; 'multitask': plus "
            "expected-return and risk heads (a dataset with --horizon labels); 'attention': "
            "softmax attention over the 34 features before the MLP)",
            "--architecture",
            "--model",
        ),
    )
    hidden_dim: int = field(
        default=128, metadata=_meta(_checks(ge=1, described=_POS_INT), "width of each hidden layer")
    )
    num_layers: int = field(
        default=2, metadata=_meta(_checks(ge=1, described=_POS_INT), "number of hidden layers")
    )
    dropout: float = field(
        default=0.1,
        metadata=_meta(
            _checks(ge=0, lt=1, text_numbers=True, described="a number in [0, 1)"),
            "dropout after each hidden layer",
        ),
    )
    weight_decay: float = field(
        default=1e-5, metadata=_meta(_NONNEG_FLOAT, "optimizer weight decay")
    )
    alpha: float = field(
        default=1.0, metadata=_meta(_NONNEG_FLOAT, "weight of the action (cross-entropy) loss")
    )
    beta: float = field(
        default=1.0, metadata=_meta(_NONNEG_FLOAT, "weight of the strength (MSE) loss")
    )
    logit_penalty: float = field(
        default=0.0,
        metadata=_meta(
            _NONNEG_FLOAT,
            "weight of the mean squared action logit added to the loss (0 = off; d3rlpy's "
            "DiscreteBC uses 0.5)",
        ),
    )
    return_weight: float = field(
        default=0.5,
        metadata=_meta(
            _NONNEG_FLOAT,
            "weight of the expected-return head's loss (MSE of the forward log return over the "
            "dataset's horizon, in standard deviations of the train rows'; models with that head "
            "only, e.g. 'multitask')",
        ),
    )
    risk_weight: float = field(
        default=0.5,
        metadata=_meta(
            _NONNEG_FLOAT,
            "weight of the risk head's loss (cross-entropy over the forward volatility's "
            "terciles, cut on the train rows; models with that head only, e.g. 'multitask')",
        ),
    )
    optimizer: str = field(
        default="adam",
        metadata=_meta(
            _checks(choices=OPTIMIZERS, described=_one_of(OPTIMIZERS)), "optimizer: adam or adamw"
        ),
    )
    class_balance: str = field(
        default="none",
        metadata=_meta(
            _checks(choices=BALANCE_MODES, described=_one_of(BALANCE_MODES)),
            "class imbalance handling: none, weighted, oversample or focal",
        ),
    )
    focal_gamma: float = field(
        default=2.0,
        metadata=_meta(_NONNEG_FLOAT, "focusing parameter of the focal loss (class_balance=focal)"),
    )
    awr_beta: float | None = field(
        default=None,
        metadata=_meta(
            _checks(gt=0, text_numbers=True, described="a finite number > 0, or None (off)"),
            "advantage-weighted imitation (AWR): weight each train row's action loss by "
            "exp((reward - mean train reward) / AWR_BETA), clipped at --awr-max-weight and "
            "normalised to mean 1; the reward is in return units (the dataset's rewards, "
            "`otonom-train dataset --rewards`; try about their standard deviation); off = plain BC",
        ),
    )
    awr_max_weight: float = field(
        default=20.0,
        metadata=_meta(
            _checks(ge=1, text_numbers=True, described="a finite number >= 1"),
            "the largest AWR weight of a row before normalisation (with --awr-beta)",
        ),
    )
    val_fraction: float = field(
        default=0.1,
        metadata=_meta(
            _checks(gt=0, lt=1, text_numbers=True, described="a number in (0, 1)"),
            "share of rows held out",
        ),
    )
    split: str = field(
        default="time",
        metadata=_meta(
            _checks(choices=SPLITS, described=_one_of(SPLITS)),
            "validation split: time (the latest dates) or random rows",
        ),
    )
    patience: int = field(
        default=5,
        metadata=_meta(
            _checks(ge=0, described=_NONNEG_INT),
            "early stopping: epochs without val-loss progress (0 = off)",
        ),
    )
    lr_plateau_patience: int = field(
        default=2,
        metadata=_meta(
            _checks(ge=0, described=_NONNEG_INT),
            "epochs without val-loss progress before the lr is reduced (0 = off)",
        ),
    )
    lr_plateau_factor: float = field(
        default=0.5,
        metadata=_meta(
            _checks(gt=0, lt=1, text_numbers=True, described="a number in (0, 1)"),
            "factor applied to the lr on a plateau",
        ),
    )
    grad_clip: float = field(
        default=1.0,
        metadata=_meta(_NONNEG_FLOAT, "clip the gradient's total L2 norm to this (0 = off)"),
    )
    teacher_rows: int = field(
        default=0,
        metadata=_meta(
            _checks(ge=0, described=_NONNEG_INT),
            "extra train rows labelled by the teacher ensemble: perturbed copies of train-split "
            "states (dated as their source rows, never after the train split's end; 0 = off)",
        ),
    )
    teacher_noise: float = field(
        default=0.3,
        metadata=_meta(
            _NONNEG_FLOAT,
            "the teacher rows' Gaussian noise on the market, technical and sentiment features, "
            "in standard deviations of each feature over the train split",
        ),
    )
    teacher_strategy: str = field(
        default_factory=default_strategy_path,
        metadata=_meta(
            _checks(nonempty=True, path=True, described=_PATH),
            "the strategy file whose ensemble (RL analyst off) labels the teacher rows; it must "
            "give back the dataset's own actions",
        ),
    )
    seed: int = field(
        default=42,
        metadata=_meta(
            _checks(ge=0, lt=2**63, described="an integer in [0, 2**63)"),
            "random seed (split, init, batches, dropout)",
        ),
    )
    device: str = field(
        default="auto",
        metadata=_meta(
            _checks(test=_is_device, described="'auto', 'cpu', 'cuda' or 'cuda:N'"),
            "auto (cuda when available, else cpu), cpu, cuda or cuda:N",
        ),
    )
    tensorboard: bool = field(
        default=False,
        metadata=_meta(
            _checks(described="true or false"),
            "write TensorBoard event logs (needs the tensorboard package)",
        ),
    )
    progress: bool = field(
        default=True,
        metadata=_meta(
            _checks(described="true or false"),
            "show a progress bar within epochs when the train split is large",
        ),
    )

    _error_class = ConfigError
    __cross_checks__ = (
        CrossCheck(
            lambda v: v["alpha"] + v["beta"] > 0.0,
            lambda v: (
                f"alpha and beta: got alpha={v['alpha']!r}, beta={v['beta']!r}; expected at "
                "least one > 0 (both zero leaves nothing to learn)"
            ),
        ),
    )

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
        missing = [f.name for f in dataclasses.fields(cls) if _required(f) and f.name not in merged]
        if missing:
            raise ConfigError(f"missing required configuration key(s) {missing}")
        return cls(**merged)

    @classmethod
    def from_yaml(
        cls, path: str | os.PathLike[str], overrides: Mapping[str, Any] | None = None
    ) -> TrainingConfig:
        """Read a flat YAML mapping of field names (``overrides``, e.g. flags, win). A problem
        names the file and the line of the field (``train.yaml:3: lr: got ...``); a key given
        twice is a problem."""
        return read_flat_yaml(
            path,
            "training configuration",
            "field names to values",
            ConfigError,
            lambda data: cls.from_dict(data, overrides),
        )

    def to_dict(self) -> dict[str, Any]:
        """Field name -> value (str, int, float, bool only): JSON-, YAML- and torch-safe."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def replace(self, **changes: Any) -> TrainingConfig:
        """A copy with ``changes`` applied, validated again."""
        return dataclasses.replace(self, **changes)


def read_flat_yaml(
    path: str | os.PathLike[str],
    what: str,
    keys: str,
    error: type[Exception],
    build: Callable[[Mapping[str, Any]], _T],
) -> _T:
    """``build(mapping)`` of the YAML file ``path``'s top-level mapping (an empty file: ``{}``).
    ``FileNotFoundError`` (``no WHAT file at PATH``); ``error`` for text that is not YAML, a top
    level that is not a mapping of ``keys``, a key given twice, or an ``error`` of ``build``
    whose message starts with a key (``lr: got ...``): then prefixed with ``FILE:LINE:``."""
    src = Path(path)
    if not src.is_file():
        raise FileNotFoundError(f"no {what} file at {src}")
    text = src.read_text(encoding="utf-8")
    duplicates: list[Problem] = []
    try:
        data = yaml.safe_load(text)
        lines = yaml_key_lines(text, duplicates)
    except yaml.YAMLError as exc:
        raise error(f"{src} is not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        got = type(data).__name__
        raise error(f"{src}: expected a mapping of {keys} at the top level; got a {got}")
    if duplicates:
        first = duplicates[0]
        raise error(f"{src}:{lines[first.path]}: {first.got()}")
    try:
        return build(data)
    except error as exc:  # "key: got ...": the file's line of that key
        name = str(exc).partition(":")[0]
        where = f"{src}:{lines[name]}" if name in lines else str(src)
        raise error(f"{where}: {exc}") from None


# -- rules the job configs share (pipeline, walk-forward, gate) ------------------------------


def _symbols_ok(symbols: tuple[str, ...]) -> bool:
    return bool(symbols) and all(s.strip() for s in symbols) and len(set(symbols)) == len(symbols)


SYMBOLS: Final = rule(test=_symbols_ok, described="one or more non-empty symbol names, each once")
"""The metadata of a ``symbols: tuple[str, ...]`` field (a list is kept as a tuple)."""
DAY: Final = rule(
    test=lambda v: not isinstance(v, dt.datetime), described="a datetime.date (not a datetime)"
)
"""The metadata of a ``dt.date | None`` field."""
POSITIVE_INT: Final = rule(ge=1, described=_POS_INT)
NONNEGATIVE: Final = rule(ge=0, described="a finite number >= 0")
FRACTION: Final = rule(ge=0, le=1, described="a fraction in [0, 1]")
START_BEFORE_END: Final = CrossCheck(
    lambda v: v["start"] is None or v["end"] is None or v["start"] < v["end"],
    lambda v: f"start {v['start']} is not before end {v['end']}; expected start < end",
)
"""The cross check of a config with ``start`` and ``end`` dates."""
DEMO_SYMBOLS: Final = ("DEMO-BTC", "DEMO-ETH", "DEMO-SOL")
"""The embedded demo market's symbols (generated when missing from the store)."""


@dataclass(frozen=True)
class WindowedRun(Validated):
    """The fields of a run over walk-forward windows (``walkforward.WalkForwardConfig``,
    ``compare.CompareConfig``): the strategy, the store, the symbols and the window plan
    (dates and sizes None: from the stored bars, ``otonom_trainer.ranges``)."""

    strategy_path: str = field(
        default_factory=default_strategy_path,
        metadata=rule(nonempty=True, described="a strategy YAML path"),
    )
    database_url: str | None = field(
        default=None, metadata=rule(nonempty=True, described="a SQLAlchemy URL or None")
    )
    symbols: tuple[str, ...] = field(default=DEMO_SYMBOLS, metadata=SYMBOLS)
    start: dt.date | None = field(default=None, metadata=DAY)
    end: dt.date | None = field(default=None, metadata=DAY)
    train_years: int | None = field(default=None, metadata=POSITIVE_INT)
    test_months: int | None = field(default=None, metadata=POSITIVE_INT)
    step_months: int | None = field(default=None, metadata=POSITIVE_INT)


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
    aliases: tuple[str, ...] = ()


def _plain(kind: Any) -> Any:
    """``X`` for ``X | None`` (an optional field's flag takes an ``X``), else ``kind``."""
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    return args[0] if len(args) == 1 else kind


def _required(f: dataclasses.Field[Any]) -> bool:
    """True for a field without a default value or factory."""
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _default(f: dataclasses.Field[Any]) -> object:
    """A field's default: its value, or what its factory makes now (``teacher_strategy``:
    ``default_strategy_path()``, which depends on the working directory)."""
    if f.default is not dataclasses.MISSING:
        return f.default
    factory: Callable[[], object] = f.default_factory  # type: ignore[assignment]
    return factory()


def config_fields() -> tuple[ConfigField, ...]:
    """The fields in declaration order, each with its flag (``--batch-size``), type and help.

    ``kind`` is ``str``, ``int``, ``float`` or ``bool`` (bool fields suit
    ``argparse.BooleanOptionalAction``); ``required`` is true for ``dataset_path`` only;
    ``aliases``: more flags for the same field (``--model`` for ``--architecture``).
    """
    out = []
    specs = {s.name: s for s in field_specs(TrainingConfig)}
    for f in dataclasses.fields(TrainingConfig):
        spec = specs[f.name]
        choices = spec.rule.choices
        required = _required(f)
        out.append(
            ConfigField(
                name=f.name,
                flag=f.metadata.get("flag", "--" + f.name.replace("_", "-")),
                kind=_plain(spec.type),
                default=None if required else _default(f),
                required=required,
                choices=None if choices is None else tuple(str(c) for c in choices),
                help=f.metadata["help"],
                aliases=tuple(f.metadata.get("aliases", ())),
            )
        )
    return tuple(out)
