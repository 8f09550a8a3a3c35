"""Feature importance of an exported policy: permutation importance through the runtime, and the
seam for attention weights.

``permutation_importance(model, dataset, repeats=5, seed=0)`` measures how much an ONNX policy,
as served (``otonom_runtime.load_rl_policy`` and ``RlPolicy.predict_batch``), relies on each
feature of a dataset's states: any exported architecture works, nothing of torch is used.
``otonom-train explain`` (``otonom_trainer.explain_report``) prints and writes the result.

The definition
--------------

The baseline is the model's decisions on the dataset's rows as they are, scored against the
dataset's actions (the teacher's labels) by two metrics, each overall and per action:

* ``accuracy``: overall, the share of rows whose predicted action is the dataset's; per action
  ``c``, the recall of ``c`` (the share of the rows labelled ``c`` that are predicted ``c``);
* ``probability``: overall, the mean probability the model gives the dataset's action; per
  action ``c``, that mean over the rows labelled ``c`` (smoother: it moves before a decision
  flips).

A unit (one feature, or the regime one-hot's three columns together, see below) is permuted:
its column(s) reordered across the rows by one random permutation, every other feature of each
row kept; the model runs on that copy (one ``predict_batch`` per permuted copy, in chunks of
65,536 rows) and is scored the same way. The unit's importance is the baseline score minus the
permuted one, overall and per action, as the mean over ``repeats`` permutations with its
standard deviation (ddof 0, as scikit-learn's ``permutation_importance``). The per-action
columns split the overall one by the rows' actions: overall drop = sum over actions of (the
action's share of the rows) x (its drop), for either metric. A drop can be negative (a shuffle
that happened to help); a per-action value is NaN when the dataset has no row of that action.
Rows are ranked by the overall mean drop (ties: by the other metric's, then schema order).

The regime unit: ``otonom_schema.validate_states`` refuses a state whose regime columns
(``regime_low_vol``, ``regime_normal``, ``regime_high_vol``) are not one-hot, so one of them
cannot be shuffled alone (the model never sees such a state); the three are shuffled together
and reported as one row, ``regime (one-hot)``. Every other feature is its own unit.

Groups: the same measure for each ``otonom_schema.GROUPS`` group (market, technical,
portfolio, regime, data_quality, sentiment), the group's columns shuffled together by one
permutation of the rows: what the model loses without the group, which is not the sum of its
features' drops when they carry the same information.

Random numbers: repeat ``r`` of the unit with columns ``c1, c2, ...`` is shuffled by
``numpy.random.default_rng([seed, r, c1, c2, ...])``: the same seed gives the same result, and
a unit's permutations do not depend on which other units are measured (the regime unit and the
regime group are the same shuffles).

Attention (the seam)
--------------------

A model may have an extra output named ``attention`` (``ATTENTION_OUTPUT``), float32
``[batch, 34]``, one weight per feature in ``FEATURE_NAMES`` order. Where it has one, its mean
weight per feature over the dataset's rows, overall and per action (the rows grouped by their
dataset action, as the importance is), is reported beside the importance
(``FeatureImportance.attention``, an ``AttentionSummary``); otherwise ``attention`` is None.
The output is read by ``read_attention`` through a second onnxruntime session over the policy's
file (``predict`` and ``predict_batch`` run only the contract's two outputs). The runtime's
contract admits ``attention`` as an optional output (``OPTIONAL_OUTPUTS``, listed in the
model's ``otonom.extra_outputs``; docs/model-format.md): ``--model attention`` trains such a
model (``otonom_trainer.networks.AttentionPolicyNet``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from otonom_runtime.config_rules import Validated, rule
from otonom_runtime.policy import DEVICES, INPUT_NAME
from otonom_schema import (
    FEATURE_NAMES,
    FEATURES,
    GROUPS,
    STATE_DIM,
    OfflineDataset,
    load_dataset,
)
from otonom_trainer._errors import OtonomTrainerError
from otonom_trainer.config import POSITIVE_INT
from otonom_trainer.metrics import CLASS_NAMES

if TYPE_CHECKING:
    from otonom_runtime.policy import RlPolicy

__all__ = [
    "ATTENTION_OUTPUT",
    "COLUMNS",
    "METRICS",
    "REGIME_UNIT",
    "AttentionSummary",
    "ExplainError",
    "ExplainOptions",
    "FeatureImportance",
    "UnitImportance",
    "feature_units",
    "group_units",
    "permutation_importance",
    "read_attention",
]

ATTENTION_OUTPUT: Final = "attention"
"""The name of the optional model output read as attention weights (float32 [batch, 34])."""
METRICS: Final = ("accuracy", "probability")
"""The two scores a drop is measured in (see the module docstring)."""
COLUMNS: Final = ("overall", *CLASS_NAMES)
"""The order of the four numbers of every score and drop: overall, then HOLD, BUY, SELL."""
REGIME_UNIT: Final = "regime (one-hot)"
"""The name of the unit that shuffles the three regime columns together."""
SEED_RULE: Final = rule(ge=0, described="an integer >= 0")

_CHUNK: Final = 65_536  # rows per predict_batch call (bounds the memory of one run)
_REGIME_GROUP: Final = "regime"

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Four = tuple[float, float, float, float]


class ExplainError(OtonomTrainerError, ValueError):
    """Feature importance cannot be measured as asked: an option out of range, too few rows, a
    model whose ``attention`` output breaks its shape."""


@dataclass(frozen=True)
class ExplainOptions(Validated):
    """How the importance is measured; validated once (``otonom_runtime.config_rules``:
    ``ExplainError`` names the field, what was given and what was expected)."""

    repeats: int = field(default=5, metadata=POSITIVE_INT)
    seed: int = field(default=0, metadata=SEED_RULE)
    groups: bool = True
    device: str = field(default="cpu", metadata=rule(choices=DEVICES))

    _error_class = ExplainError


# --- the units -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Unit:
    name: str
    columns: tuple[int, ...]


def _group_columns(group: str) -> tuple[int, ...]:
    return tuple(i for i, f in enumerate(FEATURES) if f.group == group)


def feature_units() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The units the features are shuffled in, in schema order: ``(name, feature names)``, each
    feature alone except the regime one-hot's three columns (``REGIME_UNIT``)."""
    return tuple((u.name, tuple(FEATURE_NAMES[i] for i in u.columns)) for u in _feature_units())


def group_units() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The groups (``otonom_schema.GROUPS`` order) as ``(group, feature names)``."""
    return tuple((u.name, tuple(FEATURE_NAMES[i] for i in u.columns)) for u in _group_units())


def _feature_units() -> tuple[_Unit, ...]:
    regime = _group_columns(_REGIME_GROUP)
    units = [_Unit(f.name, (i,)) for i, f in enumerate(FEATURES) if i not in regime]
    units.insert(regime[0], _Unit(REGIME_UNIT, regime))
    return tuple(units)


def _group_units() -> tuple[_Unit, ...]:
    return tuple(_Unit(g, _group_columns(g)) for g in GROUPS)


# --- results -------------------------------------------------------------------------------------


def _four(values: npt.ArrayLike) -> Four:
    a, b, c, d = (float(v) for v in np.asarray(values, dtype=np.float64))
    return (a, b, c, d)


@dataclass(frozen=True)
class UnitImportance:
    """One unit's (a feature's, the regime one-hot's or a group's) importance: per metric the
    mean drop and its standard deviation over the repeats, four numbers each in ``COLUMNS``
    order (overall, HOLD, BUY, SELL; NaN for an action without rows)."""

    name: str
    features: tuple[str, ...]
    accuracy: Four
    accuracy_std: Four
    probability: Four
    probability_std: Four

    def mean(self, metric: str = "accuracy") -> Four:
        """The mean drops of ``metric`` (``METRICS``)."""
        return self.accuracy if _metric(metric) == "accuracy" else self.probability

    def std(self, metric: str = "accuracy") -> Four:
        """Their standard deviations over the repeats (ddof 0)."""
        return self.accuracy_std if _metric(metric) == "accuracy" else self.probability_std

    def to_dict(self) -> dict[str, Any]:
        def named(values: Four) -> dict[str, float | None]:
            return {k: (None if math.isnan(v) else v) for k, v in zip(COLUMNS, values, strict=True)}

        return {
            "name": self.name,
            "features": list(self.features),
            **{m: {"mean": named(self.mean(m)), "std": named(self.std(m))} for m in METRICS},
        }


def _metric(metric: str) -> str:
    if metric not in METRICS:
        raise ExplainError(f"metric: got {metric!r}; expected one of {list(METRICS)}")
    return metric


@dataclass(frozen=True)
class AttentionSummary:
    """The mean ``attention`` weight of each feature (``FEATURE_NAMES`` order) over the rows,
    four numbers each in ``COLUMNS`` order: overall, then over the rows whose dataset action is
    HOLD, BUY, SELL (NaN for an action without rows)."""

    mean: tuple[Four, ...]

    @classmethod
    def from_weights(cls, weights: npt.ArrayLike, actions: npt.ArrayLike) -> AttentionSummary:
        """Summarise ``weights`` (N, 34) given the rows' ``actions`` (N,) (``Action`` values).
        ``ExplainError`` for another shape, a non-finite weight or an action outside 0..2."""
        w = np.asarray(weights, dtype=np.float64)
        y = np.asarray(actions)
        if w.ndim != 2 or w.shape[1] != STATE_DIM or y.shape != (w.shape[0],) or not len(y):
            raise ExplainError(
                f"attention weights of shape {w.shape} for actions of shape {y.shape}; "
                f"expected (N, {STATE_DIM}) and (N,) with N >= 1"
            )
        if not np.isfinite(w).all():
            raise ExplainError("attention weights hold a non-finite value; expected finite")
        if y.dtype.kind not in "iu" or y.min() < 0 or y.max() >= len(CLASS_NAMES):
            raise ExplainError("actions must hold Action values 0 (HOLD), 1 (BUY), 2 (SELL)")
        table = np.full((STATE_DIM, len(COLUMNS)), np.nan)
        table[:, 0] = w.mean(axis=0)
        for c in range(len(CLASS_NAMES)):
            rows = y == c
            if rows.any():
                table[:, c + 1] = w[rows].mean(axis=0)
        return cls(tuple(_four(row) for row in table))

    def ranked(self) -> tuple[tuple[str, Four], ...]:
        """``(feature, mean weights)`` by the overall mean weight, highest first."""
        order = sorted(range(STATE_DIM), key=lambda i: (-self.mean[i][0], i))
        return tuple((FEATURE_NAMES[i], self.mean[i]) for i in order)

    def to_dict(self) -> dict[str, Any]:
        return {
            name: {k: (None if math.isnan(v) else v) for k, v in zip(COLUMNS, row, strict=True)}
            for name, row in zip(FEATURE_NAMES, self.mean, strict=True)
        }


@dataclass(frozen=True)
class FeatureImportance:
    """What ``permutation_importance`` measured (see the module docstring).

    ``features``: one ``UnitImportance`` per unit in schema order (``feature_units``);
    ``groups``: one per ``GROUPS`` group (empty when not measured); ``baseline_accuracy`` /
    ``baseline_probability``: the unpermuted scores in ``COLUMNS`` order; ``support``: rows per
    action (HOLD, BUY, SELL); ``attention``: None when the model has no attention output.
    """

    model_path: Path
    dataset_path: Path | None
    rows: int
    support: tuple[int, int, int]
    repeats: int
    seed: int
    baseline_accuracy: Four
    baseline_probability: Four
    features: tuple[UnitImportance, ...]
    groups: tuple[UnitImportance, ...]
    attention: AttentionSummary | None

    def baseline(self, metric: str = "accuracy") -> Four:
        """The unpermuted scores of ``metric``."""
        return (
            self.baseline_accuracy if _metric(metric) == "accuracy" else self.baseline_probability
        )

    def ranked(
        self, metric: str = "accuracy", *, groups: bool = False
    ) -> tuple[UnitImportance, ...]:
        """The units (or the groups) by their overall mean drop of ``metric``, highest first;
        ties by the other metric's, then in schema order."""
        other = METRICS[1 - METRICS.index(_metric(metric))]
        units = self.groups if groups else self.features
        order = sorted(
            range(len(units)),
            key=lambda i: (-units[i].mean(metric)[0], -units[i].mean(other)[0], i),
        )
        return tuple(units[i] for i in order)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (NaN as null)."""
        return {
            "model_path": str(self.model_path),
            "dataset_path": None if self.dataset_path is None else str(self.dataset_path),
            "rows": self.rows,
            "support": dict(zip(CLASS_NAMES, self.support, strict=True)),
            "repeats": self.repeats,
            "seed": self.seed,
            "columns": list(COLUMNS),
            "baseline": {
                m: {
                    k: (None if math.isnan(v) else v)
                    for k, v in zip(COLUMNS, self.baseline(m), strict=True)
                }
                for m in METRICS
            },
            "features": [u.to_dict() for u in self.ranked()],
            "groups": [u.to_dict() for u in self.ranked(groups=True)] if self.groups else [],
            "attention": None if self.attention is None else self.attention.to_dict(),
        }


# --- measuring -----------------------------------------------------------------------------------


def permutation_importance(
    model: str | os.PathLike[str] | RlPolicy,
    dataset: str | os.PathLike[str] | OfflineDataset,
    *,
    repeats: int = 5,
    seed: int = 0,
    groups: bool = True,
    device: str = "cpu",
) -> FeatureImportance:
    """The permutation importance of every feature (and group) of ``model`` on ``dataset``.

    ``model``: a loaded ``RlPolicy``, or anything ``load_rl_policy`` accepts (a ``.onnx`` file,
    a model folder, a ``policy_best.pt`` path standing for the ``.onnx`` beside it), loaded on
    ``device``. ``dataset``: an ``OfflineDataset`` or a ``.npz`` path (``load_dataset``).
    ``repeats`` permutations per unit, seeded by ``seed``; ``groups`` also measures each feature
    group. Raises ``ExplainError`` for an option out of range or a dataset of fewer than 2
    rows, and what the loaders raise (``FileNotFoundError``, ``DatasetError``,
    ``SchemaMismatchError``, ``PolicyError``, ``ModelSchemaMismatchError``).
    """
    opts = ExplainOptions(repeats=repeats, seed=seed, groups=groups, device=device)
    if isinstance(dataset, OfflineDataset):
        data, data_path = dataset, None
    else:
        data, data_path = load_dataset(dataset), Path(dataset)
    if len(data) < 2:
        raise ExplainError(
            f"dataset {data_path or '(given)'} has {len(data)} row(s); expected at least 2 to "
            "shuffle a feature across"
        )
    if isinstance(model, (str, os.PathLike)):
        from otonom_runtime.policy import load_rl_policy

        policy = load_rl_policy(model, device=opts.device)
    else:
        policy = model
    states, y = data.states, data.actions
    support = np.bincount(y, minlength=len(CLASS_NAMES))
    base = _scores(*_predict(policy, states), y, support)
    measure = _Measure(policy, states, y, support, base, opts)
    weights = read_attention(policy, states)
    return FeatureImportance(
        model_path=Path(policy.path),
        dataset_path=data_path,
        rows=len(data),
        support=(int(support[0]), int(support[1]), int(support[2])),
        repeats=opts.repeats,
        seed=opts.seed,
        baseline_accuracy=_four(base[0]),
        baseline_probability=_four(base[1]),
        features=tuple(measure.unit(u) for u in _feature_units()),
        groups=tuple(measure.unit(u) for u in _group_units()) if opts.groups else (),
        attention=None if weights is None else AttentionSummary.from_weights(weights, y),
    )


def _predict(policy: RlPolicy, x: F32) -> tuple[I64, F32]:
    """The actions and probabilities of ``x``, one ``predict_batch`` per 65,536 rows."""
    n = x.shape[0]
    if n <= _CHUNK:
        actions, _, probs = policy.predict_batch(x)
        return actions, probs
    actions = np.empty(n, dtype=np.int64)
    probs = np.empty((n, len(CLASS_NAMES)), dtype=np.float32)
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        actions[start:stop], _, probs[start:stop] = policy.predict_batch(x[start:stop])
    return actions, probs


def _scores(actions: I64, probs: F32, y: I64, support: I64) -> F64:
    """(2, 4): the accuracy and probability scores in ``COLUMNS`` order (NaN: no rows)."""
    n = len(y)
    correct = (actions == y).astype(np.float64)
    p_true = probs[np.arange(n), y].astype(np.float64)
    out = np.empty((2, len(COLUMNS)))
    out[0, 0] = correct.mean()
    out[1, 0] = p_true.mean()
    classes = len(CLASS_NAMES)
    with np.errstate(invalid="ignore", divide="ignore"):  # 0 / 0: no row of that action
        out[0, 1:] = np.bincount(y, weights=correct, minlength=classes) / support
        out[1, 1:] = np.bincount(y, weights=p_true, minlength=classes) / support
    return out


@dataclass
class _Measure:
    """The permuted runs of one ``permutation_importance`` call (one working copy of the
    states, each unit's columns shuffled in and restored)."""

    policy: RlPolicy
    states: F32
    y: I64
    support: I64
    base: F64
    opts: ExplainOptions
    work: F32 = field(init=False)

    def __post_init__(self) -> None:
        self.work = self.states.copy()

    def unit(self, unit: _Unit) -> UnitImportance:
        cols = np.array(unit.columns, dtype=np.intp)
        n = self.states.shape[0]
        drops = np.empty((self.opts.repeats, 2, len(COLUMNS)))
        for r in range(self.opts.repeats):
            perm = np.random.default_rng([self.opts.seed, r, *unit.columns]).permutation(n)
            self.work[:, cols] = self.states[np.ix_(perm, cols)]
            drops[r] = self.base - _scores(*_predict(self.policy, self.work), self.y, self.support)
        self.work[:, cols] = self.states[:, cols]
        mean, std = drops.mean(axis=0), drops.std(axis=0)
        return UnitImportance(
            name=unit.name,
            features=tuple(FEATURE_NAMES[i] for i in unit.columns),
            accuracy=_four(mean[0]),
            accuracy_std=_four(std[0]),
            probability=_four(mean[1]),
            probability_std=_four(std[1]),
        )


def read_attention(policy: RlPolicy, states: npt.ArrayLike) -> F32 | None:
    """The model's ``attention`` output on ``states`` ((N, 34) valid states), float32 (N, 34),
    or None when the model has no such output (see the module docstring: read through a second
    CPU session over ``policy.path``). ``ExplainError`` when the output is not one finite
    weight per feature and row."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    session = ort.InferenceSession(
        Path(policy.path).read_bytes(), sess_options=options, providers=["CPUExecutionProvider"]
    )
    if ATTENTION_OUTPUT not in {o.name for o in session.get_outputs()}:
        return None
    x = np.ascontiguousarray(states, dtype=np.float32)
    parts: Sequence[Any] = [
        session.run([ATTENTION_OUTPUT], {INPUT_NAME: x[start : start + _CHUNK]})[0]
        for start in range(0, x.shape[0], _CHUNK)
    ]
    weights = np.concatenate(parts) if parts else np.empty((0, STATE_DIM), np.float32)
    if weights.shape != (x.shape[0], STATE_DIM) or not np.isfinite(weights).all():
        raise ExplainError(
            f"{policy.path}: output {ATTENTION_OUTPUT!r} gave shape {weights.shape} for "
            f"{x.shape[0]} states; expected finite float32 weights of shape "
            f"[batch, {STATE_DIM}] (one per feature)"
        )
    return weights.astype(np.float32, copy=False)
