"""The comparison's markdown report and its figure (``otonom_trainer.compare_report``).

``report_markdown(result)``: what a trader reads, top to bottom: the verdict, how to read it,
the pooled figures, a row per window, the upper bound (``--oracle``), and where the agent
departs from the teacher. ``plot_report(result, path)``: the equity curves, the per-window
differences with their intervals, and the agent's departures and earnings by regime
(``otonom_trainer.plots.plot_comparison``).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from otonom_trainer.compare_report import ARMS, _interval, _num

if TYPE_CHECKING:
    from otonom_trainer.compare_report import CompareResult

__all__ = ["plot_report", "report_markdown"]

HOW_TO_READ = """\
How to read this: the **teacher** is the rule ensemble alone; the **clone** imitates it; the
**agent** imitates it weighted by what each decision earned (AWR). Each model is trained on a
window's training years only and judged on the months after. A Sharpe over a few months has a
standard error near 1, so read the **difference** with its interval, not two point estimates:
an interval wholly above 0 is evidence the agent helps, one containing 0 means "cannot tell".
PSR is the probability that the agent's true Sharpe is above 0; the deflated Sharpe is the same
against the best Sharpe that luck alone gives among the N configurations tried (every training
run, tuning trial and fine-tuning counted in the trials ledger), so it falls as more is tried."""


def _pct(value: float | None) -> str:
    return _num(None if value is None else 100.0 * value, "{:+.1f} %")


def _window_table(result: CompareResult) -> list[str]:
    arms = [a for a in ARMS if all(a in w.arms for w in result.windows)]
    head = ["window", "test period"] + [f"Sharpe {a}" for a in arms]
    head += ["return T/C/A", "max DD T/C/A", "turnover T/C/A", "agent - teacher", "clone - teacher"]
    head += ["ppo - teacher"] if "ppo" in arms else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for w in result.windows:
        three = [w.arms[a] for a in ("teacher", "clone", "agent")]
        cells = [w.window.label, f"{w.window.test_start} .. {w.window.test_end}"]
        cells += [_num(w.arms[a].sharpe) for a in arms]
        cells.append(" / ".join(_pct(r.total_return) for r in three))
        cells.append(" / ".join(_pct(-r.max_drawdown) for r in three))
        cells.append(" / ".join(_num(r.turnover) for r in three))
        cells += [_interval(w.agent_vs_teacher), _interval(w.clone_vs_teacher)]
        if "ppo" in arms:
            cells.append(_interval(w.ppo_vs_teacher))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _pooled_lines(result: CompareResult) -> list[str]:
    p = result.pooled()
    sharpe = ", ".join(f"{a} {_num(v)}" for a, v in p["sharpe"].items())
    level = f"{result.confidence:.0%}"
    lines = [
        f"- Sharpe over every test day: {sharpe}",
        f"- agent - teacher: {_interval(p['agent_vs_teacher'])} ({level} block bootstrap)"
        + ("" if p["agent_vs_teacher"] is None else f": {p['agent_vs_teacher'].verdict}"),
        f"- clone - teacher: {_interval(p['clone_vs_teacher'])}"
        + ("" if p["clone_vs_teacher"] is None else f": {p['clone_vs_teacher'].verdict}"),
        *(
            [f"- ppo - teacher: {_interval(p['ppo_vs_teacher'])}: {p['ppo_vs_teacher'].verdict}"]
            if p["ppo_vs_teacher"] is not None
            else []
        ),
        f"- agent: PSR {_num(p['psr_agent'])}, deflated Sharpe {_num(p['dsr_agent'])} "
        f"with {p['n_trials']} trials ({result.trials_source})",
    ]
    for key, told in (("oracle", "the hidden trend"), ("oracle_state", "every hidden variable")):
        if f"{key}_vs_agent" in p:
            lines.append(
                f"- upper bound `{key}` (told {told}) - agent: "
                f"{_interval(p[f'{key}_vs_agent'])}: how far the agent is from it"
            )
    return lines


def departures_by(result: CompareResult, key: str) -> dict[str, dict[str, float]]:
    """Summed over windows and symbols, by ``regime`` or by action ``pair``: days, departing
    days and earned (agent - teacher sleeve return, summed)."""
    out: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for w in result.windows:
        for d in w.departures:
            if key == "regime":
                row = out[d.regime]
                row["days"] += d.days
                row["departing"] += d.departing
                row["earned_departing"] += d.earned_departing
                row["earned"] += d.earned
            else:
                for pair, count in d.pairs.items():
                    out[pair]["departing"] += count
    return {k: dict(v) for k, v in out.items()}


def _departure_lines(result: CompareResult) -> list[str]:
    sources = sorted({d.source for w in result.windows for d in w.departures})
    regimes = departures_by(result, "regime")
    pairs = departures_by(result, "pair")
    total = sum(r["departing"] for r in regimes.values())
    days = sum(r["days"] for r in regimes.values())
    lines = [
        f"The agent's action differs from the teacher's on {int(total)} of {int(days)} "
        f"symbol-days. Regime: {'; '.join(sources) or '-'}. Earned: the agent's sleeve return "
        "minus the teacher's, summed over the steps after (in %, per symbol sleeve).",
        "",
        "| regime | symbol-days | departures | share | earned after departures "
        "| earned in regime |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("up", "flat", "down"):
        if name in regimes:
            r = regimes[name]
            share = r["departing"] / r["days"] if r["days"] else 0.0
            lines.append(
                f"| {name} | {int(r['days'])} | {int(r['departing'])} | {share:.1%} | "
                f"{_pct(r['earned_departing'])} | {_pct(r['earned'])} |"
            )
    lines += ["", "| teacher -> agent | days |", "|---|---|"]
    for pair, row in sorted(pairs.items(), key=lambda kv: -kv[1]["departing"]):
        lines.append(f"| {pair} | {int(row['departing'])} |")
    return lines


def report_markdown(result: CompareResult) -> str:
    """The whole report (module docstring)."""
    c = result.config
    lines = [
        "# Teacher vs clone vs agent: walk-forward comparison",
        "",
        f"Symbols {', '.join(c['symbols'])}; data {c['start']} .. {c['end']}; "
        f"{len(result.windows)} windows of {c['train_years']} y train + {c['test_months']} m "
        f"test; seed {c['seed']}; {c['epochs']} epochs, hidden {c['hidden_dim']}, AWR beta "
        f"{c['awr_beta']}; RL mode {c.get('rl_mode') or 'as in the strategy file'}; teacher run "
        f"{result.teacher_run_id}.",
        "",
        f"**Verdict:** {result.verdict()}",
        "",
        *([] if (note := result.degenerate_note()) is None else [f"**{note}**", ""]),
        HOW_TO_READ,
        "",
        "## Pooled over every test period",
        "",
        *_pooled_lines(result),
        "",
        "## Per window (T = teacher, C = clone, A = agent; differences with "
        f"{result.confidence:.0%} intervals)",
        "",
        *_window_table(result),
        "",
        "## Where the agent departs from the teacher",
        "",
        *_departure_lines(result),
        "",
        "![equity, differences, departures](compare.png)",
    ]
    return "\n".join(lines)


def plot_report(result: CompareResult, path: Path) -> Path:
    """The report's figure through ``otonom_trainer.plots.plot_comparison``."""
    from otonom_trainer.plots import plot_comparison

    arms = [a for a in ARMS if all(a in w.arms for w in result.windows)]
    curves: dict[str, tuple[Any, Any]] = {}
    for arm in arms:
        dates = np.concatenate([w.arms[arm].dates[1:] for w in result.windows])
        curves[arm] = (dates, np.cumprod(1.0 + result.pooled_returns(arm)))
    nan = float("nan")
    diffs: dict[str, list[tuple[float, float, float]]] = {}
    for name in ("agent_vs_teacher", "clone_vs_teacher", "ppo_vs_teacher"):
        if name == "ppo_vs_teacher" and "ppo" not in arms:
            continue
        diffs[name.replace("_vs_", " - ")] = [
            (nan, nan, nan) if d is None else (d.difference, d.low, d.high)
            for d in (getattr(w, name) for w in result.windows)
        ]
    regimes = departures_by(result, "regime")
    names = [n for n in ("up", "flat", "down") if n in regimes]
    return plot_comparison(
        path,
        equity=curves,
        windows=[w.window.label for w in result.windows],
        differences=diffs,
        regimes=names,
        departures=[regimes[n]["departing"] / max(regimes[n]["days"], 1.0) for n in names],
        earned=[regimes[n]["earned"] for n in names],
    )
