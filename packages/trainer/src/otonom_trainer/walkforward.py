"""Walk-forward validation: a model per rolling window, judged only on the months after it.

``run_walk_forward(WalkForwardConfig(...))`` is what ``otonom-train walk-forward`` calls. It
answers the guide's troubleshooting advice for "RL agent performs poorly in backtest": instead
of one train/test split, the history is cut into rolling windows of ``train_years`` of training
followed by ``test_months`` of out-of-sample test, and every window gets its own model.

The windows are laid out backwards from ``end`` so that every test period has the same length
and the last one ends on ``end``: test period ``j`` (counted from the end) covers the
``test_months`` months that end ``j * step_months`` months before ``end``, its training period
the ``train_years`` years just before it (ending the day before the test starts). A window
whose training would start before the first decision day is dropped; the windows are then
numbered oldest first. With the default ``step_months == test_months`` the test periods are
adjacent and do not overlap.

Dates and sizes not given come from the stored bars (``otonom_trainer.ranges``): the first
decision after the warm-up (>= ``LOOKBACK`` bars and >= 180 days), the end at the symbols' last
common bar, and 3 years + 6 months shrunk (2 y + 6 m, 1 y + 6 m, 1 y + 3 m) until two windows
fit (else one); the chosen ranges are printed.

Stages (public API only, as ``pipeline.py``):

1. data: symbols must be in the store; missing ``DEMO-*`` symbols are generated (synthetic);
2. the teacher: one backtest without the RL analyst over all decision days gives the labels;
3. per window: the train and test datasets from that run, behaviour cloning (time-ordered
   validation split; the pipeline's recipe by default: its epochs and ``teacher_rows`` rows
   labelled by the strategy's ensemble, never dated after the window's training period) into
   ``out_dir/window_KK/model``, ONNX export, accuracy and macro F1 of
   the ONNX model on the test dataset, then the test period backtested without and with the RL
   analyst (Sharpe, total return, RL fallbacks).

Runs in the store: the teacher is recorded with purpose ``walk-forward`` (an RL-off run like a
user's, so a later ``otonom-train dataset`` may take it as its teacher); each window's two test
backtests with purpose ``evaluation`` (internal: they judge a model, never serve as a teacher).

Outputs in ``out_dir``: ``walk_forward.md`` and ``walk_forward.json`` (a row per window plus the
aggregate), ``walk_forward.png`` (accuracy, and Sharpe without/with RL, per window) and a
``window_KK/`` folder per window (``train.npz``, ``test.npz``, ``model/``, ``train.log`` with
the trainer's own log). The console gets a line as each window starts and as it finishes.
"""

from __future__ import annotations

import argparse
import calendar
import dataclasses
import datetime as dt
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from otonom_runtime._demo import DEMO_SEED
from otonom_runtime.config_rules import rule
from otonom_trainer._errors import OtonomTrainerError
from otonom_trainer.config import (
    DEMO_SYMBOLS,
    NONNEGATIVE,
    POSITIVE_INT,
    START_BEFORE_END,
    WindowedRun,
)
from otonom_trainer.flags import add_teacher_flags, add_window_flags
from otonom_trainer.pipeline import PIPELINE_EPOCHS, TEACHER_NOISE, TEACHER_ROWS
from otonom_trainer.ranges import (
    DEMO_END,
    DEMO_START,
    WALK_FORWARD_SIZES,
    WARMUP_DAYS,
    DataRanges,
)
from otonom_trainer.stages import (
    add_demo_symbols,
    backtest_pair,
    refuse_unknown_before_creating,
    synthetic_beside_real,
)
from otonom_trainer.walkforward_report import (
    WalkForwardResult,
    WindowResult,
    fmt_number,
    plot_walk_forward,
)

if TYPE_CHECKING:
    from otonom_runtime.strategy import StrategyConfig

__all__ = [
    "WalkForwardConfig",
    "WalkForwardError",
    "WalkForwardResult",
    "Window",
    "WindowResult",
    "add_months",
    "add_parser",
    "plan_run",
    "plan_windows",
    "plot_walk_forward",
    "run_walk_forward",
]


class WalkForwardError(OtonomTrainerError, ValueError):
    """A walk-forward setting (or the history it meets) does not work; the message says what
    was given and what was expected."""


# --- windows (pure) ------------------------------------------------------------------------------


def add_months(day: dt.date, months: int) -> dt.date:
    """``day`` moved by ``months`` calendar months (negative: back); the day of the month is
    clamped to the target month's length (2024-03-31 - 1 month = 2024-02-29)."""
    index = day.year * 12 + (day.month - 1) + months
    year, month0 = divmod(index, 12)
    last = calendar.monthrange(year, month0 + 1)[1]
    return dt.date(year, month0 + 1, min(day.day, last))


@dataclass(frozen=True)
class Window:
    """One walk-forward window (all dates inclusive); ``index`` counts from 1, oldest first."""

    index: int
    train_start: dt.date
    train_end: dt.date
    test_start: dt.date
    test_end: dt.date

    @property
    def label(self) -> str:
        return f"W{self.index:02d}"


def plan_windows(
    first_decision: dt.date,
    end: dt.date,
    *,
    train_years: int,
    test_months: int,
    step_months: int | None = None,
) -> list[Window]:
    """The windows over decision days ``first_decision .. end``, oldest first.

    Laid out backwards from ``end``: with ``anchor = end + 1 day``, test period ``j`` (0 = the
    latest) is ``add_months(anchor, -(j * step + test_months)) .. add_months(anchor, -j * step)
    - 1 day``; its training period is the ``train_years`` years before, ending the day before
    the test starts. Windows whose training would start before ``first_decision`` are left
    out. ``WalkForwardError`` when not even one window fits.
    """
    step = test_months if step_months is None else step_months
    for name, value in (
        ("train_years", train_years),
        ("test_months", test_months),
        ("step_months", step),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise WalkForwardError(f"{name}: got {value!r}; expected an integer >= 1")
    anchor = end + dt.timedelta(days=1)
    found: list[tuple[dt.date, dt.date, dt.date, dt.date]] = []
    j = 0
    while True:
        test_start = add_months(anchor, -(j * step + test_months))
        test_end = add_months(anchor, -j * step) - dt.timedelta(days=1)
        train_start = add_months(test_start, -12 * train_years)
        if train_start < first_decision:
            break
        found.append((train_start, test_start - dt.timedelta(days=1), test_start, test_end))
        j += 1
    if not found:
        need = add_months(add_months(anchor, -test_months), -12 * train_years)
        raise WalkForwardError(
            f"the history is too short for one window: decisions run {first_decision} .. {end} "
            f"({(end - first_decision).days + 1} days), but {train_years} year(s) of training "
            f"plus {test_months} month(s) of test ending {end} need decisions from {need}; "
            f"expected an earlier start (at least {WARMUP_DAYS} days before {need}), a later "
            "end, or a shorter --train-years / --test-months"
        )
    return [Window(i, *dates) for i, dates in enumerate(reversed(found), start=1)]


# --- configuration -------------------------------------------------------------------------------


@dataclass(frozen=True)
class WalkForwardConfig(WindowedRun):
    """What to run; validated once on construction (``otonom_runtime.config_rules``:
    ``WalkForwardError`` names the field, what was given and what was expected). ``step_months``
    None means ``test_months`` (adjacent test periods). Symbols missing from the store are
    generated when their name starts with ``DEMO-`` (over ``start .. end``, default 2018-01-01
    .. 2023-12-31), else an error. ``start``, ``end``, ``train_years``, ``test_months`` None:
    from the stored bars (``otonom_trainer.ranges``)."""

    # each window's training: the pipeline's recipe by default (epochs, teacher rows labelled
    # by ``strategy_path``), so the windows judge what ``otonom-train pipeline`` ships
    epochs: int = field(default=PIPELINE_EPOCHS, metadata=POSITIVE_INT)
    batch_size: int = field(default=256, metadata=POSITIVE_INT)
    hidden_dim: int = field(default=128, metadata=POSITIVE_INT)
    teacher_rows: int = field(default=TEACHER_ROWS, metadata=NONNEGATIVE)
    teacher_noise: float = field(default=TEACHER_NOISE, metadata=NONNEGATIVE)
    seed: int = field(default=DEMO_SEED, metadata=rule(ge=0, described="an integer >= 0"))
    out_dir: str = field(
        default="reports/walk-forward", metadata=rule(nonempty=True, described="a folder path")
    )
    quiet: bool = False

    _error_class = WalkForwardError
    __cross_checks__ = (START_BEFORE_END,)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.step_months is None:
            object.__setattr__(self, "step_months", self.test_months)

    @property
    def first_decision(self) -> dt.date:
        """The earliest first decision day ``start`` allows: ``start`` + 180 days (the run also
        waits for ``LOOKBACK`` bars, see ``otonom_trainer.ranges``); needs ``start``."""
        if self.start is None:
            raise WalkForwardError("start: not given; the first decision comes from the bars")
        return self.start + dt.timedelta(days=WARMUP_DAYS)

    def windows(self) -> list[Window]:
        """The windows from ``first_decision`` to ``end`` (``fit_windows``: sizes not given
        shrink to fit); needs ``start`` and ``end``. ``WalkForwardError`` if none fits."""
        from otonom_trainer.ranges import fit_windows

        if self.end is None:
            raise WalkForwardError("end: not given; the last decision comes from the bars")
        return fit_windows(
            self.first_decision,
            self.end,
            train_years=self.train_years,
            test_months=self.test_months,
            step_months=self.step_months,
        )[0]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["symbols"] = list(self.symbols)
        for name in ("start", "end"):
            out[name] = None if out[name] is None else str(out[name])
        return out


# --- the run -------------------------------------------------------------------------------------


def _say(cfg: WalkForwardConfig, text: str) -> None:
    if not cfg.quiet:
        print(text, flush=True)


def _prepare_store(
    cfg: WalkForwardConfig, url: str, periods_per_year: int | str
) -> tuple[DataRanges, list[Window], int, int]:
    """Create the tables, generate missing DEMO-* symbols, check every symbol covers the
    decision days given, then the ranges and windows from the bars (``ranges``, in the same
    transaction: what fails here leaves no bars behind, and a SQLite store it created is
    removed again)."""
    from otonom_runtime.cli import removed_on_failure

    refuse_unknown_before_creating(url, cfg.symbols, set(), WalkForwardError)
    with removed_on_failure(url):  # a SQLite store made here goes again if this fails
        return _prepared(cfg, url, periods_per_year)


def _prepared(
    cfg: WalkForwardConfig, url: str, periods_per_year: int | str
) -> tuple[DataRanges, list[Window], int, int]:
    """``_prepare_store`` after the unknown symbols' check."""
    from otonom_runtime.store import get_session, init_db, list_symbols
    from otonom_trainer.ranges import data_ranges, fit_windows

    init_db(url)
    with get_session(url) as session:
        made = add_demo_symbols(
            session,
            cfg.symbols,
            (cfg.start or DEMO_START, cfg.end or DEMO_END, cfg.seed),
            lambda unknown: WalkForwardError(
                f"symbols {unknown} are not in the store {url}; expected symbols already "
                "imported (otonom data import-csv FILE --symbol NAME) or DEMO-* names for the "
                "synthetic market"
            ),
        )
        if made is not None:
            _say(cfg, "  " + made.summary().replace("\n", "\n  "))
        if note := synthetic_beside_real(session, cfg.symbols):
            _say(cfg, "  " + note)
        if cfg.start is not None and cfg.end is not None:
            _check_coverage(cfg, {info.name: info for info in list_symbols(session)})
        ranges = data_ranges(
            session,
            cfg.symbols,
            start=cfg.start,
            end=cfg.end,
            periods_per_year=periods_per_year,
            what="the walk-forward",
            min_decision_days=2,
        )
        windows, train_years, test_months = fit_windows(
            ranges.first_decision,
            ranges.end,
            train_years=cfg.train_years,
            test_months=cfg.test_months,
            step_months=cfg.step_months,
        )
    return ranges, windows, train_years, test_months


def _check_coverage(cfg: WalkForwardConfig, present: dict[str, Any]) -> None:
    assert cfg.end is not None
    need_from, need_to = cfg.first_decision, cfg.end
    short = []
    for name in cfg.symbols:
        info = present[name]
        if info.first is None or info.last is None or info.first > need_from or info.last < need_to:
            have = "no bars" if info.first is None else f"bars {info.first} .. {info.last}"
            short.append(f"{name} has {have}")
    if short:
        raise WalkForwardError(
            f"{'; '.join(short)} in the store; the walk-forward needs bars from {need_from} "
            f"(start {cfg.start} + {WARMUP_DAYS} days of warm-up) to {need_to}; expected a "
            "--start-date / --end-date inside the stored range"
        )


def _window_line(w: Window, total: int) -> str:
    return f"[window {w.index}/{total}]"


def run_walk_forward(cfg: WalkForwardConfig) -> WalkForwardResult:
    """Run every window (see the module docstring); writes the report and returns the result.

    Raises ``WalkForwardError`` for a history too short for one window or symbols the store
    lacks (before any work), and what the stages raise otherwise (each names its input).
    """
    from otonom_runtime.backtest import run_backtest
    from otonom_runtime.store import default_database_url, get_session
    from otonom_runtime.strategy import load_strategy

    clock = time.perf_counter()
    if cfg.start is not None and cfg.end is not None:
        cfg.windows()  # a too-short history fails before anything is written
    url = cfg.database_url or default_database_url()
    strategy = load_strategy(cfg.strategy_path).with_rl(False)
    out_dir = Path(cfg.out_dir)

    _say(cfg, f"data: {url}")
    cfg, windows = plan_run(cfg, url, strategy.calendar.periods_per_year)
    out_dir.mkdir(parents=True, exist_ok=True)

    span = (windows[0].train_start, windows[-1].test_end)
    _say(cfg, f"teacher: baseline backtest without RL, {span[0]} .. {span[1]}")
    with get_session(url) as session:
        teacher = run_backtest(
            session, strategy, list(cfg.symbols), span[0], span[1], use_rl=False,
            purpose="walk-forward",
        )  # fmt: skip
    _say(cfg, f"  run {teacher.run_id}: {teacher.bar_decisions} decisions")

    results = [
        _run_window(cfg, url, strategy, teacher.run_id, w, len(windows), out_dir) for w in windows
    ]
    out = WalkForwardResult(
        config=cfg, windows=results, out_dir=out_dir, teacher_run_id=teacher.run_id
    )
    plot_walk_forward(out, out_dir / "walk_forward.png")
    out.elapsed_s = time.perf_counter() - clock
    table = out.markdown()
    (out_dir / "walk_forward.md").write_text(table + "\n", encoding="utf-8")
    (out_dir / "walk_forward.json").write_text(
        json.dumps(out.to_dict(), indent=2) + "\n", encoding="utf-8"
    )
    _say(cfg, "\n" + table)
    _say(
        cfg,
        f"\nreport: {out_dir}/ (walk_forward.md, walk_forward.json, walk_forward.png, "
        f"window_KK/)\ntook {out.elapsed_s:.0f} s",
    )
    return out


def plan_run(
    cfg: WalkForwardConfig, url: str, ppy: int | str
) -> tuple[WalkForwardConfig, list[Window]]:
    """The store ready (``_prepare_store``), the windows, and ``cfg`` with every date and size
    filled in; prints the plan. ``ppy``: the strategy's periods a year. The walk-forward's
    first step, shared with ``otonom-train compare``."""
    ranges, windows, train_years, test_months = _prepare_store(cfg, url, ppy)
    sized = (cfg.train_years, cfg.test_months) != (train_years, test_months)
    cfg = dataclasses.replace(
        cfg,
        start=ranges.data_start,
        end=ranges.end,
        train_years=train_years,
        test_months=test_months,
        step_months=cfg.step_months or test_months,
    )
    unused = (windows[0].train_start - ranges.first_decision).days
    _say(
        cfg,
        f"walk-forward: {len(windows)} window(s) of {cfg.train_years} year(s) train + "
        f"{cfg.test_months} month(s) test, step {cfg.step_months} month(s), on "
        f"{', '.join(cfg.symbols)}; first decision {ranges.first_decision}"
        + (f" ({unused} day(s) before the first window unused)" if unused else ""),
    )
    _say(cfg, "  " + ranges.warmup_line())
    _say(
        cfg,
        f"  windows:  {windows[0].train_start} .. {windows[-1].test_end}"
        + (" (sizes not given: the largest giving 2 windows, else 1, of " if sized else "")
        + (", ".join(f"{ty} y + {tm} m" for ty, tm in WALK_FORWARD_SIZES) + ")" if sized else ""),
    )
    _say(cfg, "  " + ranges.calendar_line())
    return cfg, windows


def _run_window(
    cfg: WalkForwardConfig,
    url: str,
    strategy: StrategyConfig,
    teacher_run_id: int,
    w: Window,
    total: int,
    out_dir: Path,
) -> WindowResult:
    """One window: its datasets from the teacher's run, a model trained and evaluated (the
    trainer's output goes to ``window_KK/train.log``), its test period backtested without and
    with the model (``otonom_trainer.stages.backtest_pair``)."""
    from otonom_runtime.policy import load_rl_policy
    from otonom_runtime.store import get_session

    started = time.perf_counter()
    tag = _window_line(w, total)
    _say(
        cfg,
        f"{tag} train {w.train_start} .. {w.train_end}, test {w.test_start} .. "
        f"{w.test_end}: training",
    )
    wdir = out_dir / f"window_{w.index:02d}"
    wdir.mkdir(parents=True, exist_ok=True)
    with (wdir / "train.log").open("w", encoding="utf-8") as log:
        rows, onnx_path, report = _train_window(cfg, url, teacher_run_id, w, wdir, log)
    policy = load_rl_policy(onnx_path)
    with get_session(url) as session:
        pair = backtest_pair(
            session, strategy, list(cfg.symbols), w.test_start, w.test_end, policy,
            purpose="evaluation",
        )  # fmt: skip
    off, on = pair.off, pair.on
    result = WindowResult(
        window=w,
        train_rows=rows[0],
        test_rows=rows[1],
        accuracy=report.accuracy,
        macro_f1=report.macro_avg.f1,
        sharpe_no_rl=off.metrics.sharpe,
        sharpe_rl=on.metrics.sharpe,
        return_no_rl=off.metrics.total_return,
        return_rl=on.metrics.total_return,
        rl_fallbacks=on.fallbacks,
        model=str(onnx_path),
        run_ids={"no_rl": off.run_id, "rl": on.run_id},
        elapsed_s=time.perf_counter() - started,
    )
    _say(
        cfg,
        f"{tag} done in {result.elapsed_s:.1f} s: {result.train_rows}/{result.test_rows} "
        f"rows, accuracy {result.accuracy:.3f}, Sharpe {fmt_number(result.sharpe_no_rl)} no RL "
        f"-> {fmt_number(result.sharpe_rl)} RL, fallbacks {result.rl_fallbacks}",
    )
    return result


def _train_window(
    cfg: WalkForwardConfig, url: str, teacher_run_id: int, w: Window, wdir: Path, log: TextIO
) -> tuple[tuple[int, int], Path, Any]:
    """``((train rows, test rows), the ONNX model, its evaluation on the test dataset)``; the
    datasets' summaries, the training log and the evaluation are printed to ``log``."""
    from otonom_runtime.store import get_session
    from otonom_trainer.config import TrainingConfig
    from otonom_trainer.dataset import OfflineDatasetGenerator, save_dataset
    from otonom_trainer.evaluate import evaluate
    from otonom_trainer.train import BehaviorCloningTrainer

    symbols = list(cfg.symbols)
    with get_session(url) as session:
        gen = OfflineDatasetGenerator(session)
        train_ds = gen.generate_dataset(symbols, w.train_start, w.train_end, run_id=teacher_run_id)
        test_ds = gen.generate_dataset(symbols, w.test_start, w.test_end, run_id=teacher_run_id)
    train_path = save_dataset(train_ds, wdir / "train.npz", log)
    test_path = save_dataset(test_ds, wdir / "test.npz", log)
    tcfg = TrainingConfig(
        dataset_path=str(train_path),
        output_dir=str(wdir / "model"),
        max_epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        hidden_dim=cfg.hidden_dim,
        seed=cfg.seed,
        teacher_rows=cfg.teacher_rows,
        teacher_noise=cfg.teacher_noise,
        teacher_strategy=cfg.strategy_path,
        split="time",
        device="auto",
        progress=False,
    )
    trainer = BehaviorCloningTrainer(tcfg, out=log)
    trainer.train()
    onnx_path = trainer.onnx_path
    assert onnx_path is not None  # train() exports
    report = evaluate(onnx_path, test_path)
    print(report.format(), file=log)
    return (len(train_ds), len(test_ds)), onnx_path, report


# --- command line --------------------------------------------------------------------------------


def _cmd_walk_forward(args: argparse.Namespace) -> int:
    cfg = WalkForwardConfig(
        strategy_path=args.strategy_path,
        database_url=args.database_url,
        symbols=tuple(dict.fromkeys(args.symbol or DEMO_SYMBOLS)),
        start=args.start_date,
        end=args.end_date,
        train_years=args.train_years,
        test_months=args.test_months,
        step_months=args.step_months,
        epochs=args.epochs,
        batch_size=args.batch_size,
        hidden_dim=args.hidden_dim,
        teacher_rows=args.teacher_rows,
        teacher_noise=args.teacher_noise,
        seed=args.seed,
        out_dir=args.out,
        quiet=args.quiet,
    )
    run_walk_forward(cfg)
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add the ``walk-forward`` command to ``sub``; its handler runs ``run_walk_forward``."""
    p = sub.add_parser(
        "walk-forward",
        help="walk-forward validation: a model per rolling window, out-of-sample table and plot",
        description=(
            "Walk-forward validation. One baseline backtest (RL analyst off) over the whole "
            "history gives the labels; the history is then cut into rolling windows of "
            "--train-years of training followed by --test-months of test, laid out backwards "
            "from --end-date (so every test period is full length and the last one ends on "
            "--end-date; consecutive windows move by --step-months). For each window a policy "
            "is trained on its training period only (the pipeline's recipe: its epochs and "
            "teacher rows), exported to ONNX, and judged on its test "
            "period: accuracy and macro F1 against the ensemble's decisions, and the test "
            "period backtested without and with the RL analyst (Sharpe, return, fallbacks). "
            "Prints a table (a row per window plus the mean) and writes walk_forward.md, "
            "walk_forward.json, walk_forward.png and a window_KK/ folder per window to --out. "
            "Missing DEMO-* symbols are generated (synthetic market)."
        ),
        epilog=(
            "example: otonom-train walk-forward --train-years 3 --test-months 6 "
            "(DEMO-BTC, DEMO-ETH, DEMO-SOL 2018-2023: 5 windows)"
        ),
    )
    add_window_flags(p)
    p.add_argument(
        "--epochs",
        type=int,
        default=PIPELINE_EPOCHS,
        help="training epochs per window (default %(default)s, as the pipeline's)",
    )
    add_teacher_flags(p, "each window's training period, as the pipeline does")
    p.add_argument("--batch-size", type=int, default=256, help="training batch size (256)")
    p.add_argument("--hidden-dim", type=int, default=128, help="hidden layer width (128)")
    p.add_argument("--seed", type=int, default=DEMO_SEED,
                   help="seed: synthetic market, training (default %(default)s)")  # fmt: skip
    p.add_argument("--out", default="reports/walk-forward",
                   help="report folder (reports/walk-forward)")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="print only errors")
    p.set_defaults(handler=_cmd_walk_forward)
    return p
