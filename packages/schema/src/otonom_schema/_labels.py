"""Forward labels of dataset rows: what the market did after each decision (multi-task targets).

For a row decided on bar ``i`` of its symbol (close ``c_i``), with a horizon of ``h`` bars::

    forward_return     = log(c_{i+h} / c_i)
    forward_volatility = sqrt(mean_{k=1..h} log(c_{i+k} / c_{i+k-1})^2)   (realised, per bar)
    label_end          = the date of bar i + h (the last bar the label reads)
    risk_level         = the forward volatility's tercile under two cut points (q1, q2):
                         0 (low) if vol <= q1, 1 (mid) if vol <= q2, else 2 (high)

The cut points are the 1/3 and 2/3 quantiles of the forward volatility of the rows they are
cut on (``tercile_cuts``), never of later rows. A row without ``h`` bars after it among the bars
a label may read (the series' end, or the dataset's end date) has no label: NaN return and
volatility, NaT end, risk -1. Labels read only bars after the row's own: they are targets, never
an input of a state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from otonom_schema._errors import SchemaError

__all__ = [
    "LABEL_ARRAYS",
    "NO_RISK",
    "ForwardLabels",
    "forward_labels",
    "risk_levels",
    "tercile_cuts",
]

NO_RISK: Final = -1
"""The risk level of a row without a label."""
LABEL_ARRAYS: Final = ("forward_returns", "forward_volatility", "risk_levels", "label_end_dates")
"""The dataset file's arrays of ``ForwardLabels`` (``returns``, ``volatility``, ``risk``,
``ends``), in that order."""
DEFINITION: Final = (
    "forward_return = log(close[t+h] / close[t]); forward_volatility = sqrt(mean of the h squared "
    "one-bar log returns after t); risk_level = tercile of forward_volatility under tercile_cuts "
    "(0 if <= q1, 1 if <= q2, else 2); h = horizon bars; no label (NaN, -1, NaT) without h bars "
    "after t up to the dataset's end"
)

F32 = npt.NDArray[np.float32]


def forward_labels(
    close: npt.ArrayLike,
    dates: npt.ArrayLike,
    pos: npt.ArrayLike,
    horizon: int,
) -> tuple[F32, F32, npt.NDArray[np.datetime64]]:
    """``(forward_returns, forward_volatility, label_end_dates)`` of the rows on bars ``pos``.

    ``close`` / ``dates``: the bars a label may read, oldest first (finite closes > 0; cut at
    the dataset's end date by the caller); ``pos``: each row's bar index into them; ``horizon``:
    bars ahead (>= 1). A row with fewer than ``horizon`` bars after it gets NaN, NaN, NaT.
    """
    if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
        raise SchemaError(f"horizon is {horizon!r}; expected an integer >= 1 (bars ahead)")
    c = np.asarray(close, dtype=np.float64)
    d = np.asarray(dates, dtype="datetime64[D]")
    p = np.asarray(pos, dtype=np.int64)
    if c.ndim != 1 or d.shape != c.shape:
        raise SchemaError(f"close {c.shape} and dates {d.shape}; expected two equal 1-d shapes")
    if not (np.isfinite(c).all() and (c > 0).all()):
        bad = int(np.flatnonzero(~(np.isfinite(c) & (c > 0)))[0])
        raise SchemaError(f"close at bar {bad} ({d[bad]}) is {c[bad]}; expected a price > 0")
    if p.size and (p.min() < 0 or p.max() >= c.size):
        raise SchemaError(f"row bars {p.min()} .. {p.max()}; expected indices of {c.size} bars")
    log_c = np.log(c)
    squares = np.concatenate([[0.0], np.cumsum(np.diff(log_c) ** 2)])
    end = p + int(horizon)
    ok = end < c.size
    i, j = p[ok], end[ok]
    returns = np.full(p.size, np.nan, dtype=np.float32)
    vol = np.full(p.size, np.nan, dtype=np.float32)
    ends = np.full(p.size, np.datetime64("NaT"), dtype="datetime64[D]")
    returns[ok] = log_c[j] - log_c[i]
    # a cumulative sum of squares never falls, so the difference is >= 0
    vol[ok] = np.sqrt((squares[j] - squares[i]) / horizon)
    ends[ok] = d[j]
    return returns, vol, ends


def tercile_cuts(volatility: npt.ArrayLike) -> tuple[float, float]:
    """The 1/3 and 2/3 quantiles (numpy's linear rule) of the finite ``volatility`` values: the
    rows to cut on, chosen by the caller (training rows only). ``SchemaError`` when none is
    finite."""
    v = np.asarray(volatility, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise SchemaError("no labelled row to cut risk terciles on; expected at least one")
    q1, q2 = np.quantile(v, [1.0 / 3.0, 2.0 / 3.0])
    return float(q1), float(q2)


def risk_levels(volatility: npt.ArrayLike, cuts: tuple[float, float]) -> npt.NDArray[np.int8]:
    """0 / 1 / 2 per row: ``volatility`` <= ``cuts[0]``, <= ``cuts[1]``, above; -1 for NaN."""
    v = np.asarray(volatility, dtype=np.float64)
    levels = np.searchsorted(np.asarray(cuts, dtype=np.float64), v, side="left").astype(np.int8)
    levels[np.isnan(v)] = NO_RISK
    return levels


@dataclass(frozen=True)
class ForwardLabels:
    """The forward labels of a dataset's rows (module docstring), validated when made.

    ``returns`` / ``volatility`` float32 (NaN: no label), ``risk`` int8 (-1: no label),
    ``ends`` datetime64[D] (NaT: no label), one element per dataset row; ``horizon`` the bars
    ahead; ``cuts`` the risk terciles' cut points and ``cut_rows`` how many rows they were cut
    on. ``make`` computes the risk levels from the volatility and the rows to cut on.
    """

    horizon: int
    returns: F32
    volatility: F32
    risk: npt.NDArray[np.int8]
    ends: npt.NDArray[np.datetime64]
    cuts: tuple[float, float]
    cut_rows: int

    @classmethod
    def make(
        cls,
        horizon: int,
        returns: npt.ArrayLike,
        volatility: npt.ArrayLike,
        ends: npt.ArrayLike,
        cut_on: npt.NDArray[np.bool_] | None = None,
    ) -> ForwardLabels:
        """Labels whose terciles are cut on the rows ``cut_on`` (default: every labelled row)."""
        vol = np.asarray(volatility, dtype=np.float32)
        rows = np.isfinite(vol) if cut_on is None else np.asarray(cut_on, bool) & np.isfinite(vol)
        cuts = tercile_cuts(vol[rows])
        return cls(
            horizon=int(horizon),
            returns=np.asarray(returns, dtype=np.float32),
            volatility=vol,
            risk=risk_levels(vol, cuts),
            ends=np.asarray(ends, dtype="datetime64[D]"),
            cuts=cuts,
            cut_rows=int(rows.sum()),
        )

    def __post_init__(self) -> None:
        h = self.horizon
        if isinstance(h, bool) or not isinstance(h, (int, np.integer)) or h < 1:
            raise SchemaError(f"labels: horizon is {h!r}; expected an integer >= 1")
        returns = np.asarray(self.returns, dtype=np.float32)
        vol = np.asarray(self.volatility, dtype=np.float32)
        risk = np.asarray(self.risk)
        if risk.dtype.kind not in "iu":
            raise SchemaError(f"labels: risk levels have dtype {risk.dtype}; expected integers")
        risk = risk.astype(np.int8)
        try:
            ends = np.asarray(self.ends, dtype="datetime64[D]")
        except (TypeError, ValueError) as exc:
            raise SchemaError(f"labels: label end dates: {exc}") from None
        n = returns.shape
        for name, arr in (("volatility", vol), ("risk", risk), ("ends", ends)):
            if arr.ndim != 1 or arr.shape != n:
                raise SchemaError(f"labels: {name} has shape {arr.shape}; expected {n}")
        self._check(returns, vol, risk, ends)
        named = (("returns", returns), ("volatility", vol), ("risk", risk), ("ends", ends))
        for name, arr in named:
            arr.flags.writeable = False
            object.__setattr__(self, name, arr)
        object.__setattr__(self, "horizon", int(h))
        object.__setattr__(self, "cuts", (float(self.cuts[0]), float(self.cuts[1])))

    def _check(
        self,
        returns: F32,
        vol: F32,
        risk: npt.NDArray[np.int8],
        ends: npt.NDArray[np.datetime64],
    ) -> None:
        """Every row labelled in all four arrays or in none; values and cuts in their ranges;
        the risk levels those of the volatility under the cuts."""
        cuts = np.asarray(self.cuts, dtype=np.float64)
        if cuts.shape != (2,) or not np.isfinite(cuts).all() or cuts[0] > cuts[1]:
            raise SchemaError(f"labels: tercile cuts {self.cuts!r}; expected two numbers q1 <= q2")
        labelled = ~np.isnan(returns)
        for name, has in (
            ("forward_volatility", ~np.isnan(vol)),
            ("label_end_dates", ~np.isnat(ends)),
            ("risk_levels", risk != NO_RISK),
        ):
            if not np.array_equal(has, labelled):
                i = int(np.argmax(has != labelled))
                raise SchemaError(
                    f"labels: row {i} has {'a' if has[i] else 'no'} {name} but "
                    f"{'a' if labelled[i] else 'no'} forward return; expected a row labelled in "
                    "all label arrays or in none"
                )
        bad = np.flatnonzero(labelled & ~(np.isfinite(returns) & np.isfinite(vol) & (vol >= 0)))
        if bad.size:
            i = int(bad[0])
            raise SchemaError(
                f"labels: row {i} has forward return {returns[i]} and volatility {vol[i]}; "
                "expected finite numbers, the volatility >= 0"
            )
        wrong = np.flatnonzero(risk != risk_levels(vol, self.cuts))
        if wrong.size:
            i = int(wrong[0])
            raise SchemaError(
                f"labels: row {i} has risk level {risk[i]} for volatility {vol[i]}; expected "
                f"{risk_levels(vol[i : i + 1], self.cuts)[0]} under the cuts {list(self.cuts)}"
            )

    def __len__(self) -> int:
        return int(self.returns.shape[0])

    @property
    def labelled(self) -> npt.NDArray[np.bool_]:
        """Which rows have a label."""
        return ~np.isnan(self.returns)

    def take(self, rows: npt.ArrayLike) -> ForwardLabels:
        """These labels on the rows ``rows`` (indices), the same cuts."""
        i = np.asarray(rows, dtype=np.int64)
        return ForwardLabels(
            self.horizon,
            self.returns[i],
            self.volatility[i],
            self.risk[i],
            self.ends[i],
            self.cuts,
            self.cut_rows,
        )

    def metadata(self) -> dict[str, Any]:
        """What the dataset's metadata says of them (``labels``)."""
        n = int(self.labelled.sum())
        return {
            "horizon": self.horizon,
            "tercile_cuts": list(self.cuts),
            "cut_rows": self.cut_rows,
            "labelled_rows": n,
            "unlabelled_rows": len(self) - n,
            "definition": DEFINITION,
        }
