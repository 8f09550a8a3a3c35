"""The pipeline's side-by-side table: the held-out period without and with the RL analyst
(``PipelineResult``, its rows and ``table.md`` / ``table.json``). ``otonom_trainer.pipeline``
re-exports ``PipelineResult``."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from otonom_trainer.stages import RlPair

__all__ = ["PipelineResult", "heldout_rows", "write_tables"]


@dataclass
class PipelineResult:
    """The side-by-side table (one dict per column) and where everything was written."""

    rows: dict[str, dict[str, Any]]
    train_period: tuple[dt.date, dt.date]
    test_period: tuple[dt.date, dt.date]
    report_dir: Path
    model_dir: Path
    run_ids: dict[str, int] = field(default_factory=dict)
    gate: dict[str, Any] | None = None
    elapsed_s: float = 0.0

    def markdown(self) -> str:
        names = list(self.rows)
        keys = list(next(iter(self.rows.values())))
        lines = [
            f"| metric (held-out {self.test_period[0]} .. {self.test_period[1]}) | "
            + " | ".join(names)
            + " |",
            "|---|" + "---|" * len(names),
        ]
        for key in keys:
            lines.append(f"| {key} | " + " | ".join(_cell(self.rows[n][key]) for n in names) + " |")
        return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def heldout_rows(
    evaluation: dict[str, Any], latency: dict[str, float], pair: RlPair
) -> dict[str, dict[str, Any]]:
    """The table's two columns: the held-out pair's backtest figures, and for the RL column the
    model's evaluation (``evaluation``: accuracy and F1 per class) and ``predict`` latency."""
    rows: dict[str, dict[str, Any]] = {}
    for name, bt in (("ensemble (no RL)", pair.off), ("ensemble + RL", pair.on)):
        m = bt.metrics
        rl = bt is pair.on
        rows[name] = {
            "policy accuracy (held-out)": evaluation["accuracy"] if rl else None,
            "F1 HOLD": evaluation["f1"]["HOLD"] if rl else None,
            "F1 BUY": evaluation["f1"]["BUY"] if rl else None,
            "F1 SELL": evaluation["f1"]["SELL"] if rl else None,
            "Sharpe": m.sharpe,
            "total return": m.total_return,
            "max drawdown": m.max_drawdown,
            "trades": m.n_trades,
            "RL fallbacks": bt.fallbacks,
            "predict p50 (us)": latency["p50_us"] if rl else None,
            "predict p99 (us)": latency["p99_us"] if rl else None,
        }
    return rows


def write_tables(result: PipelineResult, model: str) -> None:
    """``table.md`` and ``table.json`` (with ``model``, the ONNX file) into the run's report
    folder."""
    (result.report_dir / "table.md").write_text(result.markdown() + "\n", encoding="utf-8")
    table = {
        "rows": result.rows,
        "train_period": [str(d) for d in result.train_period],
        "test_period": [str(d) for d in result.test_period],
        "run_ids": result.run_ids,
        "model": model,
        "gate": result.gate,
        "elapsed_s": result.elapsed_s,
    }
    (result.report_dir / "table.json").write_text(
        json.dumps(table, indent=2) + "\n", encoding="utf-8"
    )
