"""The operational items of ``otonom monitor`` (``otonom_runtime.monitor``): fallbacks, predict
latency and the Sharpe of the decisions with and without the RL analyst.

* ``fallbacks`` / ``fallback_rate``: decisions of runs with the RL analyst on whose row stores
  no RL action (the analyst fell back: no model, a bad output), counted and as a share of the
  decisions made with it on; alerts above ``max_fallback_rate``.
* ``predict_latency_ms`` (scope ``all``, labels ``quantile`` p50/p90/p99/max) and
  ``daemon_fallbacks``: what the daemon recorded in its state row (``DaemonState``, written by
  ``otonom daemon``: its newest predict calls, its fallbacks since it started); the p99 alerts
  above ``max_latency_ms``.
* ``sharpe_rl`` / ``sharpe_no_rl`` / ``sharpe_rl_gain``: each decision's call is followed
  ``horizon`` bars on: ``+strength`` for a BUY, ``-strength`` for a SELL, 0 for a HOLD, times
  the close-to-close return from the decision's bar to ``horizon`` bars later; a day's return is
  the mean of its symbols' (equal sleeves), and the Sharpe is ``otonom_runtime.metrics``'
  (``compute_metrics`` on the compounded days, annualised by ``periods_per_year / horizon``).
  "With RL" follows the decisions as stored; "without RL" the three analysts' decision
  recomputed from their stored signals by the one vote (``otonom_runtime.vote.add_votes`` and
  ``decide``, the strategy's weights and ``min_score``). The gain (with minus without) alerts
  below ``-max_rl_sharpe_loss``. A run with the RL analyst off gives the same figure twice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from otonom_runtime.metrics import compute_metrics
from otonom_runtime.strategy import MonitoringConfig
from otonom_runtime.teacher import TEACHER_ANALYSTS
from otonom_runtime.vote import Signals, add_votes, decide
from otonom_schema import Action

__all__ = [
    "OPS_HELP",
    "QUANTILES",
    "daemon_items",
    "daily_returns",
    "ops_items",
    "signed_calls",
    "three_analyst_calls",
]

F64 = npt.NDArray[np.float64]
QUANTILES: Final = ("p50", "p90", "p99", "max")
"""The labels of ``predict_latency_ms`` (the daemon's ``latency_percentiles``)."""
OPS_HELP: Final = {
    "fallbacks": "decisions made without the RL analyst while it was on",
    "fallback_rate": "share of the decisions made with the RL analyst on that fell back",
    "sharpe_rl": "Sharpe of the decisions as made (with the RL analyst)",
    "sharpe_no_rl": "Sharpe of the three analysts' decisions recomputed from their signals",
    "sharpe_rl_gain": "Sharpe with the RL analyst minus without",
    "predict_latency_ms": "the daemon's recent predict latency percentiles (milliseconds)",
    "daemon_fallbacks": "the daemon's decisions without the RL analyst since it started",
}


def signed_calls(actions: Sequence[int] | npt.ArrayLike, strengths: npt.ArrayLike) -> F64:
    """``+strength`` for a BUY, ``-strength`` for a SELL, 0 for a HOLD."""
    a = np.asarray(actions, dtype=np.int64)
    sign = (a == int(Action.BUY)).astype(np.float64) - (a == int(Action.SELL))
    out: F64 = sign * np.asarray(strengths, dtype=np.float64)
    return out


def three_analyst_calls(
    rows: Mapping[str, Sequence[Any]], weights: Sequence[float], min_score: float
) -> F64:
    """The signed calls (``signed_calls``) of the three analysts' vote on each row, from their
    stored signals (``tech_action``, ..., ``risk_confidence``; an analyst whose action is None
    on a row abstains there) with ``weights`` (tech, news, risk) and ``min_score``: the
    votes added by ``add_votes``, decided by ``decide`` (the one vote)."""
    n = len(rows["date"])
    totals, sums = np.zeros((n, 3)), np.zeros((n, 3))
    for name, weight in zip(TEACHER_ANALYSTS, weights, strict=True):
        acts = rows[f"{name}_action"]
        idx = np.array([i for i, a in enumerate(acts) if a is not None], dtype=np.int64)
        if idx.size == 0:
            continue
        signals = Signals(
            np.array([acts[i] for i in idx], dtype=np.int64),
            np.array([rows[f"{name}_strength"][i] for i in idx], dtype=np.float64),
            np.array([rows[f"{name}_confidence"][i] for i in idx], dtype=np.float64),
        )
        t, s = np.zeros((idx.size, 3)), np.zeros((idx.size, 3))
        add_votes(t, s, signals, float(weight))
        totals[idx] += t
        sums[idx] += s
    out = decide(totals, sums, min_score)
    return signed_calls(out.actions, out.strengths)


def daily_returns(
    dates: npt.NDArray[np.datetime64], calls: F64, ret: F64
) -> tuple[npt.NDArray[np.datetime64], F64]:
    """The days with a known outcome (``ret`` not NaN) and each day's return: the mean over
    its rows of ``calls x ret``."""
    known = ~np.isnan(ret)
    days, inverse = np.unique(dates[known], return_inverse=True)
    if days.size == 0:
        return days, np.zeros(0)
    total = np.bincount(inverse, weights=calls[known] * ret[known], minlength=days.size)
    return days, total / np.bincount(inverse, minlength=days.size)


def _sharpe(returns: F64, periods_per_year: float) -> float | None:
    """``compute_metrics``' Sharpe of these period returns (None: undefined)."""
    if returns.size < 2 or (returns <= -1.0).any():
        return None
    equity = np.concatenate([[1.0], np.cumprod(1.0 + returns)])
    ppy = max(1, round(periods_per_year))
    sharpe = compute_metrics(equity, np.zeros(equity.size), [], ppy).sharpe
    # metrics annualise by an integer; a horizon that does not divide the year is rescaled
    return None if sharpe is None else sharpe * math.sqrt(periods_per_year / ppy)


def _fallback_items(
    scope: str, rl_on: npt.NDArray[np.bool_], missing: npt.NDArray[np.bool_], cfg: MonitoringConfig
) -> list[Any]:
    from otonom_runtime.monitor import Item

    on = int(rl_on.sum())
    count = int((rl_on & missing).sum())
    items = [Item(scope, "fallbacks", float(count))]
    if on == 0:
        return [*items, Item(scope, "fallback_rate", None, "info", note="RL analyst off")]
    rate = count / on
    status = "alert" if rate > cfg.max_fallback_rate else "ok"
    return [*items, Item(scope, "fallback_rate", rate, status)]


def ops_items(
    scope: str,
    dates: npt.NDArray[np.datetime64],
    ret: F64,
    calls: tuple[F64, F64],
    fallbacks: tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]],
    cfg: MonitoringConfig,
    periods_per_year: int,
) -> list[Any]:
    """A scope's fallback and Sharpe items: ``dates`` and forward returns ``ret`` (NaN:
    unknown) of its rows, ``calls`` (with RL, without RL: ``signed_calls``), ``fallbacks``
    (the row's run had the RL analyst on, the row stores no RL action)."""
    from otonom_runtime.monitor import Item

    items = _fallback_items(scope, *fallbacks, cfg)
    ppy = periods_per_year / cfg.horizon
    days, with_rl = daily_returns(dates, calls[0], ret)
    _, without = daily_returns(dates, calls[1], ret)
    a, b = _sharpe(with_rl, ppy), _sharpe(without, ppy)
    items += [Item(scope, "sharpe_rl", a), Item(scope, "sharpe_no_rl", b)]
    if a is None or b is None or days.size < cfg.min_rows:
        gain = None if a is None or b is None else a - b
        return [*items, Item(scope, "sharpe_rl_gain", gain, "n/a",
                             note=f"{days.size} days < min_rows {cfg.min_rows}: not judged"
                             if days.size < cfg.min_rows else "Sharpe undefined")]  # fmt: skip
    status = "alert" if a - b < -cfg.max_rl_sharpe_loss else "ok"
    return [*items, Item(scope, "sharpe_rl_gain", a - b, status)]


def daemon_items(daemon: Mapping[str, Any] | None, cfg: MonitoringConfig) -> list[Any]:
    """Scope ``all``'s items from the daemon's state row (``DaemonState`` columns; None: no
    daemon recorded one): predict latency percentiles and its fallback count; the note names
    the row's heartbeat and model version, and says when ``other_model`` (the daemon served
    another file than the model monitored)."""
    from otonom_runtime.monitor import ALL, Item

    if daemon is None:
        return []
    beat = daemon.get("heartbeat_at")
    note = f"daemon state of {beat:%Y-%m-%d %H:%M} UTC" if beat is not None else "daemon state"
    if daemon.get("model_version"):
        note += f", model version {daemon['model_version']}"
    if daemon.get("other_model"):
        note += " (not the model monitored)"
    latency = daemon.get("latency_ms")
    if latency:
        note += f": its last {int(latency.get('n', 0))} predict calls"
    items = [Item(ALL, "daemon_fallbacks", float(daemon.get("fallbacks") or 0), note=note)]
    if not latency:
        return [*items, Item(ALL, "predict_latency_ms", None, "n/a", (("quantile", "p99"),),
                             "no predict call recorded")]  # fmt: skip
    for q in QUANTILES:
        value = float(latency[q])
        status = "info"
        if q == "p99":
            status = "alert" if value > cfg.max_latency_ms else "ok"
        items.append(Item(ALL, "predict_latency_ms", value, status, (("quantile", q),), note))
    return items
