"""The comparison's results and its report (``otonom-train compare``, ``otonom_trainer.compare``).

``ArmResult``: one backtest of a test period (teacher, clone, agent, or the oracle);
``Departure``: where the agent's actions differ from the teacher's, per symbol and regime;
``WindowComparison``: one window, with the Sharpe differences and their intervals;
``CompareResult``: every window, pooled, ``markdown()`` (the report a trader reads) and
``to_dict()``; ``write_report`` writes ``compare.md``, ``compare.json`` and ``compare.png``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from otonom_schema import Action, atomic_write
from otonom_trainer.stats import (
    MIN_ROWS,
    SharpeDifference,
    deflated_sharpe_ratio,
    null_sharpe_variance,
    probabilistic_sharpe_ratio,
    sharpe_difference,
    sharpe_ratio,
)

if TYPE_CHECKING:
    from otonom_runtime.backtest import BacktestReport
    from otonom_trainer.walkforward import Window

__all__ = [
    "ARMS",
    "ArmResult",
    "CompareResult",
    "Departure",
    "WindowComparison",
    "write_report",
]

ARMS: Final = ("teacher", "clone", "agent", "ppo", "oracle", "oracle_state")
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ArmResult:
    """One test-period backtest: its figures and its daily equity."""

    sharpe: float | None
    total_return: float
    max_drawdown: float
    turnover: float | None
    dates: npt.NDArray[np.datetime64]
    equity: F64
    periods_per_year: int
    run_id: int | None = None
    degenerate: str | None = None  # the trainer's mark's reason: a model that learnt nothing

    @classmethod
    def from_report(cls, rep: BacktestReport) -> ArmResult:
        m = rep.metrics
        return cls(
            m.sharpe, m.total_return, m.max_drawdown, m.turnover,
            np.asarray(rep.dates).astype("datetime64[D]"), np.asarray(rep.equity, np.float64),
            int(m.periods_per_year), rep.run_id,
        )  # fmt: skip

    @classmethod
    def from_equity(cls, dates: npt.NDArray[Any], equity: F64, ppy: int) -> ArmResult:
        """Figures computed here (the oracle: no backtest, no turnover)."""
        r = equity[1:] / equity[:-1] - 1.0
        peak = np.maximum.accumulate(equity)
        drawdown = float(np.max(1.0 - equity / peak))
        return cls(
            sharpe_ratio(r, ppy), float(equity[-1] / equity[0] - 1.0), drawdown, None,
            np.asarray(dates).astype("datetime64[D]"), equity, ppy,
        )  # fmt: skip

    @property
    def returns(self) -> F64:
        out: F64 = self.equity[1:] / self.equity[:-1] - 1.0
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "sharpe": self.sharpe,
            "total_return": self.total_return,
            "max_drawdown": self.max_drawdown,
            "turnover": self.turnover,
            "days": int(self.dates.size),
            "run_id": self.run_id,
            "degenerate": self.degenerate,
            "first_day": str(self.dates[0]) if self.dates.size else None,
            "returns": [float(r) for r in self.returns],  # daily, from the second day on
        }


@dataclass(frozen=True)
class Departure:
    """The agent vs the teacher on one symbol's decision days of one regime: ``days``; the
    days their actions differ, by ``"TEACHER->AGENT"``; and the agent's sleeve return minus
    the teacher's in the step after those days (``earned_departing``) and over all the days of
    the regime (``earned``), summed, in return units."""

    symbol: str
    regime: str
    source: str
    days: int
    pairs: dict[str, int]
    earned_departing: float
    earned: float

    @classmethod
    def collect(
        cls,
        symbol: str,
        regime: str,
        source: str,
        teacher: npt.NDArray[np.int64],
        agent: npt.NDArray[np.int64],
        earned: F64,
    ) -> Departure:
        differ = teacher != agent
        pairs: dict[str, int] = {}
        for t, a in zip(teacher[differ].tolist(), agent[differ].tolist(), strict=True):
            key = f"{Action(t).name}->{Action(a).name}"
            pairs[key] = pairs.get(key, 0) + 1
        return cls(
            symbol, regime, source, int(teacher.size), pairs, float(earned[differ].sum()),
            float(earned.sum()),
        )  # fmt: skip

    @property
    def departing(self) -> int:
        return sum(self.pairs.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "regime": self.regime,
            "source": self.source,
            "days": self.days,
            "pairs": self.pairs,
            "earned_departing": self.earned_departing,
            "earned": self.earned,
        }


def _difference(
    a: F64, b: F64, ppy: int, *, confidence: float, samples: int, seed: int
) -> SharpeDifference | None:
    if a.size != b.size or a.size < MIN_ROWS:
        return None
    return sharpe_difference(a, b, ppy, confidence=confidence, samples=samples, seed=seed)


@dataclass(frozen=True)
class WindowComparison:
    """One window: each arm's test backtest, the Sharpe differences vs the teacher (None
    when the period is shorter than ``MIN_ROWS`` returns), the departures, the AWR beta."""

    window: Window
    arms: dict[str, ArmResult]
    agent_vs_teacher: SharpeDifference | None
    clone_vs_teacher: SharpeDifference | None
    departures: list[Departure]
    awr_beta: float
    ppo_vs_teacher: SharpeDifference | None = None

    @classmethod
    def build(
        cls,
        window: Window,
        arms: dict[str, ArmResult],
        departures: list[Departure],
        *,
        awr_beta: float,
        confidence: float,
        samples: int,
        seed: int,
    ) -> WindowComparison:
        t = arms["teacher"]
        opts: dict[str, Any] = {"confidence": confidence, "samples": samples, "seed": seed}
        ppy = t.periods_per_year
        agent = _difference(arms["agent"].returns, t.returns, ppy, **opts)
        clone = _difference(arms["clone"].returns, t.returns, ppy, **opts)
        ppo = (
            None if "ppo" not in arms else _difference(arms["ppo"].returns, t.returns, ppy, **opts)
        )
        return cls(window, arms, agent, clone, departures, awr_beta, ppo)

    @property
    def degenerate(self) -> list[str]:
        """The arms whose model the trainer marked degenerate."""
        return [name for name, arm in self.arms.items() if arm.degenerate]

    def line(self) -> str:
        """One console line: the three Sharpes and the agent's difference (and the arms whose
        model is degenerate)."""
        s = {k: _num(v.sharpe) for k, v in self.arms.items()}
        bad = self.degenerate
        return (
            f"Sharpe teacher {s['teacher']}, clone {s['clone']}, agent {s['agent']}"
            + "".join(f", {k} {s[k]}" for k in ("oracle", "oracle_state") if k in s)
            + f"; agent - teacher {_interval(self.agent_vs_teacher)}"
            + (f"; DEGENERATE {', '.join(bad)}" if bad else "")
        )

    def to_dict(self) -> dict[str, Any]:
        w = self.window
        return {
            "window": w.index,
            "train": [str(w.train_start), str(w.train_end)],
            "test": [str(w.test_start), str(w.test_end)],
            "arms": {k: v.to_dict() for k, v in self.arms.items()},
            "agent_vs_teacher": _diff_dict(self.agent_vs_teacher),
            "clone_vs_teacher": _diff_dict(self.clone_vs_teacher),
            "ppo_vs_teacher": _diff_dict(self.ppo_vs_teacher),
            "departures": [d.to_dict() for d in self.departures],
            "awr_beta": self.awr_beta,
        }


def _diff_dict(d: SharpeDifference | None) -> dict[str, Any] | None:
    return None if d is None else d.to_dict()


def _num(value: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if value is None or not math.isfinite(value) else fmt.format(value)


def _interval(d: SharpeDifference | None) -> str:
    if d is None:
        return "- (too few days)"
    return f"{d.difference:+.2f} [{d.low:+.2f}, {d.high:+.2f}]"


@dataclass
class CompareResult:
    """Every window and the pooled view; ``config`` the filled-in settings as a dict."""

    config: dict[str, Any]
    windows: list[WindowComparison]
    teacher_run_id: int
    n_trials: int
    trials_source: str
    out_dir: Path
    elapsed_s: float = 0.0

    @property
    def confidence(self) -> float:
        return float(self.config["confidence"])

    def pooled_returns(self, arm: str) -> F64:
        """The arm's daily returns of every test period, joined oldest first."""
        parts = [w.arms[arm].returns for w in self.windows if arm in w.arms]
        return np.concatenate(parts) if parts else np.zeros(0)

    def pooled(self) -> dict[str, Any]:
        """Pooled Sharpes, differences vs the teacher with intervals, the agent's PSR and
        deflated Sharpe, and in how many windows the agent's Sharpe beat the teacher's."""
        ppy = self.windows[0].arms["teacher"].periods_per_year
        opts: dict[str, Any] = {
            "confidence": self.confidence,
            "samples": int(self.config["samples"]),
            "seed": int(self.config["seed"]),
        }
        teacher, agent = self.pooled_returns("teacher"), self.pooled_returns("agent")
        arms = [a for a in ARMS if all(a in w.arms for w in self.windows)]
        out: dict[str, Any] = {
            "sharpe": {a: sharpe_ratio(self.pooled_returns(a), ppy) for a in arms},
            "agent_vs_teacher": _difference(agent, teacher, ppy, **opts),
            "clone_vs_teacher": _difference(self.pooled_returns("clone"), teacher, ppy, **opts),
            "ppo_vs_teacher": None
            if "ppo" not in arms
            else _difference(self.pooled_returns("ppo"), teacher, ppy, **opts),
            "psr_agent": None,
            "dsr_agent": None,
            "n_trials": self.n_trials,
        }
        if agent.size >= MIN_ROWS:
            out["psr_agent"] = probabilistic_sharpe_ratio(agent, 0.0, ppy)
            variance = null_sharpe_variance(int(agent.size), ppy)
            out["dsr_agent"] = deflated_sharpe_ratio(agent, self.n_trials, variance, ppy)
        wins = [
            (w.arms["agent"].sharpe or 0.0) > (w.arms["teacher"].sharpe or 0.0)
            for w in self.windows
        ]
        out["agent_wins"] = sum(wins)
        for bound in ("oracle", "oracle_state"):
            if bound in arms:
                out[f"{bound}_vs_agent"] = _difference(
                    self.pooled_returns(bound), agent, ppy, **opts
                )
        return out

    def verdict(self) -> str:
        """The issue's bar: the agent's Sharpe above the teacher's in >= 4 of 5 windows (80 %
        of them) and the pooled interval above 0."""
        p = self.pooled()
        n, wins, d = len(self.windows), p["agent_wins"], p["agent_vs_teacher"]
        above = d is not None and d.low > 0
        met = wins >= math.ceil(0.8 * n) and above
        return (
            f"agent above teacher in {wins} of {n} windows; pooled difference "
            f"{_interval(d)} at {self.confidence:.0%}: "
            + ("MET (>= 80 % of windows and interval above 0)" if met else "NOT met")
        )

    def degenerate_note(self) -> str | None:
        """A warning naming the windows' degenerate models (None when there is none): their
        Sharpe is the teacher's vote with a constant voter added, not a learnt policy's."""
        bad = [
            f"W{w.window.index:02d} {', '.join(w.degenerate)}" for w in self.windows if w.degenerate
        ]
        if not bad:
            return None
        return (
            f"warning: DEGENERATE models in {len(bad)} of {len(self.windows)} windows ("
            + "; ".join(bad)
            + "): each predicts one action, or scores below the majority baseline + 2 points (the "
            "reason in its window's train.log); their figures show a model that learnt next to "
            "nothing, not what the method can do (more --epochs or data)"
        )

    def summary(self) -> str:
        note = self.degenerate_note()
        return self.verdict() + ("" if note is None else "\n" + note)

    def to_dict(self) -> dict[str, Any]:
        p = self.pooled()
        for key in (
            "agent_vs_teacher",
            "clone_vs_teacher",
            "ppo_vs_teacher",
            "oracle_vs_agent",
            "oracle_state_vs_agent",
        ):
            if key in p:
                p[key] = _diff_dict(p[key])
        return {
            "config": self.config,
            "teacher_run_id": self.teacher_run_id,
            "trials_source": self.trials_source,
            "windows": [w.to_dict() for w in self.windows],
            "pooled": p,
            "verdict": self.verdict(),
            "elapsed_s": self.elapsed_s,
        }

    def markdown(self) -> str:
        from otonom_trainer.compare_text import report_markdown

        return report_markdown(self)


def write_report(result: CompareResult, folder: Path) -> None:
    """``compare.md``, ``compare.json`` and ``compare.png`` into ``folder``."""
    from otonom_trainer.compare_text import plot_report

    atomic_write(folder / "compare.md", result.markdown() + "\n")
    atomic_write(folder / "compare.json", json.dumps(result.to_dict(), indent=2) + "\n")
    plot_report(result, folder / "compare.png")
