"""Monitoring a deployed policy: ``monitor(session, policy, config, decisions)``.

The states come from the store through the same feature code as the backtest and the dataset
(``RlStateBuilder.build_states``, with each decision's stored portfolio); the model answers
them through ``RlPolicy.predict_batch``. Per symbol and overall (scope ``all``) the report
holds the model's action mix against the training summary in its metadata
(``otonom.training_summary``: PSI and a chi-square test, ``otonom_runtime.drift``), the
strength range, the mean confidence (max probability), the drift of each feature group (mean
PSI of its features against the training bins), from later prices the hit rate of the
model's BUY/SELL calls ``horizon`` bars on, overall and by confidence bucket, and (when the run
served an RL model) how often the model picks the RL action the decision row stored
(``served_agreement``: 1.0 when it is the model the run served). Thresholds are the
strategy's ``monitoring`` section (``MonitoringConfig``); a model without a summary gets ``n/a``
("no training summary") for the items that need it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from sqlalchemy.orm import Session

from otonom_runtime.builder import RlStateBuilder
from otonom_runtime.drift import TrainingSummary, action_shares, chi_square_test, psi
from otonom_runtime.monitor_ops import (
    OPS_HELP,
    daemon_items,
    daily_returns,
    ops_items,
    signed_calls,
    three_analyst_calls,
)
from otonom_runtime.policy import RlPolicy
from otonom_runtime.store import load_history
from otonom_runtime.strategy import MonitoringConfig, StrategyConfig
from otonom_schema import GROUPS, Action, portfolio_feature_matrix

__all__ = [
    "ALERT_EXIT",
    "BUCKETS",
    "Item",
    "MonitorReport",
    "monitor",
    "prometheus_text",
    "table_text",
]

ALERT_EXIT: Final = 3
"""``otonom monitor``'s exit status when an item breaches its alert threshold."""
BUCKETS: Final = (1.0 / 3.0, 0.5, 0.6, 0.7, 0.8, 1.0 + 1e-9)
"""Confidence (max probability) bucket edges of the hit rate."""
ALL: Final = "all"
_NO_DAYS: Final = np.zeros(0, dtype="datetime64[D]")
_NONE: Final = np.zeros(0)
NO_SUMMARY: Final = "no training summary"
_ACTIONS: Final = tuple(a.name.lower() for a in Action)


@dataclass(frozen=True)
class Item:
    """One figure of the report: ``scope`` (a symbol or ``all``), ``metric``, ``labels``
    (e.g. ``(("feature_group", "market"),)``), ``value`` (None: not computable), ``status``
    (``ok``, ``warn``, ``alert``, ``info`` or ``n/a``) and a ``note``."""

    scope: str
    metric: str
    value: float | None
    status: str = "info"
    labels: tuple[tuple[str, str], ...] = ()
    note: str = ""


@dataclass(frozen=True)
class _Scope:
    """A scope's rows: states, the model's answers, and the outcomes of its calls."""

    states: npt.NDArray[np.float32]
    actions: npt.NDArray[np.int64]
    strengths: npt.NDArray[np.float32]
    confidence: npt.NDArray[np.float32]
    called: npt.NDArray[np.bool_]
    hit: npt.NDArray[np.bool_]
    served: npt.NDArray[np.int64]  # the RL action the decision row stored, -1: none
    dates: npt.NDArray[np.datetime64]
    ret: npt.NDArray[np.float64]  # close-to-close return ``horizon`` bars on, NaN: unknown
    with_rl: npt.NDArray[np.float64]  # the stored decision's signed call
    without_rl: npt.NDArray[np.float64]  # the three analysts' signed call
    rl_on: npt.NDArray[np.bool_]  # the row's run had the RL analyst on
    rl_missing: npt.NDArray[np.bool_]  # the row stores no RL action


@dataclass(frozen=True)
class MonitorReport:
    """``monitor``'s answer: the items, the window and, for the dashboard, the per-row
    ``dates`` / ``actions`` / ``confidence`` / ``called`` / ``hit`` over all symbols."""

    model: str
    start: dt.date | None
    end: dt.date | None
    symbols: tuple[str, ...]
    has_summary: bool
    thresholds: MonitoringConfig
    items: tuple[Item, ...]
    dates: npt.NDArray[np.datetime64] = field(repr=False)
    actions: npt.NDArray[np.int64] = field(repr=False)
    confidence: npt.NDArray[np.float32] = field(repr=False)
    called: npt.NDArray[np.bool_] = field(repr=False)
    hit: npt.NDArray[np.bool_] = field(repr=False)
    days: npt.NDArray[np.datetime64] = field(repr=False, default_factory=lambda: _NO_DAYS)
    returns_rl: npt.NDArray[np.float64] = field(repr=False, default_factory=lambda: _NONE)
    returns_no_rl: npt.NDArray[np.float64] = field(repr=False, default_factory=lambda: _NONE)

    @property
    def alerts(self) -> list[Item]:
        """The items at ``alert`` (the command exits with ``ALERT_EXIT`` when any)."""
        return [i for i in self.items if i.status == "alert"]

    def value(self, scope: str, metric: str, **labels: str) -> Item:
        """The item of ``scope``/``metric`` with these ``labels``; ``KeyError`` if none."""
        want = tuple(sorted(labels.items()))
        for item in self.items:
            if (item.scope, item.metric, tuple(sorted(item.labels))) == (scope, metric, want):
                return item
        raise KeyError(f"no item {scope}/{metric} {labels}")

    def to_json(self) -> dict[str, Any]:
        """The report as plain JSON-able data."""
        return {
            "model": self.model,
            "start": None if self.start is None else self.start.isoformat(),
            "end": None if self.end is None else self.end.isoformat(),
            "symbols": list(self.symbols),
            "training_summary": self.has_summary,
            "thresholds": dataclasses.asdict(self.thresholds),
            "alerts": len(self.alerts),
            "items": [
                {
                    "scope": i.scope,
                    "metric": i.metric,
                    "labels": dict(i.labels),
                    "value": i.value,
                    "status": i.status,
                    "note": i.note,
                }
                for i in self.items
            ],
        }

    def json_text(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"


def _judge_psi(value: float, cfg: MonitoringConfig) -> str:
    return "alert" if value >= cfg.psi_alert else "warn" if value >= cfg.psi_warn else "ok"


def _too_few(n: int, cfg: MonitoringConfig, what: str = "rows") -> str:
    return f"{n} {what} < min_rows {cfg.min_rows}: not judged"


def _action_items(
    scope: str, s: _Scope, summary: TrainingSummary | None, cfg: MonitoringConfig
) -> list[Item]:
    n = int(s.actions.size)
    shares = action_shares(s.actions)
    items = [Item(scope, "rows", float(n))]
    items += [
        Item(scope, "action_share", float(v), labels=(("action", a),))
        for a, v in zip(_ACTIONS, shares, strict=True)
    ]
    if summary is None:
        return items + [
            Item(scope, m, None, "n/a", note=NO_SUMMARY) for m in ("action_psi", "action_chi2_p")
        ]
    ref = summary.reference_actions
    value = psi(ref, shares)
    _, p = chi_square_test(np.bincount(s.actions, minlength=3)[:3], ref)
    few = n < cfg.min_rows
    return [
        *items,
        Item(scope, "action_psi", value, "n/a" if few else _judge_psi(value, cfg),
             note=_too_few(n, cfg) if few else ""),
        Item(scope, "action_chi2_p", p, "n/a" if few else _judge_chi2(p, value, cfg),
             note=_too_few(n, cfg) if few else ""),
    ]  # fmt: skip


def _judge_chi2(p: float, action_psi: float, cfg: MonitoringConfig) -> str:
    """The action mix's test: significant (p below ``chi2_p_value``) *and* large (its PSI at
    ``psi_warn`` or more) alerts; significant but small warns (on thousands of rows the test
    finds differences of a point or two); else ok."""
    if p >= cfg.chi2_p_value:
        return "ok"
    return "alert" if action_psi >= cfg.psi_warn else "warn"


def _drift_items(
    scope: str, s: _Scope, summary: TrainingSummary | None, cfg: MonitoringConfig
) -> list[Item]:
    if summary is None:
        return [
            Item(scope, "feature_psi", None, "n/a", (("feature_group", g),), NO_SUMMARY)
            for g in GROUPS
        ]
    n = int(s.states.shape[0])
    few = n < cfg.min_rows
    return [
        Item(scope, "feature_psi", v, "n/a" if few else _judge_psi(v, cfg),
             (("feature_group", g),), _too_few(n, cfg) if few else "")
        for g, v in summary.group_psi(s.states).items()
    ]  # fmt: skip


def _output_items(scope: str, s: _Scope, cfg: MonitoringConfig) -> list[Item]:
    items = [
        Item(scope, "strength_min", float(s.strengths.min())),
        Item(scope, "strength_max", float(s.strengths.max())),
        Item(scope, "confidence_mean", float(s.confidence.mean())),
    ]
    stored = s.served >= 0
    if stored.any():  # the run served an RL model: does this one answer as it did?
        same = float(np.mean(s.actions[stored] == s.served[stored]))
        note = f"{int(stored.sum())} rows with a stored RL action"
        items.append(Item(scope, "served_agreement", same, note=note))
    calls = int(s.called.sum())
    rate = float(s.hit[s.called].mean()) if calls else None
    items.append(Item(scope, "calls", float(calls)))
    if rate is None or calls < cfg.min_rows:
        items.append(Item(scope, "hit_rate", rate, "n/a", note=_too_few(calls, cfg, "calls")))
    else:
        status = "alert" if rate < cfg.min_hit_rate else "ok"
        items.append(Item(scope, "hit_rate", rate, status))
    for lo, hi in itertools.pairwise(BUCKETS):
        inside = s.called & (s.confidence >= lo) & (s.confidence < hi)
        k = int(inside.sum())
        label = (("bucket", f"{lo:.2f}-{min(hi, 1.0):.2f}"),)
        items.append(Item(scope, "bucket_calls", float(k), labels=label))
        items.append(
            Item(scope, "bucket_hit_rate", float(s.hit[inside].mean()) if k else None,
                 labels=label)
        )  # fmt: skip
    return items


def _outcomes(
    session: Session, symbol: str, dates: Sequence[dt.date], actions: npt.NDArray[np.int64],
    horizon: int,
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_], npt.NDArray[np.float64]]:  # fmt: skip
    """(called, hit, ret): a BUY/SELL call whose close ``horizon`` bars after the decision's
    bar is stored; hit when the price moved the called way; ``ret`` the close-to-close return
    to that bar (NaN: not stored yet)."""
    history = load_history(session, symbol)
    close = np.asarray(history.close, dtype=np.float64)
    pos = np.searchsorted(history.dates, np.array(dates, dtype="datetime64[D]"), "right") - 1
    later = pos + horizon
    known = (pos >= 0) & (later < close.size)
    ret = np.full(len(dates), np.nan)
    ret[known] = close[later[known]] / close[pos[known]] - 1.0
    called = known & (actions != int(Action.HOLD))
    hit = called & (
        ((actions == int(Action.BUY)) & (ret > 0)) | ((actions == int(Action.SELL)) & (ret < 0))
    )
    return called, hit, ret


def _scope(
    session: Session, builder: RlStateBuilder, policy: RlPolicy, symbol: str,
    rows: Mapping[str, Sequence[Any]], horizon: int, vote: tuple[Sequence[float], float],
) -> _Scope:  # fmt: skip
    portfolio = portfolio_feature_matrix(
        rows["position"], rows["leverage"], rows["cash_fraction"], rows["days_since_last_trade"]
    )
    states = builder.build_states(symbol, list(rows["date"]), portfolio)
    actions, strengths, probs = policy.predict_batch(states)
    called, hit, ret = _outcomes(session, symbol, list(rows["date"]), actions, horizon)
    served = np.array([-1 if a is None else a for a in rows["rl_action"]], dtype=np.int64)
    return _Scope(
        states, actions, strengths, probs.max(axis=1), called, hit, served,
        np.array(rows["date"], dtype="datetime64[D]"), ret,
        signed_calls(rows["action"], rows["strength"]), three_analyst_calls(rows, *vote),
        np.array(rows["rl_on"], dtype=bool), served < 0,
    )  # fmt: skip


def _concat(scopes: Sequence[_Scope]) -> _Scope:
    names = [f.name for f in dataclasses.fields(_Scope)]
    return _Scope(*(np.concatenate([getattr(s, f) for s in scopes]) for f in names))


def monitor(
    session: Session,
    policy: RlPolicy,
    cfg: MonitoringConfig,
    decisions: Mapping[str, Sequence[Any]],
    *,
    start: dt.date | None = None,
    end: dt.date | None = None,
    strategy: StrategyConfig | None = None,
    daemon: Mapping[str, Any] | None = None,
) -> MonitorReport:
    """The report over ``decisions`` (columns as ``store.monitoring.monitored_decisions``
    returns them, ordered by symbol then date; at least one row). States are rebuilt with
    ``RlStateBuilder.build_states`` and answered by ``policy.predict_batch``. ``strategy``
    (None: the defaults) gives the three analysts' weights, ``min_score`` and the bars per
    year of the Sharpe without the RL analyst (``otonom_runtime.monitor_ops``); ``daemon``: the
    daemon's state row (``DaemonState`` columns) for the latency items, None: none."""
    from otonom_runtime.backtest.params import engine_params

    config = strategy if strategy is not None else StrategyConfig()
    params = engine_params(config)
    vote = (params.weights[:3], params.min_score)
    summary = policy.training_summary()
    names = list(decisions["symbol"])
    builder = RlStateBuilder(session)
    scopes: dict[str, _Scope] = {}
    for symbol in dict.fromkeys(names):
        picked = [i for i, n in enumerate(names) if n == symbol]
        rows = {k: [v[i] for i in picked] for k, v in decisions.items()}
        scopes[symbol] = _scope(session, builder, policy, symbol, rows, cfg.horizon, vote)
    every = _concat(list(scopes.values()))
    scopes[ALL] = every
    ppy = config.calendar.resolve(every.dates)
    items: list[Item] = []
    for scope, s in scopes.items():
        items += _action_items(scope, s, summary, cfg)
        items += _output_items(scope, s, cfg)
        items += _drift_items(scope, s, summary, cfg)
        items += ops_items(
            scope, s.dates, s.ret, (s.with_rl, s.without_rl), (s.rl_on, s.rl_missing), cfg, ppy
        )
    items += daemon_items(daemon, cfg)
    days, returns_rl = daily_returns(every.dates, every.with_rl, every.ret)
    return MonitorReport(
        model=str(policy.path),
        start=start,
        end=end,
        symbols=tuple(k for k in scopes if k != ALL),
        has_summary=summary is not None,
        thresholds=cfg,
        items=tuple(items),
        dates=every.dates,
        actions=every.actions,
        confidence=every.confidence,
        called=every.called,
        hit=every.hit,
        days=days,
        returns_rl=returns_rl,
        returns_no_rl=daily_returns(every.dates, every.without_rl, every.ret)[1],
    )


# --- output ---------------------------------------------------------------------------------

_MARK: Final = {"alert": "!!", "warn": "!", "n/a": "?"}
_HELP: Final = {
    "rows": "decisions monitored",
    "action_share": "share of the model's actions",
    "action_psi": "PSI of the model's action mix against training",
    "action_chi2_p": "chi-square p-value of the model's action mix against training",
    "strength_min": "smallest strength",
    "strength_max": "largest strength",
    "confidence_mean": "mean prediction confidence (max probability)",
    "served_agreement": "share of rows where the model picks the RL action the run stored",
    "calls": "BUY/SELL calls with a known outcome",
    "hit_rate": "share of BUY/SELL calls the price then followed",
    "bucket_calls": "calls in a confidence bucket",
    "bucket_hit_rate": "hit rate in a confidence bucket",
    "feature_psi": "mean PSI of a feature group against the training bins",
    "status": "0 ok, 1 warn, 2 alert per judged item",
    **OPS_HELP,
}


def _cell(report: MonitorReport, scope: str, metric: str, fmt: str, **labels: str) -> str:
    item = report.value(scope, metric, **labels)
    text = "-" if item.value is None else format(item.value, fmt)
    return text + _MARK.get(item.status, "")


def _marked(report: MonitorReport, scope: str, metric: str, judged: str, fmt: str) -> str:
    """``metric``'s value with the mark of the item ``judged`` of the same scope."""
    item = report.value(scope, metric)
    text = "-" if item.value is None else format(item.value, fmt)
    return text + _MARK.get(report.value(scope, judged).status, "")


def table_text(report: MonitorReport) -> str:
    """One row per scope (symbols, then ``all``), a bucket table, and the alerts and warnings
    in words. Marks: ``!!`` alert, ``!`` warn, ``?`` not judged."""
    from otonom_runtime.cli._text import table

    headers = ["scope", "rows", "hold/buy/sell", "act PSI", "chi2 p", "strength", "conf",
               "hit rate", "fallbacks", "Sharpe RL/no RL", *GROUPS]  # fmt: skip
    rows = []
    for scope in (*report.symbols, ALL):
        mix = "/".join(_cell(report, scope, "action_share", ".0%", action=a) for a in _ACTIONS)
        strength = (
            f"{_cell(report, scope, 'strength_min', '.2f')}.."
            f"{_cell(report, scope, 'strength_max', '.2f')}"
        )
        hits = _cell(report, scope, "hit_rate", ".0%")
        calls = _cell(report, scope, "calls", ".0f")
        rows.append(
            [scope, _cell(report, scope, "rows", ".0f"), mix,
             _cell(report, scope, "action_psi", ".3f"),
             _cell(report, scope, "action_chi2_p", ".3g"),
             strength, _cell(report, scope, "confidence_mean", ".2f"), f"{hits} ({calls})",
             _marked(report, scope, "fallbacks", "fallback_rate", ".0f"),
             f"{_cell(report, scope, 'sharpe_rl', '.2f')}/"
             + _marked(report, scope, "sharpe_no_rl", "sharpe_rl_gain", ".2f"),
             *(_cell(report, scope, "feature_psi", ".3f", feature_group=g) for g in GROUPS)]
        )  # fmt: skip
    lines = [table(headers, rows, right=set(range(1, len(headers))))]
    lines.append("marks: !! alert, ! warn, ? not judged (see the notes); drift columns: PSI")
    buckets = [
        [i.labels[0][1], f"{report.value(ALL, 'bucket_calls', bucket=i.labels[0][1]).value:.0f}",
         "-" if i.value is None else f"{i.value:.0%}"]
        for i in report.items if i.scope == ALL and i.metric == "bucket_hit_rate"
    ]  # fmt: skip
    lines += ["", table(["confidence", "calls", "hit rate"], buckets, right={1, 2})]
    latency = [i for i in report.items if i.metric == "predict_latency_ms" and i.value is not None]
    if latency:
        lines.append("daemon predict latency: " + ", ".join(
            f"{dict(i.labels)['quantile']} {i.value:.3f} ms{_MARK.get(i.status, '')}"
            for i in latency
        ) + f"; daemon fallbacks {report.value(ALL, 'daemon_fallbacks').value:.0f}")  # fmt: skip
    if not report.has_summary:
        lines.append(f"{NO_SUMMARY} in {report.model}: action PSI, chi-square and drift n/a")
    notes = {i.note for i in report.items if i.note and i.note != NO_SUMMARY}
    lines += [f"note: {n}" for n in sorted(notes)]
    for item in report.items:
        if item.status in ("alert", "warn"):
            what = " ".join(f"{k}={v}" for k, v in item.labels)
            lines.append(f"{item.status.upper()}: {item.scope} {item.metric} {what} = "
                         f"{item.value:.4g}".replace("  ", " "))  # fmt: skip
    lines.append(f"{len(report.alerts)} alert(s)")
    return "\n".join(lines)


def _labels(pairs: Sequence[tuple[str, str]]) -> str:
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in pairs) + "}"


def prometheus_text(report: MonitorReport, prefix: str = "otonom_monitor_") -> str:
    """The report in the Prometheus text exposition format: one gauge family per metric
    (``# HELP`` / ``# TYPE`` lines), labels ``symbol`` (``all`` overall) and the item's own
    (``feature_group``, ``action``, ``bucket``); values None are left out. ``..._status`` holds
    0/1/2 (ok/warn/alert) for every judged item, labelled with its ``check``."""
    families: dict[str, list[str]] = {}
    for item in report.items:
        labels = _labels((("symbol", item.scope), *item.labels))
        if item.value is not None:
            families.setdefault(item.metric, []).append(f"{prefix}{item.metric}{labels} "
                                                        f"{item.value:.10g}")  # fmt: skip
        level = {"ok": 0, "warn": 1, "alert": 2}.get(item.status)
        if level is not None:
            pairs = (("symbol", item.scope), ("check", item.metric), *item.labels)
            families.setdefault("status", []).append(f"{prefix}status{_labels(pairs)} {level}")
    out = []
    for metric, lines in families.items():
        out += [f"# HELP {prefix}{metric} {_HELP[metric]}", f"# TYPE {prefix}{metric} gauge"]
        out += lines
    return "\n".join(out) + "\n"
