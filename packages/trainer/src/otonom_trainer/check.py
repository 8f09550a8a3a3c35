"""The guide's "Production Checklist" as a command: ``otonom-train check MODEL ...``.

``run_check(CheckConfig(...))`` loads the ONNX model through the runtime (as the daemon would),
backtests the out-of-sample period ``start .. end`` with and without the RL analyst, labels that
period with the baseline's own decisions, and checks:

====================  ==============================================================================
item                  passes when
====================  ==============================================================================
val accuracy          the training run's validation action accuracy > ``min_val_accuracy`` (0.70)
loss gap              val loss - train loss at the best epoch < ``max_loss_gap`` (0.2)
accuracy gap          train accuracy - val accuracy at the best epoch < ``max_acc_gap`` (10 points)
out-of-sample Sharpe  Sharpe with RL >= Sharpe without RL - ``sharpe_tolerance`` (0.25), and the
                      difference is not "significant harm" at ``sharpe_confidence`` (0.90): its
                      paired block-bootstrap interval (``otonom_trainer.stats``) wholly below 0.
                      The verdict ("significant improvement", "no evidence either way" or
                      "significant harm"), the interval and the PSR of the curve with RL against
                      the Sharpe without it are shown; "no evidence either way" passes
regime <name>         per volatility regime (low / normal / high, the state's one-hot): the policy's
                      accuracy on the period's days in that regime >= ``min_regime_accuracy``
                      (0.60) and the portfolio's Sharpe on those days with RL >= without RL -
                      ``regime_sharpe_tolerance`` (0.5; shorter samples, wider tolerance).
                      Skipped (not failed) with fewer than ``min_regime_days`` (30) days.
predict latency       p99 of ``policy.predict`` on this machine < ``max_p99_latency_ms`` (10 ms)
metadata              the model carries its schema version and a fingerprint equal to this
                      runtime's, a parseable ``created_at`` timestamp, package versions, and the
                      training metrics
fallback              with the model file removed, a backtest with the RL analyst switched on
                      falls back (and says why) and trades exactly like the ensemble without RL
not degenerate        the model is not marked degenerate at training (``otonom_trainer.degenerate``:
                      one action on >= 95 % of the validation rows while the teacher's share of it
                      is < 90 %, or validation accuracy < the majority baseline + 2 points); a
                      model trained before the mark existed is judged from its validation
                      confusion matrix, with the validation split's most common action as the
                      majority
====================  ==============================================================================

Why tolerances: a Sharpe ratio measured over one or two years has a standard error of roughly
``sqrt(1 / years)`` (~0.7 for two years), so "RL must beat no-RL" would pass or fail on noise. A
policy that imitates the ensemble well votes with it, and the check asks that it does not make the
ensemble measurably worse: only a significant harm or a drop beyond the tolerance fails, "cannot
tell" passes. The thresholds are ``CheckConfig`` fields (and CLI flags).

The backtests are real runs: they are recorded in the store like any other, marked internal
(``params["purpose"] == "gate"``: ``otonom runs list`` shows them as ``gate*``), so that no dataset
ever takes one as its teacher. ``run_check(cfg, runs=pair)`` accepts the period's without/with-RL
pair already run (``otonom_trainer.stages.backtest_pair``; the pipeline passes its held-out pair,
purpose ``evaluation``) and then runs only the fallback backtest.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

from otonom_runtime.baseline import default_strategy_path
from otonom_runtime.config_rules import Validated, rule
from otonom_trainer._errors import OtonomTrainerError
from otonom_trainer.config import DAY, FRACTION, NONNEGATIVE, START_BEFORE_END, SYMBOLS
from otonom_trainer.stages import RlPair, backtest_pair, fallback_backtest
from otonom_trainer.stats import SharpeTest, equity_sharpe_test, sharpe_ratio
from otonom_trainer.trials import count_trials

__all__ = [
    "CheckConfig",
    "CheckError",
    "CheckItem",
    "CheckResult",
    "measure_latency",
    "regime_sharpe",
    "run_check",
    "sharpe_item",
]

Status = Literal["pass", "fail", "skip"]
REGIMES: Final = ("low_vol", "normal", "high_vol")
LEVEL: Final = "a level in (0, 1), e.g. 0.90"
CHECK_REPORTS: Final = Path("reports") / "check"
"""Where ``check.md`` / ``check.json`` go by default: ``reports/check/<model version>/`` (never
the model's own folder, so checking the tracked default model changes no tracked file)."""


class CheckError(OtonomTrainerError, ValueError):
    """A check that cannot run as asked (the message says what was given and expected)."""


@dataclass(frozen=True)
class CheckConfig(Validated):
    """What to check and the thresholds (defaults: the guide's checklist); validated once
    (``otonom_runtime.config_rules``: ``CheckError`` names the field, what was given and what
    was expected)."""

    model: str = field(metadata=rule(nonempty=True, described="a model path"))
    symbols: tuple[str, ...] = field(metadata=SYMBOLS)
    # None: the pipeline's held-out period of the stored bars / the symbols' last common bar
    start: dt.date | None = field(default=None, metadata=DAY)
    end: dt.date | None = field(default=None, metadata=DAY)
    strategy_path: str = field(default_factory=default_strategy_path)
    database_url: str | None = None
    min_val_accuracy: float = field(default=0.70, metadata=FRACTION)
    max_loss_gap: float = field(default=0.2, metadata=NONNEGATIVE)
    max_acc_gap: float = field(default=0.10, metadata=FRACTION)
    sharpe_tolerance: float = field(default=0.25, metadata=NONNEGATIVE)
    sharpe_confidence: float = field(default=0.90, metadata=rule(gt=0, lt=1, described=LEVEL))
    min_regime_accuracy: float = field(default=0.60, metadata=FRACTION)
    regime_sharpe_tolerance: float = field(default=0.5, metadata=NONNEGATIVE)
    min_regime_days: int = field(default=30, metadata=rule(ge=2, described="an integer >= 2"))
    max_p99_latency_ms: float = field(default=10.0, metadata=NONNEGATIVE)
    latency_samples: int = field(default=2000, metadata=rule(ge=100, described="an integer >= 100"))
    promote: bool = False
    out_dir: str | None = None  # None: CHECK_REPORTS / <the model's version folder name>
    quiet: bool = False

    _error_class = CheckError
    __cross_checks__ = (START_BEFORE_END,)


@dataclass(frozen=True)
class CheckItem:
    """One line of the checklist: what was measured against what was required."""

    name: str
    status: Status
    measured: str
    required: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class CheckResult:
    """The checklist's outcome; ``passed`` is True when no item failed."""

    model_path: Path
    version_dir: Path
    items: list[CheckItem]
    details: dict[str, Any] = field(default_factory=dict)
    promoted: Path | None = None
    note: str | None = None  # the promotion replaced a model of other symbols (registry)

    @property
    def passed(self) -> bool:
        return all(item.status != "fail" for item in self.items)

    def table(self) -> str:
        """The pass/fail table as markdown (what the CLI prints)."""
        lines = ["| check | result | measured | required |", "|---|---|---|---|"]
        for item in self.items:
            lines.append(
                f"| {item.name} | {item.status.upper()} | {item.measured} | {item.required} |"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": str(self.model_path),
            "passed": self.passed,
            "items": [item.to_dict() for item in self.items],
            "details": self.details,
            "promoted": str(self.promoted) if self.promoted else None,
            "note": self.note,
        }


def measure_latency(policy: Any, states: npt.NDArray[np.float32], samples: int) -> dict[str, float]:
    """p50 / p99 / max of ``policy.predict`` (microseconds) over ``samples`` calls, cycling
    through ``states`` (real states, not zeros), after a warm-up of 200 calls."""
    from otonom_schema import RlState

    if states.shape[0] == 0:
        raise ValueError("no states to time predict on; expected at least one")
    pool = [RlState.from_array(s) for s in states[: min(len(states), 256)]]
    for i in range(200):
        policy.predict(pool[i % len(pool)])
    timings = np.empty(samples, dtype=np.float64)
    clock = time.perf_counter_ns
    for i in range(samples):
        state = pool[i % len(pool)]
        t0 = clock()
        policy.predict(state)
        timings[i] = clock() - t0
    timings /= 1e3
    return {
        "p50_us": float(np.percentile(timings, 50)),
        "p99_us": float(np.percentile(timings, 99)),
        "max_us": float(timings.max()),
    }


def regime_sharpe(
    equity: npt.ArrayLike, mask: npt.ArrayLike, periods_per_year: int
) -> float | None:
    """Annualised Sharpe of the equity curve's simple returns on the days where ``mask`` holds
    (the return from day t-1 to day t belongs to day t); None with < 2 returns or no variance."""
    from otonom_runtime.metrics import returns_from_equity

    e, m = np.asarray(equity, dtype=np.float64), np.asarray(mask, dtype=bool)
    if e.shape != m.shape:
        raise ValueError(f"equity has shape {e.shape} but mask {m.shape}; expected the same")
    return sharpe_ratio(returns_from_equity(e)[m[1:]], periods_per_year)


def _short(reason: str) -> str:
    """``"SYM: PolicyError: model path ... does not exist; ..."`` -> the error, shortened."""
    text = reason.split("; ")[0].split(": ", 1)[-1]
    return text if len(text) <= 80 else text[:77] + "..."


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def _sharpe_ok(with_rl: float | None, without: float | None, tolerance: float) -> bool:
    if with_rl is None or without is None:
        # no variance on one side (e.g. no trades at all): compare as 0
        with_rl = 0.0 if with_rl is None else with_rl
        without = 0.0 if without is None else without
    return with_rl >= without - tolerance


def sharpe_item(
    cfg: CheckConfig, with_rl: float | None, without: float | None, test: SharpeTest
) -> CheckItem:
    """ "out-of-sample Sharpe": fails on a drop beyond ``cfg.sharpe_tolerance`` or a
    significant harm (``test``); "no evidence either way" passes."""
    ok = _sharpe_ok(with_rl, without, cfg.sharpe_tolerance) and test.verdict != "significant harm"
    return CheckItem(
        "out-of-sample Sharpe",
        "pass" if ok else "fail",
        f"with RL {_fmt(with_rl)} vs without {_fmt(without)}; {test.summary()}",
        f">= without - {cfg.sharpe_tolerance}, not significant harm at {cfg.sharpe_confidence:.0%}",
    )


def _training_items(cfg: CheckConfig, meta: dict[str, Any]) -> list[CheckItem]:
    metrics = meta.get("metrics") or {}
    items: list[CheckItem] = []
    val_acc = metrics.get("val_action_acc")
    items.append(
        CheckItem(
            "val accuracy",
            "pass" if val_acc is not None and val_acc > cfg.min_val_accuracy else "fail",
            _fmt(val_acc),
            f"> {cfg.min_val_accuracy:.2f}",
        )
    )
    history = metrics.get("history") or []
    best_epoch = metrics.get("best_epoch")
    best = history[best_epoch - 1] if isinstance(best_epoch, int) and history else None
    if best is None:
        for name in ("loss gap", "accuracy gap"):
            items.append(CheckItem(name, "fail", "no training history in the model", "-"))
        return items
    loss_gap = float(best["val_loss"]) - float(best["train_loss"])
    acc_gap = float(best["train_acc"]) - float(best["val_acc"])
    items.append(
        CheckItem(
            "loss gap",
            "pass" if loss_gap < cfg.max_loss_gap else "fail",
            f"{loss_gap:+.3f} (val {best['val_loss']:.3f} - train {best['train_loss']:.3f}, "
            f"epoch {best_epoch})",
            f"< {cfg.max_loss_gap}",
        )
    )
    items.append(
        CheckItem(
            "accuracy gap",
            "pass" if acc_gap < cfg.max_acc_gap else "fail",
            f"{100 * acc_gap:+.1f} points (train {best['train_acc']:.3f} - val "
            f"{best['val_acc']:.3f})",
            f"< {100 * cfg.max_acc_gap:.0f} points",
        )
    )
    return items


def _degenerate_item(meta: dict[str, Any]) -> CheckItem:
    """ "not degenerate": the training run's mark, or (a model from before the mark) the rules
    applied to its validation confusion matrix."""
    from otonom_trainer.degenerate import (
        MIN_GAIN,
        ONE_ACTION_SHARE,
        TEACHER_SHARE_LIMIT,
        degenerate_mark,
        validation_stats,
    )

    required = (
        f"one action on < {ONE_ACTION_SHARE:.0%} of val rows (or the teacher's share of it >= "
        f"{TEACHER_SHARE_LIMIT:.0%}), val accuracy >= majority baseline + "
        f"{100 * MIN_GAIN:.0f} points"
    )
    metrics = meta.get("metrics") or {}
    cm = metrics.get("confusion_matrix")
    if cm is None:
        return CheckItem("not degenerate", "fail", "no validation confusion matrix", required)
    names = ["HOLD", "BUY", "SELL"]  # the actions in order
    older = "majority_action" not in metrics
    majority = (
        int(np.asarray(cm).sum(axis=1).argmax())
        if older
        else names.index(metrics["majority_action"])
    )
    stats = validation_stats(cm, majority)
    mark = degenerate_mark(cm, majority) if older else metrics.get("degenerate")
    if stats is None:
        return CheckItem("not degenerate", "fail", "no validation rows", required)
    if mark:
        return CheckItem("not degenerate", "fail", f"DEGENERATE: {mark.get('reason')}", required)
    measured = (
        f"val accuracy {stats['val_action_acc']:.3f} vs majority baseline "
        f"{stats['majority_baseline_acc']:.3f} (always {names[majority]}"
        + (", the val split's commonest: model predates the mark" if older else "")
        + f"); {stats['top_prediction']} on {stats['top_prediction_share']:.1%} of val rows "
        f"(teacher {stats['teacher_share']:.1%})"
    )
    return CheckItem("not degenerate", "pass", measured, required)


def _metadata_item(meta: dict[str, Any]) -> CheckItem:
    from otonom_schema import SCHEMA_VERSION, schema_fingerprint

    problems = []
    if meta.get("schema_fingerprint") != schema_fingerprint():
        problems.append(
            f"schema fingerprint {meta.get('schema_fingerprint')!r} != this runtime's "
            f"{schema_fingerprint()!r}"
        )
    try:
        created = dt.datetime.fromisoformat(str(meta.get("created_at")))
    except ValueError:
        problems.append(f"created_at {meta.get('created_at')!r} is not an ISO timestamp")
        created = None
    if not meta.get("package_versions"):
        problems.append("no package versions")
    if not meta.get("metrics"):
        problems.append("no training metrics")
    measured = (
        f"schema {meta.get('schema_version')} ({meta.get('schema_fingerprint')}), "
        f"created {created.isoformat(timespec='seconds') if created else '?'}"
    )
    if problems:
        measured = "; ".join(problems)
    return CheckItem(
        "metadata",
        "fail" if problems else "pass",
        measured,
        f"schema {SCHEMA_VERSION} ({schema_fingerprint()}), timestamp, versions, metrics",
    )


def _majority_regime(
    dataset_dates: npt.NDArray[np.datetime64],
    regimes: npt.NDArray[np.int64],
    days: npt.NDArray[np.datetime64],
) -> npt.NDArray[np.int64]:
    """Each portfolio day's regime: the most common among the symbols that day (-1 if none)."""
    index = np.searchsorted(days, dataset_dates)
    ok = (index < len(days)) & (days[np.minimum(index, len(days) - 1)] == dataset_dates)
    counts = np.zeros((len(days), len(REGIMES)), dtype=np.int64)
    np.add.at(counts, (index[ok], regimes[ok]), 1)
    out: npt.NDArray[np.int64] = counts.argmax(axis=1).astype(np.int64)
    out[counts.sum(axis=1) == 0] = -1
    return out


def _say(cfg: CheckConfig, text: str) -> None:
    if not cfg.quiet:
        print(text, flush=True)


def _period(cfg: CheckConfig, url: str, periods_per_year: int | str) -> tuple[dt.date, dt.date]:
    """``cfg.start .. cfg.end``; a date not given from the stored bars (``otonom_trainer.ranges``:
    the pipeline's held-out period), printed."""
    if cfg.start is not None and cfg.end is not None:
        return cfg.start, cfg.end
    from otonom_runtime.store import get_session
    from otonom_trainer.ranges import data_ranges

    with get_session(url) as session:
        r = data_ranges(
            session, cfg.symbols, end=cfg.end, periods_per_year=periods_per_year, what="the check"
        )
    start = cfg.start or r.test_start
    if start >= r.end:
        raise CheckError(f"start {start} is not before the last common bar {r.end}")
    _say(cfg, "out-of-sample period (dates not given: the pipeline's held-out period):")
    for line in (r.warmup_line(), *r.split_lines(start - dt.timedelta(days=1), start)):
        _say(cfg, "  " + line)
    _say(cfg, "  " + r.calendar_line())
    return start, r.end


def run_check(cfg: CheckConfig, runs: RlPair | None = None) -> CheckResult:
    """Run the checklist (see the module docstring); promote the model when asked and all pass.

    ``runs``: the out-of-sample period already backtested without and with this model (the
    pipeline passes its held-out pair); they must cover ``cfg.symbols`` over the period checked
    (``CheckError`` otherwise). None: the two backtests are run here (purpose ``gate``).
    """
    from otonom_runtime.policy import load_rl_policy, resolve_model_path
    from otonom_runtime.store import default_database_url, get_session
    from otonom_runtime.strategy import load_strategy
    from otonom_trainer.dataset import OfflineDatasetGenerator
    from otonom_trainer.registry import promote, replacement_note

    model_path = resolve_model_path(cfg.model)
    version_dir = model_path.parent
    policy = load_rl_policy(model_path)
    meta = policy.get_metadata()
    strategy = load_strategy(cfg.strategy_path).with_rl(False)
    url = cfg.database_url or default_database_url()
    symbols = list(cfg.symbols)
    start, end = _period(cfg, url, strategy.calendar.periods_per_year)
    _say(cfg, f"checking {model_path} on {', '.join(symbols)} {start} .. {end}")
    if runs is not None:
        _check_runs(runs, symbols, start, end)

    items = _training_items(cfg, meta)
    items.append(_degenerate_item(meta))
    with get_session(url) as session:
        if runs is None:
            runs = backtest_pair(
                session, strategy, symbols, start, end, policy, purpose="gate",
                say=lambda text: _say(cfg, text),
            )  # fmt: skip
        else:
            _say(cfg, f"  backtests without and with RL: runs {runs.off.run_id}, {runs.on.run_id}")
        ds = OfflineDatasetGenerator(session).generate_dataset(
            symbols, start, end, run_id=runs.off.run_id, allow_internal_run=True
        )
        _say(cfg, "  backtest with RL and the model file removed ...")
        fallback = fallback_backtest(session, strategy, model_path, runs.off)

    off, on = runs.off, runs.on
    s_off, s_on = off.metrics.sharpe, on.metrics.sharpe
    test = equity_sharpe_test(on.equity, off.equity, off.metrics.periods_per_year,
                              cfg.sharpe_confidence, n_trials=count_trials())  # fmt: skip
    items.append(sharpe_item(cfg, s_on, s_off, test))
    predicted = policy.predict_batch(ds.states)[0]
    correct = predicted == ds.actions
    details: dict[str, Any] = {
        "oos_rows": len(ds),
        "oos_accuracy": float(correct.mean()) if len(correct) else float("nan"),
        "sharpe_without_rl": s_off,
        "sharpe_with_rl": s_on,
        "return_without_rl": off.metrics.total_return,
        "return_with_rl": on.metrics.total_return,
        "sharpe_test": test.to_dict(),
        "run_ids": {"without_rl": off.run_id, "with_rl": on.run_id, "fallback": fallback[0]},
    }
    details["regimes"], regime_items = _regime_items(cfg, runs, ds, correct)
    items.extend(regime_items)
    details["latency_us"], latency_item = _latency_item(cfg, policy, ds.states)
    items.append(latency_item)
    items.append(_metadata_item(meta))
    items.append(_fallback_item(*fallback[1:]))
    result = CheckResult(
        model_path=model_path, version_dir=version_dir, items=items, details=details
    )
    if cfg.promote and result.passed:
        result.note = replacement_note(version_dir)
        result.promoted = promote(version_dir)
    _write_reports(cfg, result)
    return result


def _regime_items(
    cfg: CheckConfig, runs: RlPair, ds: Any, correct: npt.NDArray[np.bool_]
) -> tuple[dict[str, Any], list[CheckItem]]:
    """Per volatility regime: the details and the check item (see the module docstring)."""
    from otonom_schema import feature_index

    off, on = runs.off, runs.on
    ppy = off.metrics.periods_per_year  # the strategy's calendar, resolved from the bars
    first = feature_index("regime_low_vol")
    regimes = np.argmax(ds.states[:, first : first + 3], axis=1).astype(np.int64)
    day_regime = _majority_regime(ds.dates, regimes, off.dates)
    details: dict[str, Any] = {}
    items: list[CheckItem] = []
    for k, name in enumerate(REGIMES):
        rows = regimes == k
        days = int((day_regime == k).sum())
        acc = float(correct[rows].mean()) if rows.any() else None
        r_off = regime_sharpe(off.equity, day_regime == k, ppy)
        r_on = regime_sharpe(on.equity, day_regime == k, ppy)
        details[name] = {
            "days": days,
            "rows": int(rows.sum()),
            "accuracy": acc,
            "sharpe_without_rl": r_off,
            "sharpe_with_rl": r_on,
        }
        measured = (
            f"{days} days: accuracy {_fmt(acc)}, Sharpe with RL {_fmt(r_on)} vs without "
            f"{_fmt(r_off)}"
        )
        required = (
            f"accuracy >= {cfg.min_regime_accuracy:.2f}, Sharpe >= without - "
            f"{cfg.regime_sharpe_tolerance} (>= {cfg.min_regime_days} days)"
        )
        if days < cfg.min_regime_days or acc is None:
            status: Status = "skip"
        elif acc >= cfg.min_regime_accuracy and _sharpe_ok(
            r_on, r_off, cfg.regime_sharpe_tolerance
        ):
            status = "pass"
        else:
            status = "fail"
        items.append(CheckItem(f"regime {name}", status, measured, required))
    return details, items


def _check_runs(runs: RlPair, symbols: list[str], start: dt.date, end: dt.date) -> None:
    if not runs.covers(symbols, start, end):
        raise CheckError(
            f"the runs given ({runs.off.run_id}, {runs.on.run_id}) are of "
            f"{', '.join(runs.off.symbols)} {runs.off.start} .. {runs.off.end}; expected "
            f"{', '.join(symbols)} {start} .. {end}, the period checked"
        )


def _latency_item(
    cfg: CheckConfig, policy: Any, states: npt.NDArray[np.float32]
) -> tuple[dict[str, float], CheckItem]:
    latency = measure_latency(policy, states, cfg.latency_samples)
    return latency, CheckItem(
        "predict latency",
        "pass" if latency["p99_us"] < cfg.max_p99_latency_ms * 1e3 else "fail",
        f"p99 {latency['p99_us']:.1f} us (p50 {latency['p50_us']:.1f} us)",
        f"p99 < {cfg.max_p99_latency_ms:g} ms",
    )


def _fallback_item(reason: str | None, same: bool) -> CheckItem:
    return CheckItem(
        "fallback",
        "pass" if reason and same else "fail",
        (f"fell back ({_short(reason)}), " if reason else "did not fall back, ")
        + ("trades as without RL" if same else "trades differ from the ensemble without RL"),
        "falls back and trades as without RL",
    )


def _write_reports(cfg: CheckConfig, result: CheckResult) -> None:
    """``check.md`` and ``check.json`` into ``cfg.out_dir`` (default: ``CHECK_REPORTS`` /
    the model's version folder name)."""
    out_dir = Path(cfg.out_dir) if cfg.out_dir else CHECK_REPORTS / result.version_dir.name
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "check.md").write_text(result.table() + "\n", encoding="utf-8")
    (out_dir / "check.json").write_text(
        json.dumps(result.to_dict(), indent=2, default=str) + "\n", encoding="utf-8"
    )
