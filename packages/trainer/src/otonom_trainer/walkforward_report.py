"""The walk-forward report: a row per window (``WindowResult``), the whole run with its
aggregate, markdown table and JSON (``WalkForwardResult``), and the plot
(``plot_walk_forward``). ``otonom_trainer.walkforward`` re-exports these names."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from otonom_trainer.walkforward import WalkForwardConfig, Window

__all__ = ["WalkForwardResult", "WindowResult", "fmt_number", "plot_walk_forward"]


# --- results -------------------------------------------------------------------------------------


@dataclass
class WindowResult:
    """One window's out-of-sample figures (Sharpe is None where it is undefined)."""

    window: Window
    train_rows: int
    test_rows: int
    accuracy: float
    macro_f1: float
    sharpe_no_rl: float | None
    sharpe_rl: float | None
    return_no_rl: float
    return_rl: float
    rl_fallbacks: int
    model: str
    run_ids: dict[str, int]
    elapsed_s: float

    @property
    def sharpe_delta(self) -> float | None:
        if self.sharpe_no_rl is None or self.sharpe_rl is None:
            return None
        return self.sharpe_rl - self.sharpe_no_rl

    def to_dict(self) -> dict[str, Any]:
        w = self.window
        return {
            "window": w.index,
            "train_start": str(w.train_start),
            "train_end": str(w.train_end),
            "test_start": str(w.test_start),
            "test_end": str(w.test_end),
            "train_rows": self.train_rows,
            "test_rows": self.test_rows,
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "sharpe_no_rl": self.sharpe_no_rl,
            "sharpe_rl": self.sharpe_rl,
            "sharpe_delta": self.sharpe_delta,
            "return_no_rl": self.return_no_rl,
            "return_rl": self.return_rl,
            "rl_fallbacks": self.rl_fallbacks,
            "model": self.model,
            "run_ids": self.run_ids,
            "elapsed_s": self.elapsed_s,
        }


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return sum(kept) / len(kept) if kept else None


@dataclass
class WalkForwardResult:
    """Every window's result, the aggregate, and where the report went."""

    config: WalkForwardConfig
    windows: list[WindowResult]
    out_dir: Path
    teacher_run_id: int
    elapsed_s: float = 0.0

    def aggregate(self) -> dict[str, Any]:
        """Means over the windows (a Sharpe mean skips windows where it is undefined), the
        test rows and RL fallbacks summed, and in how many windows the RL Sharpe >= the no-RL
        one (``compared``: windows where both are defined)."""
        ws = self.windows
        compared = [w for w in ws if w.sharpe_delta is not None]
        return {
            "windows": len(ws),
            "mean_train_rows": _mean([float(w.train_rows) for w in ws]),
            "test_rows": sum(w.test_rows for w in ws),
            "mean_accuracy": _mean([w.accuracy for w in ws]),
            "mean_macro_f1": _mean([w.macro_f1 for w in ws]),
            "mean_sharpe_no_rl": _mean([w.sharpe_no_rl for w in ws]),
            "mean_sharpe_rl": _mean([w.sharpe_rl for w in ws]),
            "mean_sharpe_delta": _mean([w.sharpe_delta for w in ws]),
            "mean_return_no_rl": _mean([w.return_no_rl for w in ws]),
            "mean_return_rl": _mean([w.return_rl for w in ws]),
            "rl_fallbacks": sum(w.rl_fallbacks for w in ws),
            "rl_at_least_no_rl": sum(1 for w in compared if (w.sharpe_delta or 0.0) >= 0.0),
            "compared": len(compared),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "windows": [w.to_dict() for w in self.windows],
            "aggregate": self.aggregate(),
            "teacher_run_id": self.teacher_run_id,
            "elapsed_s": self.elapsed_s,
        }

    def markdown(self) -> str:
        head = [
            "window",
            "train",
            "test",
            "rows train/test",
            "accuracy",
            "macro F1",
            "Sharpe no RL",
            "Sharpe RL",
            "delta",
            "return no RL",
            "return RL",
            "RL fallbacks",
        ]
        lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
        for r in self.windows:
            w = r.window
            lines.append(
                _row(
                    w.label,
                    f"{w.train_start} .. {w.train_end}",
                    f"{w.test_start} .. {w.test_end}",
                    f"{r.train_rows}/{r.test_rows}",
                    fmt_number(r.accuracy),
                    fmt_number(r.macro_f1),
                    fmt_number(r.sharpe_no_rl, signed=True),
                    fmt_number(r.sharpe_rl, signed=True),
                    fmt_number(r.sharpe_delta, signed=True),
                    _pct(r.return_no_rl),
                    _pct(r.return_rl),
                    str(r.rl_fallbacks),
                )
            )
        a = self.aggregate()
        first, last = self.windows[0].window, self.windows[-1].window
        lines.append(
            _row(
                f"**mean of {a['windows']}**",
                f"{first.train_start} .. {last.train_end}",
                f"{first.test_start} .. {last.test_end}",
                f"{a['mean_train_rows']:.0f}/{a['test_rows']}",
                fmt_number(a["mean_accuracy"]),
                fmt_number(a["mean_macro_f1"]),
                fmt_number(a["mean_sharpe_no_rl"], signed=True),
                fmt_number(a["mean_sharpe_rl"], signed=True),
                fmt_number(a["mean_sharpe_delta"], signed=True),
                _pct(a["mean_return_no_rl"]),
                _pct(a["mean_return_rl"]),
                str(a["rl_fallbacks"]),
            )
        )
        lines.append("")
        lines.append(
            f"RL Sharpe >= no-RL Sharpe in {a['rl_at_least_no_rl']} of {a['compared']} windows"
            + (
                f" ({a['windows'] - a['compared']} without a defined Sharpe)"
                if a["compared"] < a["windows"]
                else ""
            )
            + ". Accuracy and macro F1: the window's model on its test period's decisions; "
            "Sharpe and return: the test period backtested; mean row: mean train rows / all "
            "test rows."
        )
        return "\n".join(lines)


def _row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def fmt_number(value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2%}"


# --- the plot ------------------------------------------------------------------------------------


def plot_walk_forward(result: WalkForwardResult, path: str | Path) -> Path:
    """Accuracy (and macro F1) per window on top, Sharpe without and with RL per window below,
    each with its mean as a dashed line; returns the path."""
    from otonom_runtime.plots import pyplot

    plt = pyplot()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    ws = result.windows
    x = list(range(len(ws)))
    labels = [
        f"{r.window.label}\n{r.window.test_start:%Y-%m}..{r.window.test_end:%Y-%m}" for r in ws
    ]
    agg = result.aggregate()
    nan = float("nan")
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(7.0, 1.3 * len(ws) + 3), 7), sharex=True)
    try:
        width = 0.38
        top.bar([i - width / 2 for i in x], [r.accuracy for r in ws], width, label="accuracy")
        top.bar([i + width / 2 for i in x], [r.macro_f1 for r in ws], width, label="macro F1")
        if agg["mean_accuracy"] is not None:
            top.axhline(agg["mean_accuracy"], color="C0", linestyle="--", linewidth=1)
        top.set_ylim(0.0, 1.15)  # room for the legend above the bars
        top.set_ylabel("out-of-sample")
        top.set_title(
            f"walk-forward: {result.config.train_years} y train, "
            f"{result.config.test_months} m test ({', '.join(result.config.symbols)})"
        )
        top.grid(axis="y", alpha=0.3)
        top.legend(loc="upper center", ncol=2)
        no_rl = [nan if r.sharpe_no_rl is None else r.sharpe_no_rl for r in ws]
        rl = [nan if r.sharpe_rl is None else r.sharpe_rl for r in ws]
        bottom.bar([i - width / 2 for i in x], no_rl, width, label="no RL", color="C2")
        bottom.bar([i + width / 2 for i in x], rl, width, label="with RL", color="C3")
        for key, color in (("mean_sharpe_no_rl", "C2"), ("mean_sharpe_rl", "C3")):
            if agg[key] is not None:
                bottom.axhline(agg[key], color=color, linestyle="--", linewidth=1)
        bottom.axhline(0.0, color="black", linewidth=0.6)
        bottom.set_ylabel("Sharpe (test period)")
        bottom.grid(axis="y", alpha=0.3)
        bottom.legend(loc="best")
        bottom.set_xticks(x)
        bottom.set_xticklabels(labels, fontsize=8)
        fig.tight_layout()
        fig.savefig(out, dpi=110)
    finally:
        plt.close(fig)
    return out
