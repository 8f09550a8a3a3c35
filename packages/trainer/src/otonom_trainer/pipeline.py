"""The guide end to end: data -> backtest -> dataset -> training -> export -> evaluation ->
the held-out period backtested with and without the RL analyst, side by side.

``run_pipeline(PipelineConfig(...))`` is what ``otonom-train pipeline`` (and the README's main
job, ``python3 dev.py run``) calls. Every stage uses the public API of the three packages; this
module only sequences them and writes the report folder. The stages (``STAGES``): 1 data,
2 baseline backtest, 3 datasets, 4 training + export (into a new version folder
``<model_dir>/<UTC timestamp>/``), 5 evaluation, 6 held-out backtests without and with RL,
7 the production gate (``otonom_trainer.check``), which promotes the new version
(``<model_dir>/latest``) when every check passes. After each stage the report folder's
``pipeline_state.json`` records what it produced, so ``from_stage`` (``--from-stage``) resumes
a run that stopped or re-runs its later stages.

The report folder:

* ``table.md`` / ``table.json``: accuracy, per-class F1, Sharpe, return, max drawdown, trades
  and predict latency, for the ensemble without and with the RL analyst;
* ``equity.png``: the held-out equity curves (and drawdowns) with and without RL;
* ``confusion_matrix.png``: the policy on the held-out dataset; the training curves stay in the
  model folder.

Split: the policy learns from the baseline's decisions up to ``train_end`` and is judged on
the later period only (default: the last 25 % of the decision days).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

__all__ = ["STAGES", "PipelineConfig", "PipelineError", "PipelineResult", "run_pipeline"]

DEMO_SYMBOLS = ("DEMO-BTC", "DEMO-ETH", "DEMO-SOL")
WARMUP_DAYS = 180  # history before the first decision, for the 140-bar features
STAGES: Final = (
    "data",
    "baseline backtest (the teacher)",
    "datasets",
    "behaviour cloning + ONNX export",
    "evaluation on the held-out dataset",
    "held-out backtests without and with RL",
    "production gate",
)
STATE_FILE: Final = "pipeline_state.json"


class PipelineError(ValueError):
    """The pipeline cannot run as asked (e.g. resuming without the earlier stages' outputs)."""


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
    from_stage: int = 1
    promote: bool = True
    quiet: bool = False

    def __post_init__(self) -> None:
        if not self.symbols:
            raise PipelineError("no symbols; expected at least one")
        if self.start >= self.end:
            raise PipelineError(f"start {self.start} is not before end {self.end}")
        if self.epochs < 1:
            raise PipelineError(f"epochs is {self.epochs}; expected >= 1")
        if not 1 <= self.from_stage <= len(STAGES):
            raise PipelineError(
                f"from_stage is {self.from_stage}; expected 1 .. {len(STAGES)} "
                f"({', '.join(f'{i}={n}' for i, n in enumerate(STAGES, start=1))})"
            )
        for path, _ in self.import_csv:  # before the store or the report folder is created
            if not Path(path).is_file():
                raise PipelineError(
                    f"cannot read {path} (--import-csv): "
                    + ("it is not a file" if Path(path).exists() else "no such file")
                )


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


def _say(cfg: PipelineConfig, text: str) -> None:
    if not cfg.quiet:
        print(text, flush=True)


def _stage(cfg: PipelineConfig, n: int, detail: str) -> None:
    _say(cfg, f"\n[{n}/{len(STAGES)}] {STAGES[n - 1]}: {detail}")


@dataclass
class _Run:
    """What the stages hand each other; saved to ``report_dir/pipeline_state.json`` after each
    stage so that ``--from-stage`` can pick up where a run stopped."""

    cfg: PipelineConfig
    url: str
    report_dir: Path
    first_decision: dt.date
    train_end: dt.date
    test_start: dt.date
    state: dict[str, Any]

    @property
    def symbols(self) -> list[str]:
        return list(self.cfg.symbols)

    def key(self) -> dict[str, Any]:
        """What must match for a run to be resumed."""
        c = self.cfg
        return {
            "strategy_path": str(Path(c.strategy_path).resolve()),
            "database_url": self.url,
            "symbols": list(c.symbols),
            "start": str(c.start),
            "end": str(c.end),
            "train_end": str(self.train_end),
            "test_start": str(self.test_start),
            "model_dir": str(Path(c.model_dir).resolve()),
        }

    def save(self, done: int) -> None:
        self.state["completed"] = done
        self.state["key"] = self.key()
        path = self.report_dir / STATE_FILE
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.state, indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)


def _resume(run: _Run, from_stage: int) -> None:
    path = run.report_dir / STATE_FILE
    if from_stage == 1:
        run.state = {}
        return
    if not path.is_file():
        raise PipelineError(
            f"cannot resume from stage {from_stage}: {path} does not exist; expected the state "
            "file of an earlier run with the same --report-dir (run without --from-stage first)"
        )
    saved = json.loads(path.read_text(encoding="utf-8"))
    done = int(saved.get("completed", 0))
    if done < from_stage - 1:
        raise PipelineError(
            f"cannot resume from stage {from_stage}: {path} records stages 1..{done} done; "
            f"expected at least 1..{from_stage - 1} (use --from-stage {done + 1} or lower)"
        )
    if saved.get("key") != run.key():
        diff = sorted(k for k, v in run.key().items() if (saved.get("key") or {}).get(k) != v)
        raise PipelineError(
            f"cannot resume from stage {from_stage}: {path} was written by a run with other "
            f"settings ({', '.join(diff)} differ); expected the same options as that run"
        )
    run.state = saved


def _stage_data(run: _Run) -> None:
    from otonom_runtime.importers import import_ohlcv_csv
    from otonom_runtime.store import get_session, init_db, list_symbols
    from otonom_runtime.synth import write_synthetic

    cfg = run.cfg
    _stage(cfg, 1, f"{', '.join(cfg.symbols)} in {run.url}")
    init_db(run.url)
    csv_files = {symbol: path for path, symbol in cfg.import_csv}
    with get_session(run.url) as session:
        for path, symbol in cfg.import_csv:
            _say(cfg, "  " + import_ohlcv_csv(session, path, symbol).summary())
        present = {info.name for info in list_symbols(session)}
        missing = [s for s in cfg.symbols if s not in present]
        demo = [s for s in missing if s.startswith("DEMO-")]
        unknown = [s for s in missing if not s.startswith("DEMO-") and s not in csv_files]
        if unknown:
            raise PipelineError(
                f"symbols {unknown} are not in the store; import them with --import-csv FILE "
                "--symbol NAME, or use DEMO-* names for the synthetic market"
            )
        if demo:
            _say(cfg, "  " + write_synthetic(session, demo, cfg.start, cfg.end, cfg.seed).summary())
        if not missing:
            _say(cfg, "  all symbols already in the store")


def _stage_teacher(run: _Run) -> None:
    from otonom_runtime.backtest import run_backtest
    from otonom_runtime.store import get_session
    from otonom_runtime.strategy import load_strategy

    cfg = run.cfg
    _stage(cfg, 2, f"{run.first_decision} .. {cfg.end}")
    strategy = load_strategy(cfg.strategy_path).with_rl(False)
    with get_session(run.url) as session:
        teacher = run_backtest(
            session, strategy, run.symbols, run.first_decision, cfg.end, progress=not cfg.quiet
        )
    _say(cfg, "  " + teacher.summary().replace("\n", "\n  "))
    run.state["teacher_run_id"] = teacher.run_id


def _stage_datasets(run: _Run) -> None:
    from otonom_runtime.store import get_session
    from otonom_trainer.dataset import OfflineDatasetGenerator, save_dataset

    cfg = run.cfg
    _stage(
        cfg, 3, f"train {run.first_decision} .. {run.train_end}, test {run.test_start} .. {cfg.end}"
    )
    data_dir = run.report_dir / "data"
    teacher = int(run.state["teacher_run_id"])
    with get_session(run.url) as session:
        gen = OfflineDatasetGenerator(session)
        train_ds = gen.generate_dataset(run.symbols, run.first_decision, run.train_end, teacher)
        test_ds = gen.generate_dataset(run.symbols, run.test_start, cfg.end, teacher)
    run.state["train_path"] = str(save_dataset(train_ds, data_dir / "offline_dataset.npz"))
    run.state["test_path"] = str(save_dataset(test_ds, data_dir / "offline_dataset_test.npz"))


def _stage_train(run: _Run) -> None:
    from otonom_trainer.config import TrainingConfig
    from otonom_trainer.registry import new_version_dir
    from otonom_trainer.train import BehaviorCloningTrainer

    cfg = run.cfg
    version = new_version_dir(cfg.model_dir)
    _stage(cfg, 4, f"into {version}")
    tcfg = TrainingConfig(
        dataset_path=run.state["train_path"],
        output_dir=str(version),
        max_epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        hidden_dim=cfg.hidden_dim,
        seed=cfg.seed,
        device="auto",
        progress=not cfg.quiet,
    )
    trainer = BehaviorCloningTrainer(tcfg)
    trainer.train()
    onnx_path = trainer.export_onnx()
    _say(cfg, f"ONNX model: {onnx_path} (matches torch at batch 1, 7 and 256)")
    run.state["version_dir"] = str(version)
    run.state["onnx_path"] = str(onnx_path)


def _stage_evaluate(run: _Run) -> None:
    from otonom_trainer.evaluate import evaluate, plot_confusion_matrix

    cfg = run.cfg
    _stage(cfg, 5, run.state["test_path"])
    report = evaluate(run.state["onnx_path"], run.state["test_path"])
    _say(cfg, report.format())
    plot_confusion_matrix(report.confusion, run.report_dir / "confusion_matrix.png")
    run.state["evaluation"] = {
        "rows": report.n,
        "accuracy": report.accuracy,
        "f1": {c: m.f1 for c, m in zip(("HOLD", "BUY", "SELL"), report.per_class, strict=True)},
    }


def _stage_heldout(run: _Run) -> PipelineResult:
    from otonom_runtime.backtest import run_backtest
    from otonom_runtime.plots import plot_equity
    from otonom_runtime.policy import load_rl_policy
    from otonom_runtime.store import get_session
    from otonom_runtime.strategy import load_strategy
    from otonom_schema import load_dataset
    from otonom_trainer.check import measure_latency

    cfg = run.cfg
    _stage(cfg, 6, f"{run.test_start} .. {cfg.end}")
    strategy = load_strategy(cfg.strategy_path).with_rl(False)
    policy = load_rl_policy(run.state["onnx_path"])
    latency = measure_latency(policy, load_dataset(run.state["test_path"]).states, 2000)
    with get_session(run.url) as session:
        off = run_backtest(session, strategy, run.symbols, run.test_start, cfg.end, use_rl=False)
        on = run_backtest(
            session, strategy, run.symbols, run.test_start, cfg.end, use_rl=True, policy=policy
        )
    ev = run.state["evaluation"]
    rows: dict[str, dict[str, Any]] = {}
    for name, bt in (("ensemble (no RL)", off), ("ensemble + RL", on)):
        m = bt.metrics
        rl = bt is on
        rows[name] = {
            "policy accuracy (held-out)": ev["accuracy"] if rl else None,
            "F1 HOLD": ev["f1"]["HOLD"] if rl else None,
            "F1 BUY": ev["f1"]["BUY"] if rl else None,
            "F1 SELL": ev["f1"]["SELL"] if rl else None,
            "Sharpe": m.sharpe,
            "total return": m.total_return,
            "max drawdown": m.max_drawdown,
            "trades": m.n_trades,
            "RL fallbacks": bt.fallbacks,
            "predict p50 (us)": latency["p50_us"] if rl else None,
            "predict p99 (us)": latency["p99_us"] if rl else None,
        }
    plot_equity(
        {"ensemble (no RL)": (off.dates, off.equity), "ensemble + RL": (on.dates, on.equity)},
        run.report_dir / "equity.png",
        title=f"held-out {run.test_start} .. {cfg.end}: {', '.join(cfg.symbols)}",
    )
    run.state["rows"] = rows
    run.state["heldout_run_ids"] = {"held-out no RL": off.run_id, "held-out RL": on.run_id}
    result = _result(run)
    _say(cfg, "\n" + result.markdown())
    return result


def _stage_gate(run: _Run) -> None:
    from otonom_trainer.check import CheckConfig, run_check

    cfg = run.cfg
    _stage(cfg, 7, f"the production checklist on {run.test_start} .. {cfg.end}")
    check = run_check(
        CheckConfig(
            model=run.state["version_dir"],
            symbols=cfg.symbols,
            start=run.test_start,
            end=cfg.end,
            strategy_path=cfg.strategy_path,
            database_url=run.url,
            promote=cfg.promote,
            quiet=cfg.quiet,
        )
    )
    _say(cfg, check.table())
    if check.promoted:
        verdict = f"all checks pass: promoted ({check.promoted} -> {check.version_dir.name})"
    elif check.passed:
        verdict = "all checks pass (not promoted: --no-promote)"
    else:
        failed = [i.name for i in check.items if i.status == "fail"]
        verdict = f"NOT promoted: failed {', '.join(failed)}"
    _say(cfg, verdict)
    run.state["gate"] = {
        "passed": check.passed,
        "promoted": check.promoted is not None,
        "failed": [i.name for i in check.items if i.status == "fail"],
    }


def _result(run: _Run) -> PipelineResult:
    return PipelineResult(
        rows=run.state["rows"],
        train_period=(run.first_decision, run.train_end),
        test_period=(run.test_start, run.cfg.end),
        report_dir=run.report_dir,
        model_dir=Path(run.state["version_dir"]),
        run_ids={"teacher": run.state["teacher_run_id"], **run.state["heldout_run_ids"]},
        gate=run.state.get("gate"),
    )


def run_pipeline(cfg: PipelineConfig) -> PipelineResult:
    """Run the stages from ``cfg.from_stage`` on; raises what the stages raise (each names its
    input). The report folder holds ``pipeline_state.json``, updated after every stage."""
    from otonom_runtime.store import default_database_url

    clock = time.perf_counter()
    first_decision = cfg.start + dt.timedelta(days=WARMUP_DAYS)
    days = (cfg.end - first_decision).days
    train_end = cfg.train_end or first_decision + dt.timedelta(days=int(days * 0.75))
    test_start = cfg.test_start or train_end + dt.timedelta(days=1)
    if not first_decision < train_end < test_start <= cfg.end:
        raise PipelineError(
            f"the split does not fit: decisions {first_decision} .. {cfg.end}, train_end "
            f"{train_end}, test_start {test_start}; expected start + {WARMUP_DAYS} days of "
            "warm-up < train_end < test_start <= end"
        )
    report_dir = Path(cfg.report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    run = _Run(
        cfg=cfg,
        url=cfg.database_url or default_database_url(),
        report_dir=report_dir,
        first_decision=first_decision,
        train_end=train_end,
        test_start=test_start,
        state={},
    )
    _resume(run, cfg.from_stage)
    if cfg.from_stage > 1:
        _say(cfg, f"resuming from stage {cfg.from_stage} ({STAGES[cfg.from_stage - 1]})")
    steps = (
        _stage_data,
        _stage_teacher,
        _stage_datasets,
        _stage_train,
        _stage_evaluate,
        _stage_heldout,
        _stage_gate,
    )
    for n, step in enumerate(steps, start=1):
        if n < cfg.from_stage:
            continue
        # --quiet: the stages' own printing (training log, dataset summaries) goes nowhere
        with contextlib.redirect_stdout(io.StringIO()) if cfg.quiet else contextlib.nullcontext():
            step(run)
        run.save(n)
    result = _result(run)
    result.elapsed_s = time.perf_counter() - clock
    (report_dir / "table.md").write_text(result.markdown() + "\n", encoding="utf-8")
    (report_dir / "table.json").write_text(
        json.dumps(
            {
                "rows": result.rows,
                "train_period": [str(d) for d in result.train_period],
                "test_period": [str(d) for d in result.test_period],
                "run_ids": result.run_ids,
                "model": run.state["onnx_path"],
                "gate": result.gate,
                "elapsed_s": result.elapsed_s,
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    _say(cfg, f"\nreport: {report_dir}/ (table.md, table.json, equity.png, confusion_matrix.png)")
    _say(cfg, f"model:  {result.model_dir}/ (policy_best.onnx, check.md, training_curves.png, ...)")
    _say(cfg, f"took {result.elapsed_s:.0f} s")
    return result
