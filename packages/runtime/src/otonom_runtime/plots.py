"""PNG charts (matplotlib, an optional extra: ``pip install "otonom-runtime[plot]"``)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from otonom_runtime._errors import OtonomRuntimeError
from otonom_runtime.metrics import drawdown_series

if TYPE_CHECKING:
    from otonom_runtime.monitor import MonitorReport

__all__ = ["PlotUnavailableError", "figure", "plot_equity", "plot_monitor", "pyplot"]


class PlotUnavailableError(OtonomRuntimeError, RuntimeError):
    """matplotlib is not installed (PNG charts are an optional extra)."""


def figure(**kwargs: Any) -> Any:
    """A ``matplotlib.figure.Figure`` (``kwargs``: its arguments) on its own Agg canvas, or
    ``PlotUnavailableError`` saying how to install matplotlib. Every PNG chart of the project
    is drawn on one: no ``pyplot``, so no global backend is chosen (``matplotlib.use``) and no
    figure registry is touched; a process that imports the library (a daemon, a notebook)
    keeps its matplotlib settings."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise PlotUnavailableError(
            f"PNG charts need matplotlib ({exc}); install it with "
            "pip install 'otonom-runtime[plot]'"
        ) from None
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


class _Figures:
    """``pyplot()``'s answer: ``subplots`` and ``close`` as pyplot spells them, on ``figure()``."""

    @staticmethod
    def subplots(*args: Any, figsize: Any = None, **kwargs: Any) -> tuple[Any, Any]:
        fig = figure(figsize=figsize)
        return fig, fig.subplots(*args, **kwargs)

    @staticmethod
    def close(fig: Any) -> None:
        """Nothing to release: the figure is in no registry."""


def pyplot() -> Any:
    """For chart code written against pyplot (``plt.subplots(...)``, ``plt.close(fig)``): the
    same two calls drawing on ``figure()``, so without a global backend change; new code calls
    ``figure()``. ``PlotUnavailableError`` without matplotlib."""
    figure()  # fails now, not at the first chart, when matplotlib is missing
    return _Figures()


def plot_equity(
    curves: Mapping[str, tuple[npt.NDArray[np.datetime64], npt.ArrayLike]],
    path: str | Path,
    *,
    title: str,
) -> Path:
    """Equity curves (top) and their drawdowns (bottom) in one PNG; returns the path.

    ``curves``: label -> (dates, equity). Several curves share the axes (e.g. with and without
    the RL analyst).
    """
    fig = figure(figsize=(10, 6))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for label, (dates, equity) in curves.items():
        eq = np.asarray(equity, dtype=np.float64)
        x = np.asarray(dates, dtype="datetime64[D]")
        top.plot(x, eq, label=label, linewidth=1.2)
        bottom.fill_between(x, -100.0 * drawdown_series(eq), 0.0, alpha=0.4, label=label)
    top.set_title(title)
    top.set_ylabel("equity")
    top.grid(alpha=0.3)
    top.legend(loc="upper left")
    bottom.set_ylabel("drawdown %")
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return out


def _not_judged(report: MonitorReport, metric: str, **labels: str) -> str:
    """A second title line with the item's note when the report did not judge it (too few
    rows, calls or days: the table's ``?``), else nothing."""
    from otonom_runtime.monitor import ALL

    try:
        item = report.value(ALL, metric, **labels)
    except KeyError:
        return ""
    return f"\n({item.note})" if item.status == "n/a" and item.note else ""


def plot_monitor(report: MonitorReport, path: str | Path) -> Path:
    """``otonom monitor``'s dashboard in one PNG (written atomically): the model's action mix
    over time (weekly shares), hit rate by confidence bucket, PSI per feature group overall
    against the strategy's warn/alert lines, and the decisions' calls compounded with and
    without the RL analyst (``otonom_runtime.monitor_ops``); returns the path. Each bucket's bar
    is labelled with its number of calls, and a panel whose figure the report did not judge
    (too few rows, calls or days) says so under its title."""
    from otonom_runtime.monitor import ALL, BUCKETS
    from otonom_schema import GROUPS, Action, atomic_path

    fig = figure(figsize=(16, 4))
    mix, conf, drift, outcome = fig.subplots(1, 4)
    # one stacked bar a week (Monday to Sunday: 1970-01-01 was a Thursday), spanning its days
    dates = report.dates.astype("datetime64[D]")
    weeks = dates - (dates.astype(np.int64) + 3) % 7
    mondays = np.unique(weeks)
    shares = np.array([[np.mean(report.actions[weeks == w] == a) for w in mondays] for a in Action])
    below = np.zeros(mondays.size)
    for action, share in zip(Action, shares, strict=True):
        mix.bar(
            mondays, share, width=7.0, bottom=below, align="edge", label=action.name,
            edgecolor="white", linewidth=0.5,
        )  # fmt: skip
        below += share
    mix.set_title("model action mix (weekly)")
    mix.legend(loc="upper left", fontsize=8)
    mix.tick_params(axis="x", labelrotation=30, labelsize=7)
    rates, names, calls = [], [], []
    for lo, hi in itertools.pairwise(BUCKETS):
        inside = report.called & (report.confidence >= lo) & (report.confidence < hi)
        rates.append(float(report.hit[inside].mean()) if inside.any() else 0.0)
        names.append(f"{lo:.2f}+")
        calls.append(int(inside.sum()))
    bars = conf.bar(names, rates)
    conf.bar_label(bars, labels=[f"n={n}" for n in calls], fontsize=7)  # an empty one: n=0
    conf.axhline(report.thresholds.min_hit_rate, color="red", linestyle="--", linewidth=1)
    conf.set_title("hit rate by confidence" + _not_judged(report, "hit_rate"))
    conf.set_ylim(0.0, 1.05)
    values = [report.value(ALL, "feature_psi", feature_group=g).value or 0.0 for g in GROUPS]
    drift.bar(list(GROUPS), values)
    for level, colour in (
        (report.thresholds.psi_warn, "orange"),
        (report.thresholds.psi_alert, "red"),
    ):
        drift.axhline(level, color=colour, linestyle="--", linewidth=1)
    drift.set_title(
        "feature drift (PSI, all symbols)"
        + _not_judged(report, "feature_psi", feature_group=GROUPS[0])
    )
    drift.tick_params(axis="x", labelrotation=30, labelsize=7)
    marker = "o" if report.days.size < 2 else None  # one day: a point, else nothing is drawn
    for returns, label in ((report.returns_rl, "with RL"), (report.returns_no_rl, "without RL")):
        compounded = np.cumprod(1.0 + returns) - 1.0
        outcome.plot(report.days, compounded, label=label, linewidth=1, marker=marker)
    outcome.set_title("calls compounded (all symbols)" + _not_judged(report, "sharpe_rl_gain"))
    outcome.legend(loc="upper left", fontsize=8)
    outcome.tick_params(axis="x", labelrotation=30, labelsize=7)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    return out
