"""Drift maths for monitoring a deployed policy (numpy and ``math`` only).

* ``summarize_training(states, actions, predicted)``: the compact training summary an export
  stores as ``otonom.training_summary`` (docs/model-format.md): the action shares of the
  training labels (and of the model's own predictions on the training states), and per feature
  ``SUMMARY_BINS``-quantile bin edges with the training share of each bin.
* ``TrainingSummary.from_metadata(meta)``: that summary read back from
  ``RlPolicy.get_metadata()`` (``None`` for a model exported before it existed).
* ``psi(expected, actual)``: the population stability index
  ``sum((a - e) * ln(a / e))`` over bins, both shares floored at ``PSI_EPSILON`` (an empty bin
  would give an infinite index) and renormalised.
* ``chi2_sf(x, dof)`` and ``chi_square_test(counts, shares)``: Pearson's test of observed
  counts against expected shares, the p-value from the chi-square survival function
  (``Q(x; 2) = exp(-x/2)``, ``Q(x; 1) = erfc(sqrt(x/2))`` and the recurrence
  ``Q(x; k+2) = Q(x; k) + (x/2)^(k/2) e^(-x/2) / Gamma(k/2 + 1)``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from otonom_runtime._errors import PolicyError
from otonom_schema import FEATURE_NAMES, FEATURES, GROUPS, STATE_DIM

__all__ = [
    "PSI_EPSILON",
    "SUMMARY_BINS",
    "SUMMARY_VERSION",
    "TrainingSummary",
    "action_shares",
    "bin_counts",
    "chi2_sf",
    "chi_square_test",
    "group_columns",
    "psi",
    "summarize_training",
]

SUMMARY_BINS: Final = 10
"""Quantile bins per feature in the training summary (deciles; ties merge bins)."""
SUMMARY_VERSION: Final = 1
"""``version`` of the ``otonom.training_summary`` JSON this runtime reads."""
PSI_EPSILON: Final = 1e-4
"""Floor of a bin's share in ``psi`` (then renormalised), so an empty bin stays finite."""
N_ACTIONS: Final = 3


def group_columns() -> dict[str, list[int]]:
    """The state's column indices per feature group (``otonom_schema.GROUPS`` order)."""
    return {g: [i for i, f in enumerate(FEATURES) if f.group == g] for g in GROUPS}


def _shares(counts: npt.ArrayLike) -> npt.NDArray[np.float64]:
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum()
    return c / total if total > 0 else np.full(c.shape, 1.0 / max(c.size, 1))


def action_shares(actions: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """The share of HOLD, BUY and SELL (``Action`` values 0, 1, 2) among ``actions``."""
    a = np.asarray(actions, dtype=np.int64).reshape(-1)
    return _shares(np.bincount(a, minlength=N_ACTIONS)[:N_ACTIONS])


def bin_counts(values: npt.ArrayLike, edges: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Counts of ``values`` in the bins cut at the interior ``edges`` (``len(edges) + 1``
    bins; a value equal to an edge falls in the bin above it)."""
    e = np.asarray(edges, dtype=np.float64)
    idx = np.searchsorted(e, np.asarray(values, dtype=np.float64), side="right")
    return np.bincount(idx, minlength=e.size + 1)


def summarize_training(
    states: npt.ArrayLike,
    actions: npt.ArrayLike,
    predicted: npt.ArrayLike | None = None,
    *,
    bins: int = SUMMARY_BINS,
) -> dict[str, Any]:
    """The training summary (JSON-able) of training ``states`` (N, 34) and their label
    ``actions`` (N,); ``predicted``: the model's own actions on those states (recorded as
    ``predicted_actions``: the reference the deployed model's action mix is compared with).
    ``ValueError`` for no rows or mismatched lengths."""
    x = np.asarray(states, dtype=np.float64)
    a = np.asarray(actions, dtype=np.int64).reshape(-1)
    if x.ndim != 2 or x.shape[1] != STATE_DIM or x.shape[0] == 0 or a.shape[0] != x.shape[0]:
        raise ValueError(
            f"training states {x.shape} and actions {a.shape}; expected (N, {STATE_DIM}) and "
            "(N,) with N >= 1"
        )
    qs = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    features: dict[str, Any] = {}
    for i, name in enumerate(FEATURE_NAMES):
        edges = np.unique(np.quantile(x[:, i], qs))
        counts = bin_counts(x[:, i], edges)
        features[name] = {
            "edges": [float(v) for v in edges],
            "shares": [round(float(v), 6) for v in _shares(counts)],
        }
    out: dict[str, Any] = {
        "version": SUMMARY_VERSION,
        "rows": int(x.shape[0]),
        "actions": [round(float(v), 6) for v in action_shares(a)],
        "features": features,
    }
    if predicted is not None:
        out["predicted_actions"] = [round(float(v), 6) for v in action_shares(predicted)]
    return out


@dataclass(frozen=True)
class TrainingSummary:
    """``otonom.training_summary`` decoded: ``rows``, ``actions`` (label shares, (3,)),
    ``predicted_actions`` ((3,) or None), per feature (schema order) ``edges`` and ``shares``."""

    rows: int
    actions: npt.NDArray[np.float64]
    predicted_actions: npt.NDArray[np.float64] | None
    edges: tuple[npt.NDArray[np.float64], ...]
    shares: tuple[npt.NDArray[np.float64], ...]

    @property
    def reference_actions(self) -> npt.NDArray[np.float64]:
        """What a deployed model's action mix is compared with: its own predictions on the
        training states when recorded, else the training labels."""
        return self.actions if self.predicted_actions is None else self.predicted_actions

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> TrainingSummary | None:
        """The summary in ``RlPolicy.get_metadata()`` (key ``training_summary``, a dict or
        its JSON text), ``None`` when the model has none; ``PolicyError`` when malformed."""
        raw = metadata.get("training_summary")
        if raw is None:
            return None
        try:
            return cls._parse(raw)
        except (KeyError, TypeError, ValueError) as exc:
            raise PolicyError(
                f"{metadata.get('path', 'the model')}: otonom.training_summary is malformed "
                f"({exc}); expected version {SUMMARY_VERSION} as docs/model-format.md describes"
            ) from None

    @classmethod
    def _parse(cls, raw: Any) -> TrainingSummary:
        if isinstance(raw, str):
            import json

            raw = json.loads(raw)
        if raw["version"] != SUMMARY_VERSION:
            raise ValueError(f"version {raw['version']!r}")
        feats = raw["features"]
        edges = tuple(np.asarray(feats[n]["edges"], dtype=np.float64) for n in FEATURE_NAMES)
        shares = tuple(np.asarray(feats[n]["shares"], dtype=np.float64) for n in FEATURE_NAMES)
        if any(s.shape != (e.size + 1,) for e, s in zip(edges, shares, strict=True)):
            raise ValueError("a feature's shares do not match its edges")
        pred = raw.get("predicted_actions")
        return cls(
            rows=int(raw["rows"]),
            actions=_three(raw["actions"]),
            predicted_actions=None if pred is None else _three(pred),
            edges=edges,
            shares=shares,
        )

    def feature_psi(self, states: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Each feature's PSI of ``states`` (N, 34) against the training bins, shape (34,)."""
        x = np.asarray(states, dtype=np.float64)
        return np.array(
            [psi(self.shares[i], _shares(bin_counts(x[:, i], e))) for i, e in enumerate(self.edges)]
        )

    def group_psi(self, states: npt.ArrayLike) -> dict[str, float]:
        """Per feature group, the mean PSI of its features (``group_columns``)."""
        per = self.feature_psi(states)
        return {g: float(per[cols].mean()) for g, cols in group_columns().items()}


def _three(values: Sequence[Any]) -> npt.NDArray[np.float64]:
    a = np.asarray(values, dtype=np.float64)
    if a.shape != (N_ACTIONS,):
        raise ValueError(f"action shares {values!r}, expected 3 numbers")
    return a


def psi(expected: npt.ArrayLike, actual: npt.ArrayLike, *, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index of the ``actual`` shares against the ``expected`` ones
    (same bins; counts are fine too: both are normalised after flooring at ``epsilon``)."""
    e = np.maximum(_shares(expected), epsilon)
    a = np.maximum(_shares(actual), epsilon)
    e, a = e / e.sum(), a / a.sum()
    return float(np.sum((a - e) * np.log(a / e)))


def chi2_sf(x: float, dof: int) -> float:
    """P(X >= x) for X chi-square with ``dof`` >= 1 degrees of freedom."""
    if dof < 1:
        raise ValueError(f"dof is {dof}; expected >= 1")
    if x <= 0.0:
        return 1.0
    half = x / 2.0
    k = 2 if dof % 2 == 0 else 1
    q = math.exp(-half) if k == 2 else math.erfc(math.sqrt(half))
    while k < dof:
        q += math.exp((k / 2.0) * math.log(half) - half - math.lgamma(k / 2.0 + 1.0))
        k += 2
    return min(1.0, max(0.0, q))


def chi_square_test(
    counts: npt.ArrayLike, shares: npt.ArrayLike, *, epsilon: float = PSI_EPSILON
) -> tuple[float, float]:
    """Pearson's chi-square of observed ``counts`` against expected ``shares``: (statistic,
    p-value), dof = categories - 1; a zero share is floored at ``epsilon``. No counts: (0, 1)."""
    c = np.asarray(counts, dtype=np.float64)
    n = c.sum()
    if n <= 0:
        return 0.0, 1.0
    e = np.maximum(_shares(shares), epsilon)
    expected = n * e / e.sum()
    stat = float(np.sum((c - expected) ** 2 / expected))
    return stat, chi2_sf(stat, c.size - 1)
