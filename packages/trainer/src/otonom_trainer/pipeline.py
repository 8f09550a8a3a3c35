"""The guide end to end: data -> backtest -> dataset -> training -> export -> evaluation ->
the held-out period backtested with and without the RL analyst, side by side.

``run_pipeline(PipelineConfig(...))`` is what ``otonom-train pipeline`` (and the README's main
job, ``python3 dev.py run``) calls. Every stage uses the public API of the three packages; this
module only sequences them and writes the report folder:

* ``table.md`` / ``table.json``: accuracy, per-class F1, Sharpe, return, max drawdown, trades
  and predict latency, for the ensemble without and with the RL analyst;
* ``equity.png``: the held-out equity curves (and drawdowns) with and without RL;
* ``confusion_matrix.png``: the policy on the held-out dataset; the training curves stay in the
  model folder.

Split: the policy learns from the baseline's decisions up to ``train_end`` and is judged on
the later period only (default: the last 25 % of the decision days).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PipelineConfig", "PipelineResult", "run_pipeline"]

DEMO_SYMBOLS = ("DEMO-BTC", "DEMO-ETH", "DEMO-SOL")
WARMUP_DAYS = 180  # history before the first decision, for the 140-bar features


@dataclass(frozen=True)
class PipelineConfig:
    """What to run. Symbols missing from the store are generated (synthetic) when their name
    starts with ``DEMO-``, imported when ``import_csv`` maps them to a file, else an error."""

    strategy_path: str = "strategies/baseline_v1.yaml"
    database_url: str | None = None
    symbols: tuple[str, ...] = DEMO_SYMBOLS
    start: dt.date = dt.date(2018, 1, 1)
    end: dt.date = dt.date(2023, 12, 31)
    train_end: dt.date | None = None
    test_start: dt.date | None = None
    import_csv: tuple[tuple[str, str], ...] = ()  # (file, symbol)
    seed: int = 7
    epochs: int = 20
    batch_size: int = 256
    hidden_dim: int = 128
    model_dir: str = "models/rl_bc"
    report_dir: str = "reports/pipeline"
    quiet: bool = False

    def __post_init__(self) -> None:
        if not self.symbols:
            raise ValueError("no symbols; expected at least one")
        if self.start >= self.end:
            raise ValueError(f"start {self.start} is not before end {self.end}")
        if self.epochs < 1:
            raise ValueError(f"epochs is {self.epochs}; expected >= 1")


@dataclass
class PipelineResult:
    """The side-by-side table (one dict per column) and where everything was written."""

    rows: dict[str, dict[str, Any]]
    train_period: tuple[dt.date, dt.date]
    test_period: tuple[dt.date, dt.date]
    report_dir: Path
    model_dir: Path
    run_ids: dict[str, int] = field(default_factory=dict)
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


def _say(cfg: PipelineConfig, text: str) -> None:
    if not cfg.quiet:
        print(text, flush=True)


def _stage(cfg: PipelineConfig, n: int, title: str) -> None:
    _say(cfg, f"\n[{n}/6] {title}")


def run_pipeline(cfg: PipelineConfig) -> PipelineResult:
    """Run every stage in order; raises what the stages raise (each names its input)."""
    from otonom_runtime.backtest import run_backtest
    from otonom_runtime.importers import import_ohlcv_csv
    from otonom_runtime.plots import plot_equity
    from otonom_runtime.policy import load_rl_policy
    from otonom_runtime.store import default_database_url, get_session, init_db
    from otonom_runtime.strategy import load_strategy
    from otonom_runtime.synth import write_synthetic
    from otonom_schema import RlState
    from otonom_trainer.config import TrainingConfig
    from otonom_trainer.dataset import OfflineDatasetGenerator, save_dataset
    from otonom_trainer.evaluate import evaluate, plot_confusion_matrix
    from otonom_trainer.train import BehaviorCloningTrainer

    clock = time.perf_counter()
    url = cfg.database_url or default_database_url()
    report_dir = Path(cfg.report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    model_dir = Path(cfg.model_dir)
    strategy = load_strategy(cfg.strategy_path).with_rl(False)

    _stage(cfg, 1, f"data: {', '.join(cfg.symbols)} in {url}")
    init_db(url)
    csv_files = {symbol: path for path, symbol in cfg.import_csv}
    with get_session(url) as session:
        for path, symbol in cfg.import_csv:
            _say(cfg, "  " + import_ohlcv_csv(session, path, symbol).summary())
        from otonom_runtime.store import list_symbols

        present = {info.name for info in list_symbols(session)}
        missing = [s for s in cfg.symbols if s not in present]
        demo = [s for s in missing if s.startswith("DEMO-")]
        unknown = [s for s in missing if not s.startswith("DEMO-") and s not in csv_files]
        if unknown:
            raise ValueError(
                f"symbols {unknown} are not in the store; import them with --import-csv FILE "
                "--symbol NAME, or use DEMO-* names for the synthetic market"
            )
        if demo:
            _say(cfg, "  " + write_synthetic(session, demo, cfg.start, cfg.end, cfg.seed).summary())

    first_decision = cfg.start + dt.timedelta(days=WARMUP_DAYS)
    days = (cfg.end - first_decision).days
    train_end = cfg.train_end or first_decision + dt.timedelta(days=int(days * 0.75))
    test_start = cfg.test_start or train_end + dt.timedelta(days=1)
    if not first_decision < train_end < test_start <= cfg.end:
        raise ValueError(
            f"the split does not fit: decisions {first_decision} .. {cfg.end}, train_end "
            f"{train_end}, test_start {test_start}; expected start < train_end < test_start <= end"
        )

    _stage(cfg, 2, f"baseline backtest {first_decision} .. {cfg.end} (the teacher)")
    with get_session(url) as session:
        teacher = run_backtest(session, strategy, list(cfg.symbols), first_decision, cfg.end)
    _say(cfg, "  " + teacher.summary().replace("\n", "\n  "))

    _stage(
        cfg, 3, f"datasets: train {first_decision} .. {train_end}, test {test_start} .. {cfg.end}"
    )
    data_dir = report_dir / "data"
    with get_session(url) as session:
        gen = OfflineDatasetGenerator(session)
        symbols = list(cfg.symbols)
        train_ds = gen.generate_dataset(symbols, first_decision, train_end, run_id=teacher.run_id)
        test_ds = gen.generate_dataset(symbols, test_start, cfg.end, run_id=teacher.run_id)
    train_path = save_dataset(train_ds, data_dir / "offline_dataset.npz")
    test_path = save_dataset(test_ds, data_dir / "offline_dataset_test.npz")

    _stage(cfg, 4, "behaviour cloning + ONNX export")
    tcfg = TrainingConfig(
        dataset_path=str(train_path),
        output_dir=str(model_dir),
        max_epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        hidden_dim=cfg.hidden_dim,
        seed=cfg.seed,
        device="auto",
    )
    trainer = BehaviorCloningTrainer(tcfg)
    trainer.train()
    onnx_path = trainer.export_onnx()
    _say(cfg, f"ONNX model: {onnx_path} (matches torch at batch 1, 7 and 256)")

    _stage(cfg, 5, f"evaluation on the held-out dataset ({len(test_ds)} rows)")
    report = evaluate(onnx_path, test_path)
    _say(cfg, report.format())
    plot_confusion_matrix(report.confusion, report_dir / "confusion_matrix.png")

    _stage(cfg, 6, f"held-out backtests {test_start} .. {cfg.end}: without and with RL")
    policy = load_rl_policy(onnx_path)
    state = RlState.from_array(test_ds.states[-1])
    for _ in range(200):
        policy.predict(state)
    samples = []
    for _ in range(2000):
        t0 = time.perf_counter_ns()
        policy.predict(state)
        samples.append(time.perf_counter_ns() - t0)
    latency_us = float(np.percentile(samples, 50)) / 1e3
    latency_p99 = float(np.percentile(samples, 99)) / 1e3
    with get_session(url) as session:
        off = run_backtest(session, strategy, symbols, test_start, cfg.end, use_rl=False)
        on = run_backtest(
            session, strategy, symbols, test_start, cfg.end, use_rl=True, policy=policy
        )
    f1 = {c: m.f1 for c, m in zip(("HOLD", "BUY", "SELL"), report.per_class, strict=True)}
    rows: dict[str, dict[str, Any]] = {}
    for name, run in (("ensemble (no RL)", off), ("ensemble + RL", on)):
        m = run.metrics
        rows[name] = {
            "policy accuracy (held-out)": report.accuracy if run is on else None,
            "F1 HOLD": f1["HOLD"] if run is on else None,
            "F1 BUY": f1["BUY"] if run is on else None,
            "F1 SELL": f1["SELL"] if run is on else None,
            "Sharpe": m.sharpe,
            "total return": m.total_return,
            "max drawdown": m.max_drawdown,
            "trades": m.n_trades,
            "RL fallbacks": run.fallbacks,
            "predict p50 (us)": latency_us if run is on else None,
            "predict p99 (us)": latency_p99 if run is on else None,
        }
    result = PipelineResult(
        rows=rows,
        train_period=(first_decision, train_end),
        test_period=(test_start, cfg.end),
        report_dir=report_dir,
        model_dir=model_dir,
        run_ids={"teacher": teacher.run_id, "held-out no RL": off.run_id, "held-out RL": on.run_id},
    )
    plot_equity(
        {"ensemble (no RL)": (off.dates, off.equity), "ensemble + RL": (on.dates, on.equity)},
        report_dir / "equity.png",
        title=f"held-out {test_start} .. {cfg.end}: {', '.join(cfg.symbols)}",
    )
    result.elapsed_s = time.perf_counter() - clock
    table = result.markdown()
    (report_dir / "table.md").write_text(table + "\n", encoding="utf-8")
    (report_dir / "table.json").write_text(
        json.dumps(
            {
                "rows": rows,
                "train_period": [str(d) for d in result.train_period],
                "test_period": [str(d) for d in result.test_period],
                "run_ids": result.run_ids,
                "model": str(onnx_path),
                "elapsed_s": result.elapsed_s,
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    _say(cfg, "\n" + table)
    _say(cfg, f"\nreport: {report_dir}/ (table.md, table.json, equity.png, confusion_matrix.png)")
    _say(cfg, f"model:  {model_dir}/ (policy_best.onnx, training_curves.png, ...)")
    _say(cfg, f"took {result.elapsed_s:.0f} s")
    return result
