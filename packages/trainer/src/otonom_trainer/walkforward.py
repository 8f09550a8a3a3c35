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
   validation split) into ``out_dir/window_KK/model``, ONNX export, accuracy and macro F1 of
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
import contextlib
import dataclasses
import datetime as dt
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from otonom_runtime.synth import DEMO_SEED
from otonom_schema import parse_iso_date as iso_date
from otonom_trainer._errors import OtonomTrainerError
from otonom_trainer.pipeline import DEMO_SYMBOLS, refuse_unknown_before_creating
from otonom_trainer.ranges import (
    DEMO_END,
    DEMO_START,
    WALK_FORWARD_SIZES,
    WARMUP_DAYS,
    DataRanges,
)

__all__ = [
    "WalkForwardConfig",
    "WalkForwardError",
    "WalkForwardResult",
    "Window",
    "WindowResult",
    "add_months",
    "add_parser",
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


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise WalkForwardError(f"{name}: got {value!r}; expected an integer >= 1")


@dataclass(frozen=True)
class WalkForwardConfig:
    """What to run; validated on construction (``WalkForwardError`` names the field, what was
    given and what was expected). ``step_months`` None means ``test_months`` (adjacent test
    periods). Symbols missing from the store are generated when their name starts with
    ``DEMO-`` (over ``start .. end``, default 2018-01-01 .. 2023-12-31), else an error.
    ``start``, ``end``, ``train_years``, ``test_months`` None: from the stored bars
    (``otonom_trainer.ranges``)."""

    strategy_path: str = "strategies/baseline_v1.yaml"
    database_url: str | None = None
    symbols: tuple[str, ...] = DEMO_SYMBOLS
    start: dt.date | None = None
    end: dt.date | None = None
    train_years: int | None = None
    test_months: int | None = None
    step_months: int | None = None
    epochs: int = 20
    batch_size: int = 256
    hidden_dim: int = 128
    seed: int = DEMO_SEED
    out_dir: str = "reports/walk-forward"
    quiet: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.strategy_path, str) or not self.strategy_path.strip():
            raise WalkForwardError(
                f"strategy_path: got {self.strategy_path!r}; expected a strategy YAML path"
            )
        if self.database_url is not None and (
            not isinstance(self.database_url, str) or not self.database_url.strip()
        ):
            raise WalkForwardError(
                f"database_url: got {self.database_url!r}; expected a SQLAlchemy URL or None"
            )
        symbols = (self.symbols,) if isinstance(self.symbols, str) else tuple(self.symbols)
        if not symbols:
            raise WalkForwardError("symbols: got none; expected at least one symbol")
        bad = [s for s in symbols if not isinstance(s, str) or not s.strip()]
        if bad:
            raise WalkForwardError(f"symbols: got {bad!r}; expected non-empty names")
        dupes = sorted({s for s in symbols if symbols.count(s) > 1})
        if dupes:
            raise WalkForwardError(f"symbols: {dupes} given twice; expected each symbol once")
        object.__setattr__(self, "symbols", symbols)
        for name in ("start", "end"):
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, dt.date) or isinstance(value, dt.datetime)
            ):
                raise WalkForwardError(f"{name}: got {value!r}; expected a datetime.date")
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise WalkForwardError(
                f"start {self.start} is not before end {self.end}; expected start < end"
            )
        for name in ("train_years", "test_months"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        for name in ("epochs", "batch_size", "hidden_dim"):
            _positive_int(name, getattr(self, name))
        if self.step_months is None:
            object.__setattr__(self, "step_months", self.test_months)
        else:
            _positive_int("step_months", self.step_months)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise WalkForwardError(f"seed: got {self.seed!r}; expected an integer >= 0")
        if not isinstance(self.out_dir, str) or not self.out_dir.strip():
            raise WalkForwardError(f"out_dir: got {self.out_dir!r}; expected a folder path")

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
                    _num(r.accuracy),
                    _num(r.macro_f1),
                    _num(r.sharpe_no_rl, signed=True),
                    _num(r.sharpe_rl, signed=True),
                    _num(r.sharpe_delta, signed=True),
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
                _num(a["mean_accuracy"]),
                _num(a["mean_macro_f1"]),
                _num(a["mean_sharpe_no_rl"], signed=True),
                _num(a["mean_sharpe_rl"], signed=True),
                _num(a["mean_sharpe_delta"], signed=True),
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


def _num(value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2%}"


# --- the run -------------------------------------------------------------------------------------


def _say(cfg: WalkForwardConfig, text: str) -> None:
    if not cfg.quiet:
        print(text, flush=True)


def _prepare_store(
    cfg: WalkForwardConfig, url: str, periods_per_year: int | str
) -> tuple[DataRanges, list[Window], int, int]:
    """Create the tables, generate missing DEMO-* symbols, check every symbol covers the
    decision days given, then the ranges and windows from the bars (``ranges``, in the same
    transaction: what fails here leaves no bars behind)."""
    from otonom_runtime.store import get_session, init_db, list_symbols
    from otonom_runtime.synth import write_synthetic
    from otonom_trainer.ranges import data_ranges, fit_windows

    refuse_unknown_before_creating(url, cfg.symbols, set(), WalkForwardError)
    init_db(url)
    with get_session(url) as session:
        present = {info.name: info for info in list_symbols(session)}
        missing = [s for s in cfg.symbols if s not in present]
        unknown = [s for s in missing if not s.startswith("DEMO-")]
        if unknown:
            raise WalkForwardError(
                f"symbols {unknown} are not in the store {url}; expected symbols already "
                "imported (otonom data import-csv FILE --symbol NAME) or DEMO-* names for the "
                "synthetic market"
            )
        if missing:
            start, end = cfg.start or DEMO_START, cfg.end or DEMO_END
            report = write_synthetic(session, missing, start, end, cfg.seed)
            _say(cfg, "  " + report.summary().replace("\n", "\n  "))
            present = {info.name: info for info in list_symbols(session)}
        if cfg.start is not None and cfg.end is not None:
            _check_coverage(cfg, present)
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
    from otonom_runtime.policy import load_rl_policy
    from otonom_runtime.store import default_database_url, get_session
    from otonom_runtime.strategy import load_strategy
    from otonom_trainer.config import TrainingConfig
    from otonom_trainer.dataset import OfflineDatasetGenerator, save_dataset
    from otonom_trainer.evaluate import evaluate
    from otonom_trainer.train import BehaviorCloningTrainer

    clock = time.perf_counter()
    if cfg.start is not None and cfg.end is not None:
        cfg.windows()  # a too-short history fails before anything is written
    url = cfg.database_url or default_database_url()
    strategy = load_strategy(cfg.strategy_path).with_rl(False)
    out_dir = Path(cfg.out_dir)
    symbols = list(cfg.symbols)

    _say(cfg, f"data: {url}")
    ppy = strategy.calendar.periods_per_year
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
        f"{', '.join(symbols)}; first decision {ranges.first_decision}"
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
    out_dir.mkdir(parents=True, exist_ok=True)

    span = (windows[0].train_start, windows[-1].test_end)
    _say(cfg, f"teacher: baseline backtest without RL, {span[0]} .. {span[1]}")
    with get_session(url) as session:
        teacher = run_backtest(
            session, strategy, symbols, span[0], span[1], use_rl=False, purpose="walk-forward"
        )
    _say(cfg, f"  run {teacher.run_id}: {teacher.bar_decisions} decisions")

    results: list[WindowResult] = []
    total = len(windows)
    for w in windows:
        started = time.perf_counter()
        tag = _window_line(w, total)
        _say(
            cfg,
            f"{tag} train {w.train_start} .. {w.train_end}, test {w.test_start} .. "
            f"{w.test_end}: training",
        )
        wdir = out_dir / f"window_{w.index:02d}"
        wdir.mkdir(parents=True, exist_ok=True)
        log_path = wdir / "train.log"
        with (
            log_path.open("w", encoding="utf-8") as log,
            contextlib.redirect_stdout(log),
        ):
            with get_session(url) as session:
                gen = OfflineDatasetGenerator(session)
                train_ds = gen.generate_dataset(
                    symbols, w.train_start, w.train_end, run_id=teacher.run_id
                )
                test_ds = gen.generate_dataset(
                    symbols, w.test_start, w.test_end, run_id=teacher.run_id
                )
            train_path = save_dataset(train_ds, wdir / "train.npz")
            test_path = save_dataset(test_ds, wdir / "test.npz")
            tcfg = TrainingConfig(
                dataset_path=str(train_path),
                output_dir=str(wdir / "model"),
                max_epochs=cfg.epochs,
                batch_size=cfg.batch_size,
                hidden_dim=cfg.hidden_dim,
                seed=cfg.seed,
                split="time",
                device="auto",
                progress=False,
            )
            trainer = BehaviorCloningTrainer(tcfg)
            trainer.train()
            onnx_path = trainer.onnx_path
            assert onnx_path is not None  # train() exports
            report = evaluate(onnx_path, test_path)
            print(report.format())
        policy = load_rl_policy(onnx_path)
        with get_session(url) as session:
            off = run_backtest(
                session, strategy, symbols, w.test_start, w.test_end, use_rl=False,
                purpose="evaluation",
            )  # fmt: skip
            on = run_backtest(
                session, strategy, symbols, w.test_start, w.test_end, use_rl=True, policy=policy,
                purpose="evaluation",
            )  # fmt: skip
        result = WindowResult(
            window=w,
            train_rows=len(train_ds),
            test_rows=len(test_ds),
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
        results.append(result)
        _say(
            cfg,
            f"{tag} done in {result.elapsed_s:.1f} s: {result.train_rows}/{result.test_rows} "
            f"rows, accuracy {result.accuracy:.3f}, Sharpe {_num(result.sharpe_no_rl)} no RL "
            f"-> {_num(result.sharpe_rl)} RL, fallbacks {result.rl_fallbacks}",
        )

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
            "is trained on its training period only, exported to ONNX, and judged on its test "
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
    p.add_argument("--strategy-path", default="strategies/baseline_v1.yaml", help="strategy YAML")
    p.add_argument(
        "--symbol",
        action="append",
        help="a symbol (repeatable; default DEMO-BTC, DEMO-ETH, DEMO-SOL: synthetic)",
    )
    p.add_argument(
        "--start-date",
        "--start",
        type=iso_date,
        help="first bar used; decisions begin after the warm-up (>= 140 bars and >= "
        f"{WARMUP_DAYS} days; default: the symbols' first common bar; missing DEMO-* symbols "
        "are generated from 2018-01-01)",
    )
    p.add_argument(
        "--end-date",
        "--end",
        type=iso_date,
        help="last decision day; the last test period ends here (default: the symbols' last "
        "common bar; DEMO-*: 2023-12-31)",
    )
    p.add_argument(
        "--train-years",
        type=int,
        help="training years per window (default 3, fewer when the history is too short)",
    )
    p.add_argument(
        "--test-months",
        type=int,
        help="test months per window (default 6, 3 when the history is too short)",
    )
    p.add_argument(
        "--step-months",
        type=int,
        help="months between consecutive windows (default: --test-months, adjacent tests)",
    )
    p.add_argument("--epochs", type=int, default=20, help="training epochs per window (20)")
    p.add_argument("--batch-size", type=int, default=256, help="training batch size (256)")
    p.add_argument("--hidden-dim", type=int, default=128, help="hidden layer width (128)")
    p.add_argument(
        "--seed",
        type=int,
        default=DEMO_SEED,
        help="seed: synthetic market, training (default %(default)s)",
    )
    p.add_argument(
        "--out", default="reports/walk-forward", help="report folder (reports/walk-forward)"
    )
    p.add_argument(
        "--database-url", help="SQLAlchemy URL (default: $OTONOM_DATABASE_URL or ./data/otonom.db)"
    )
    p.add_argument("--quiet", action="store_true", help="print only errors")
    p.set_defaults(handler=_cmd_walk_forward)
    return p
