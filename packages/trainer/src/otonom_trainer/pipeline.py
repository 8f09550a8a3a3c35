"""The guide end to end: data -> backtest -> dataset -> training -> export -> evaluation ->
the held-out period backtested with and without the RL analyst, side by side.

``run_pipeline(PipelineConfig(...))`` is what ``otonom-train pipeline`` (and the README's main
job, ``python3 dev.py run``) calls. Every stage uses the public API of the three packages; this
module only sequences them and writes the report folder. The stages (``STAGES``): 1 data,
2 baseline backtest, 3 datasets, 4 training + export (into a new version folder
``<model_dir>/<UTC timestamp>/``), 5 evaluation, 6 held-out backtests without and with RL,
7 the production gate (``otonom_trainer.check``), which promotes the new version
(``<model_dir>/latest``) when every check passes. After each stage the run's report folder's
``pipeline_state.json`` records what it produced, so ``from_stage`` (``--from-stage``) resumes
a run that stopped or re-runs its later stages.

Every run has its own report folder ``<report_dir>/<run name>/`` (default name: the UTC time the
run started, which is also the name of the model version it trains; ``run_name`` /
``--run-name`` to choose one), and ``<report_dir>/latest`` names the run last worked on.
``from_stage`` > 1 resumes the run ``run_name`` names, else the latest. A run failing before
its first stage is done leaves no folder. The report folder:

* ``table.md`` / ``table.json``: accuracy, per-class F1, Sharpe, return, max drawdown, trades
  and predict latency, for the ensemble without and with the RL analyst;
* ``equity.png``: the held-out equity curves (and drawdowns) with and without RL;
* ``confusion_matrix.png``: the policy on the held-out dataset (training curves: model folder).

Split: the policy learns from the baseline's decisions up to ``train_end`` and is judged on
the later period only (default: the last 25 % of the decision days). Dates not given come from
the symbols' stored bars after stage 1 (``otonom_trainer.ranges``), printed as chosen.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import re
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

from otonom_runtime._demo import DEMO_SEED
from otonom_runtime.config_rules import CrossCheck, Validated, rule
from otonom_runtime.strategy import default_strategy_path
from otonom_schema import atomic_write
from otonom_trainer._errors import OtonomTrainerError
from otonom_trainer.config import (
    DAY,
    DEMO_SYMBOLS,
    NONNEGATIVE,
    POSITIVE_INT,
    START_BEFORE_END,
    SYMBOLS,
    TrainingConfig,
)
from otonom_trainer.pipeline_report import PipelineResult, heldout_rows, write_tables
from otonom_trainer.ranges import DEMO_END, DEMO_START
from otonom_trainer.stages import (
    RlPair,
    add_demo_symbols,
    backtest_pair,
    refuse_unknown_before_creating,
    synthetic_beside_real,
)

__all__ = [
    "PIPELINE_EPOCHS",
    "STAGES",
    "TEACHER_NOISE",
    "TEACHER_ROWS",
    "PipelineConfig",
    "PipelineError",
    "PipelineResult",
    "run_pipeline",
    "training_config",
]

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
PIPELINE_EPOCHS: Final = 30
"""Stage 4's epochs by default (over the train split and its teacher rows)."""
TEACHER_ROWS: Final = 200_000
"""Teacher-labelled rows stage 4 adds to the train split by default (``teacher_rows``)."""
TEACHER_NOISE: Final = 0.3
"""Their noise, in standard deviations of each market feature (``teacher_noise``)."""
LATEST_RUN: Final = "latest"
"""The file in the report folder naming the run last worked on (``--from-stage`` resumes it)."""
_RUN_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class PipelineError(OtonomTrainerError, ValueError):
    """The pipeline cannot run as asked (e.g. resuming without the earlier stages' outputs)."""


def _import_csv_problem(values: Mapping[str, Any]) -> str:
    for path, _ in values["import_csv"]:
        if not Path(path).is_file():
            what = "it is not a file" if Path(path).exists() else "no such file"
            return f"cannot read {path} (--import-csv): {what}"
    return ""


def _run_name_ok(name: str) -> bool:
    return _RUN_NAME_RE.match(name) is not None and name != LATEST_RUN


_TEXT: Final = rule(nonempty=True, described="non-empty text")


@dataclass(frozen=True)
class PipelineConfig(Validated):
    """What to run. Symbols missing from the store are generated (synthetic) when their name
    starts with ``DEMO-`` (over ``start .. end``, default 2018-01-01 .. 2023-12-31; a note says
    so when the store holds real symbols), imported when ``import_csv`` maps them to a file,
    else an error. ``start``/``end`` None: from the stored bars (``otonom_trainer.ranges``).
    Validated once (``otonom_runtime.config_rules``): ``PipelineError`` names the field, what
    was given and what was expected; ``import_csv`` files are checked before anything is made."""

    strategy_path: str = field(default_factory=default_strategy_path, metadata=_TEXT)
    database_url: str | None = field(
        default=None, metadata=rule(nonempty=True, described="a SQLAlchemy URL or None")
    )
    symbols: tuple[str, ...] = field(default=DEMO_SYMBOLS, metadata=SYMBOLS)
    start: dt.date | None = field(default=None, metadata=DAY)
    end: dt.date | None = field(default=None, metadata=DAY)
    train_end: dt.date | None = field(default=None, metadata=DAY)
    test_start: dt.date | None = field(default=None, metadata=DAY)
    import_csv: tuple[tuple[str, str], ...] = ()  # (file, symbol)
    replace: bool = False  # import_csv may overwrite stored bars that differ
    drop_bad_rows: bool = False  # import_csv skips (and reports) bad rows instead of refusing
    date_format: str | None = None  # strptime format of import_csv's date column
    seed: int = field(default=DEMO_SEED, metadata=rule(ge=0, described="an integer >= 0"))
    epochs: int = field(default=PIPELINE_EPOCHS, metadata=POSITIVE_INT)
    batch_size: int = field(default=256, metadata=POSITIVE_INT)
    hidden_dim: int = field(default=128, metadata=POSITIVE_INT)
    teacher_rows: int = field(default=TEACHER_ROWS, metadata=NONNEGATIVE)  # see TrainingConfig
    teacher_noise: float = field(default=TEACHER_NOISE, metadata=NONNEGATIVE)
    model_dir: str = field(default="models/rl_bc", metadata=_TEXT)
    report_dir: str = field(default="reports/pipeline", metadata=_TEXT)
    run_name: str | None = field(
        default=None,
        metadata=rule(
            test=_run_name_ok,
            described=(
                "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit, and not "
                f"{LATEST_RUN!r} (it names the folder <report_dir>/<run name>/)"
            ),
        ),
    )
    from_stage: int = field(
        default=1,
        metadata=rule(
            ge=1,
            le=len(STAGES),
            described=f"1 .. {len(STAGES)} ("
            + ", ".join(f"{i}={n}" for i, n in enumerate(STAGES, start=1))
            + ")",
        ),
    )
    promote: bool = True
    quiet: bool = False

    _error_class = PipelineError
    __cross_checks__ = (
        START_BEFORE_END,
        CrossCheck(lambda v: not _import_csv_problem(v), _import_csv_problem),
    )


def _say(cfg: PipelineConfig, text: str) -> None:
    if not cfg.quiet:
        print(text, flush=True)


def _log(cfg: PipelineConfig) -> TextIO | None:
    """Where the stages' own printing (training log, dataset summaries) goes: nowhere with
    ``--quiet`` (a discarded buffer), else ``sys.stdout``; never a redirected process stdout."""
    return io.StringIO() if cfg.quiet else None


def _stage(cfg: PipelineConfig, n: int, detail: str) -> None:
    _say(cfg, f"\n[{n}/{len(STAGES)}] {STAGES[n - 1]}: {detail}")


@dataclass
class _Run:
    """What the stages hand each other; saved to ``report_dir/pipeline_state.json`` after each
    stage so that ``--from-stage`` can pick up where a run stopped."""

    cfg: PipelineConfig
    url: str
    report_dir: Path
    started: dt.datetime
    start: dt.date  # the first bar used (warm-up included)
    first_decision: dt.date
    train_end: dt.date
    test_start: dt.date
    end: dt.date
    state: dict[str, Any]
    heldout: RlPair | None = None  # stage 6's two runs, for the gate (not on a resumed run)

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
            "start": str(self.start),
            "end": str(self.end),
            "train_end": str(self.train_end),
            "test_start": str(self.test_start),
            "model_dir": str(Path(c.model_dir).resolve()),
        }

    def save(self, done: int) -> None:
        """Record stages 1..``done`` (the run's folder is made at its first save, and becomes
        the latest run)."""
        self.state["completed"] = done
        self.state["key"] = self.key()
        self.state["started"] = self.started.isoformat()
        self.report_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.report_dir / STATE_FILE, json.dumps(self.state, indent=2) + "\n")
        atomic_write(self.report_dir.parent / LATEST_RUN, self.report_dir.name + "\n")


def _run_folder(cfg: PipelineConfig, started: dt.datetime) -> Path:
    """The report folder of the run to do: a new one from stage 1 (checked, not made yet),
    else the named or the latest run's."""
    from otonom_trainer.registry import version_name

    root = Path(cfg.report_dir)
    if cfg.from_stage == 1:
        if cfg.run_name is not None:
            folder = root / cfg.run_name
            if folder.exists():
                raise PipelineError(
                    f"{folder} already holds a run named {cfg.run_name!r}; resume it with "
                    "--from-stage N (2-7), choose another --run-name, or remove that folder"
                )
            return folder
        name = version_name(started)
        for n in range(1, 1000):
            folder = root / (name if n == 1 else f"{name}-{n}")
            if not folder.exists():
                return folder
        raise PipelineError(f"{root} already holds 999 runs named {name}*")
    if cfg.run_name is not None:
        if not (root / cfg.run_name).is_dir():
            runs = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
            raise PipelineError(
                f"cannot resume run {cfg.run_name!r} from stage {cfg.from_stage}: there is no "
                f"{root / cfg.run_name}; runs in {root}: {', '.join(runs) or 'none'}"
            )
        return root / cfg.run_name
    pointer = root / LATEST_RUN
    if not pointer.is_file():
        raise PipelineError(
            f"cannot resume from stage {cfg.from_stage}: {pointer} does not exist, so there is "
            "no run to resume; run without --from-stage first (or name a run with --run-name)"
        )
    name = pointer.read_text(encoding="utf-8").strip()
    if not _RUN_NAME_RE.match(name) or not (root / name).is_dir():
        raise PipelineError(
            f"{pointer} names run {name!r} but {root / name} is not a run folder; name the run "
            "to resume with --run-name"
        )
    return root / name


def _resume(run: _Run, from_stage: int) -> None:
    path = run.report_dir / STATE_FILE
    if from_stage == 1:
        run.state = {}
        return
    if not path.is_file():
        raise PipelineError(
            f"cannot resume from stage {from_stage}: {path} does not exist; expected the state "
            f"file of an earlier run (the run {run.report_dir.name!r} under --report-dir "
            f"{run.report_dir.parent}; run without --from-stage first)"
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
    with contextlib.suppress(KeyError, TypeError, ValueError):
        run.started = dt.datetime.fromisoformat(saved["started"])


def _stage_data(cfg: PipelineConfig, url: str) -> _Dates:
    """Stage 1: the store made if missing, the CSVs imported, missing ``DEMO-*`` symbols made;
    the dates from the bars. A SQLite store it made goes again when it fails (no store left)."""
    from otonom_runtime.cli import removed_on_failure
    from otonom_runtime.importers import import_ohlcv_csv
    from otonom_runtime.store import get_session, init_db

    _stage(cfg, 1, f"{', '.join(cfg.symbols)} in {url}")
    csv_files = {symbol: path for path, symbol in cfg.import_csv}
    refuse_unknown_before_creating(url, cfg.symbols, set(csv_files), PipelineError)
    with removed_on_failure(url):
        init_db(url)
        with get_session(url) as session:
            for path, symbol in cfg.import_csv:
                report = import_ohlcv_csv(
                    session, path, symbol, date_format=cfg.date_format, replace=cfg.replace,
                    drop_bad_rows=cfg.drop_bad_rows,
                )  # fmt: skip
                _say(cfg, "  " + report.summary())
            made = add_demo_symbols(
                session,
                cfg.symbols,
                (cfg.start or DEMO_START, cfg.end or DEMO_END, cfg.seed),
                lambda unknown: PipelineError(
                    f"symbols {unknown} are not in the store; import them with --import-csv FILE "
                    "--symbol NAME, or use DEMO-* names for the synthetic market"
                ),
                importing=csv_files,
            )
            if made is not None or not cfg.import_csv:  # (a file just imported: said above)
                _say(cfg, "  " + (made.summary() if made else "all symbols already in the store"))
            if note := synthetic_beside_real(session, cfg.symbols):
                _say(cfg, "  " + note)
            return _dates(cfg, session)  # in the same transaction: a too-short series is not kept


def _stage_teacher(run: _Run) -> None:
    from otonom_runtime.backtest import run_backtest
    from otonom_runtime.store import get_session
    from otonom_runtime.strategy import load_strategy

    cfg = run.cfg
    _stage(cfg, 2, f"{run.first_decision} .. {run.end}")
    strategy = load_strategy(cfg.strategy_path).with_rl(False)
    with get_session(run.url) as session:
        teacher = run_backtest(
            session, strategy, run.symbols, run.first_decision, run.end, progress=not cfg.quiet,
            purpose="pipeline",
        )  # fmt: skip
    _say(cfg, "  " + teacher.summary().replace("\n", "\n  "))
    run.state["teacher_run_id"] = teacher.run_id


def _stage_datasets(run: _Run) -> None:
    from otonom_runtime.store import get_session
    from otonom_trainer.dataset import OfflineDatasetGenerator, save_dataset

    cfg = run.cfg
    _stage(
        cfg, 3, f"train {run.first_decision} .. {run.train_end}, test {run.test_start} .. {run.end}"
    )
    data_dir = run.report_dir / "data"
    teacher = int(run.state["teacher_run_id"])
    with get_session(run.url) as session:
        gen = OfflineDatasetGenerator(session)
        train_ds = gen.generate_dataset(run.symbols, run.first_decision, run.train_end, teacher)
        test_ds = gen.generate_dataset(run.symbols, run.test_start, run.end, teacher)
    out = _log(cfg)
    run.state["train_path"] = str(save_dataset(train_ds, data_dir / "offline_dataset.npz", out))
    run.state["test_path"] = str(save_dataset(test_ds, data_dir / "offline_dataset_test.npz", out))


def training_config(cfg: PipelineConfig, dataset_path: str, output_dir: str) -> TrainingConfig:
    """The ``TrainingConfig`` of stage 4 (training): ``cfg``'s epochs, batch size, width, seed
    and teacher rows (labelled by ``cfg.strategy_path``, the teacher run's strategy),
    ``device="auto"``, everything else ``TrainingConfig``'s defaults."""
    from otonom_trainer.config import TrainingConfig

    return TrainingConfig(
        dataset_path=dataset_path,
        output_dir=output_dir,
        max_epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        hidden_dim=cfg.hidden_dim,
        seed=cfg.seed,
        teacher_rows=cfg.teacher_rows,
        teacher_noise=cfg.teacher_noise,
        teacher_strategy=cfg.strategy_path,
        device="auto",
        progress=not cfg.quiet,
    )


def _stage_train(run: _Run) -> None:
    from otonom_trainer.registry import new_version_dir
    from otonom_trainer.train import BehaviorCloningTrainer

    cfg = run.cfg
    version = new_version_dir(cfg.model_dir, run.started)  # named like the run, by default
    _stage(cfg, 4, f"into {version}")
    tcfg = training_config(cfg, run.state["train_path"], str(version))
    trainer = BehaviorCloningTrainer(tcfg, out=_log(cfg))
    trainer.train()  # prints "ONNX model: ..." once exported
    onnx_path = trainer.onnx_path
    assert onnx_path is not None
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
    from otonom_runtime.plots import plot_equity
    from otonom_runtime.policy import load_rl_policy
    from otonom_runtime.store import get_session
    from otonom_runtime.strategy import load_strategy
    from otonom_schema import load_dataset
    from otonom_trainer.check import measure_latency

    cfg = run.cfg
    _stage(cfg, 6, f"{run.test_start} .. {run.end}")
    strategy = load_strategy(cfg.strategy_path).with_rl(False)
    policy = load_rl_policy(run.state["onnx_path"])
    latency = measure_latency(policy, load_dataset(run.state["test_path"]).states, 2000)
    with get_session(run.url) as session:
        pair = backtest_pair(
            session, strategy, run.symbols, run.test_start, run.end, policy, purpose="evaluation"
        )
    run.heldout = pair
    off, on = pair.off, pair.on
    rows = heldout_rows(run.state["evaluation"], latency, pair)
    plot_equity(
        {"ensemble (no RL)": (off.dates, off.equity), "ensemble + RL": (on.dates, on.equity)},
        run.report_dir / "equity.png",
        title=f"held-out {run.test_start} .. {run.end}: {', '.join(cfg.symbols)}",
    )
    run.state["rows"] = rows
    run.state["heldout_run_ids"] = {"held-out no RL": off.run_id, "held-out RL": on.run_id}
    result = _result(run)
    _say(cfg, "\n" + result.markdown())
    return result


def _stage_gate(run: _Run) -> None:
    from otonom_trainer.check import CheckConfig, run_check

    cfg = run.cfg
    _stage(cfg, 7, f"the production checklist on {run.test_start} .. {run.end}")
    check = run_check(
        CheckConfig(
            model=run.state["version_dir"],
            symbols=cfg.symbols,
            start=run.test_start,
            end=run.end,
            strategy_path=cfg.strategy_path,
            database_url=run.url,
            promote=cfg.promote,
            out_dir=run.state["version_dir"],  # the new (untracked) version's own folder
            quiet=cfg.quiet,
        ),
        runs=run.heldout,  # stage 6's pair; None on a run resumed at stage 7: run again
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
    if check.note:  # said even with --quiet: what a daemon following the folder serves changed
        print(f"warning: {check.note}", file=sys.stderr)
    run.state["gate"] = {
        "passed": check.passed,
        "promoted": check.promoted is not None,
        "failed": [i.name for i in check.items if i.status == "fail"],
    }


def _result(run: _Run) -> PipelineResult:
    return PipelineResult(
        rows=run.state["rows"],
        train_period=(run.first_decision, run.train_end),
        test_period=(run.test_start, run.end),
        report_dir=run.report_dir,
        model_dir=Path(run.state["version_dir"]),
        run_ids={"teacher": run.state["teacher_run_id"], **run.state["heldout_run_ids"]},
        gate=run.state.get("gate"),
    )


_Dates = tuple[dt.date, dt.date, dt.date, dt.date, dt.date]


def _dates(cfg: PipelineConfig, session: Any) -> _Dates:
    """(first decision, train end, test start, end, first bar): the flags given, the rest from
    the stored bars (``otonom_trainer.ranges``); prints the ranges chosen."""
    from otonom_runtime.strategy import load_strategy
    from otonom_trainer.ranges import data_ranges

    ppy = load_strategy(cfg.strategy_path).calendar.periods_per_year
    r = data_ranges(session, cfg.symbols, start=cfg.start, end=cfg.end, periods_per_year=ppy)
    train_end = cfg.train_end or r.train_end
    test_start = cfg.test_start or train_end + dt.timedelta(days=1)
    if not r.first_decision < train_end < test_start <= r.end:
        raise PipelineError(
            f"the split does not fit: decisions {r.first_decision} .. {r.end}, train_end "
            f"{train_end}, test_start {test_start}; expected first decision (after "
            f"{r.warmup_bars} bars of warm-up) < train_end < test_start <= end"
        )
    given = [f for f in ("start", "end", "train_end", "test_start") if getattr(cfg, f)]
    source = f"{', '.join(given)} given, the rest " if given else ""
    _say(cfg, f"\ndates ({source}from the bars in the store):")
    for line in (r.warmup_line(), *r.split_lines(train_end, test_start), r.calendar_line()):
        _say(cfg, "  " + line)
    return r.first_decision, train_end, test_start, r.end, r.data_start


def run_pipeline(cfg: PipelineConfig) -> PipelineResult:
    """Run the stages from ``cfg.from_stage`` on; raises what the stages raise (each names its
    input). The run's report folder (``result.report_dir``) holds ``pipeline_state.json``,
    updated after every stage; ``result.gate["passed"]`` says whether the gate passed. A bad
    strategy fails first, before anything is written."""
    from otonom_runtime.store import default_database_url, get_session
    from otonom_runtime.strategy import load_strategy

    clock = time.perf_counter()
    load_strategy(cfg.strategy_path)
    url = cfg.database_url or default_database_url()
    started = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    report_dir = _run_folder(cfg, started)  # checked here, made at the first save

    if cfg.from_stage == 1:  # the data first: the dates not given come from its bars
        dates = _stage_data(cfg, url)
    else:
        with get_session(url) as session:
            dates = _dates(cfg, session)
    first_decision, train_end, test_start, end, start = dates
    run = _Run(
        cfg=cfg,
        url=url,
        report_dir=report_dir,
        started=started,
        start=start,
        first_decision=first_decision,
        train_end=train_end,
        test_start=test_start,
        end=end,
        state={},
    )
    _resume(run, cfg.from_stage)
    if cfg.from_stage > 1:
        _say(
            cfg,
            f"resuming from stage {cfg.from_stage} ({STAGES[cfg.from_stage - 1]}): run "
            f"{report_dir.name}, report in {report_dir}/",
        )
    else:
        run.save(1)
        _say(cfg, f"run {report_dir.name}: report in {report_dir}/")
    steps = (_stage_teacher, _stage_datasets, _stage_train, _stage_evaluate, _stage_heldout)
    for n, step in enumerate((*steps, _stage_gate), start=2):
        if n < cfg.from_stage:
            continue
        step(run)
        run.save(n)
    result = _result(run)
    result.elapsed_s = time.perf_counter() - clock
    write_tables(result, run.state["onnx_path"])
    _say(cfg, f"\nreport: {report_dir}/ (table.md, table.json, equity.png, confusion_matrix.png)")
    _say(cfg, f"model:  {result.model_dir}/ (policy_best.onnx, check.md, training_curves.png, ...)")
    _say(cfg, f"took {result.elapsed_s:.0f} s")
    return result
