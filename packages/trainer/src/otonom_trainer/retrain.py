"""Retraining: decide whether the model in service is due for a new one, then make it.

``run_retrain(RetrainConfig(...))`` is what ``otonom-train retrain`` calls (the guide's
"Retraining Schedule"). It weighs three reasons, each printed with its evidence, and retrains
when any one holds (``decide_retrain``, a pure function of the ``Evidence`` gathered):

* ``schedule``: the ``schedule`` (monthly: 1 month, quarterly: 3) has elapsed since the model
  in service was trained: its ``otonom.created_at`` (the ONNX metadata, read by
  ``otonom_runtime.integrity.scan_model``) + the schedule <= ``today``. The model in service is
  what ``load_rl_policy(model_dir)`` serves (``registry.current_version``: ``latest``, else
  ``default``); with none, the reason holds ("no model in service"). The training data's
  dates come from the version's ``metadata.json`` (the dataset's ``start_date`` /
  ``end_date``).
* ``regime``: the volatility regime mix moved. Each stored bar's regime is the state's regime
  one-hot (``otonom_schema.market_feature_matrix``, the features every state is made of:
  low_vol / normal / high_vol by the rank of the 20-bar realised volatility among its last 120
  values). The days of the training period and the newest ``regime_days`` days after the
  training end (all symbols pooled) give two shares of the three regimes; their population
  stability index ``PSI = sum((recent - train) * ln(recent / train))`` (shares floored at
  1e-4) above ``regime_psi`` (0.25: the usual "significant shift") is a regime change. Fewer
  than ``min_regime_days`` new days: not measured, not a reason.
* ``agreement``: the RL analyst's live agreement with the teacher is below ``min_agreement``
  (60 %, as the guide says). The live decisions are the store's rows with ``live_strategy`` =
  the strategy's name and an RL signal, dated after the training end (the newest
  ``live_window``); the teacher's action on each is the vote of its stored tech / news / risk
  signals without RL (``add_votes`` + ``decide_rows`` at the strategy's weights and
  ``min_score``: the backtester's and the daemon's rule). Fewer than ``min_live_decisions``
  rows: said so, not a reason.

``force`` retrains whatever the evidence says; ``dry_run`` prints the decision and writes
nothing. A retrain runs ``otonom_trainer.pipeline`` (the seven stages of ``otonom-train
pipeline``) on the newest bars, whose last stage is the production gate: it promotes the new
version (``<model_dir>/latest``) only when every check passes. Every decision that is not a
dry run is appended as one JSON line to ``<report_dir>/retrain.jsonl``; a retrain also writes
``retrain.json`` (the decision, its reasons and the gate's verdict) into its pipeline run's
folder ``<report_dir>/<run name>/``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from otonom_runtime._demo import DEMO_SEED
from otonom_runtime.config_rules import Validated, rule
from otonom_runtime.strategy import default_strategy_path
from otonom_schema import atomic_write
from otonom_trainer.config import (
    DAY,
    DEMO_SYMBOLS,
    FRACTION,
    NONNEGATIVE,
    POSITIVE_INT,
    START_BEFORE_END,
    SYMBOLS,
)
from otonom_trainer.pipeline import PIPELINE_EPOCHS, TEACHER_NOISE, TEACHER_ROWS
from otonom_trainer.retrain_service import (
    RetrainError,
    ServiceModel,
    choose_symbols,
    service_model,
    serving_note,
)

if TYPE_CHECKING:
    from otonom_runtime.backtest.params import EngineParams
    from otonom_schema import MarketHistory
    from otonom_trainer.pipeline_report import PipelineResult

__all__ = [
    "REGIMES",
    "SCHEDULES",
    "Evidence",
    "Reason",
    "RegimeMix",
    "RetrainConfig",
    "RetrainDecision",
    "RetrainError",
    "RetrainResult",
    "ServiceModel",
    "choose_symbols",
    "decide",
    "decide_retrain",
    "gather_evidence",
    "regime_mix",
    "run_retrain",
    "service_model",
    "serving_note",
    "teacher_agreement",
]

SCHEDULES: Final = {"monthly": 1, "quarterly": 3}
"""The schedules and their length in months."""
REGIMES: Final = ("low_vol", "normal", "high_vol")
LOG_FILE: Final = "retrain.jsonl"
REPORT_FILE: Final = "retrain.json"
_SHARE_FLOOR: Final = 1e-4


_TEXT: Final = rule(nonempty=True, described="non-empty text")


@dataclass(frozen=True)
class RetrainConfig(Validated):
    """What to decide and, on a retrain, what the pipeline runs with (``PipelineConfig``'s
    fields of the same names; ``start``/``end`` None: from the stored bars). ``today`` None: the
    UTC date now. Validated once (``otonom_runtime.config_rules``): ``RetrainError`` names the
    field, what was given and what was expected."""

    strategy_path: str = field(default_factory=default_strategy_path, metadata=_TEXT)
    schedule: str = field(default="monthly", metadata=rule(choices=tuple(SCHEDULES)))
    database_url: str | None = field(
        default=None, metadata=rule(nonempty=True, described="a SQLAlchemy URL or None")
    )
    symbols: tuple[str, ...] = field(default=DEMO_SYMBOLS, metadata=SYMBOLS)
    model_dir: str = field(default="models/rl_bc", metadata=_TEXT)
    report_dir: str = field(default="reports/retrain", metadata=_TEXT)
    today: dt.date | None = field(default=None, metadata=DAY)
    regime_days: int = field(default=90, metadata=POSITIVE_INT)
    min_regime_days: int = field(default=20, metadata=POSITIVE_INT)
    regime_psi: float = field(default=0.25, metadata=NONNEGATIVE)
    min_agreement: float = field(default=0.60, metadata=FRACTION)
    min_live_decisions: int = field(default=30, metadata=POSITIVE_INT)
    live_window: int = field(default=250, metadata=POSITIVE_INT)
    start: dt.date | None = field(default=None, metadata=DAY)
    end: dt.date | None = field(default=None, metadata=DAY)
    seed: int = field(default=DEMO_SEED, metadata=rule(ge=0, described="an integer >= 0"))
    epochs: int = field(default=PIPELINE_EPOCHS, metadata=POSITIVE_INT)
    teacher_rows: int = field(default=TEACHER_ROWS, metadata=NONNEGATIVE)
    teacher_noise: float = field(default=TEACHER_NOISE, metadata=NONNEGATIVE)
    force: bool = False
    dry_run: bool = False
    quiet: bool = False  # the pipeline's stages print nothing (the decision is always printed)

    _error_class = RetrainError
    __cross_checks__ = (START_BEFORE_END,)

    @property
    def day(self) -> dt.date:
        """The decision's date: ``today``, else the UTC date now."""
        return self.today or dt.datetime.now(dt.timezone.utc).date()


# --- the evidence --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegimeMix:
    """Days per regime (``REGIMES`` order) in the training period and in the newest days after
    it (``recent_span``: their first and last date, None when there are none)."""

    train: tuple[int, int, int]
    recent: tuple[int, int, int]
    recent_span: tuple[dt.date, dt.date] | None = None

    @staticmethod
    def _shares(counts: Sequence[int]) -> list[float]:
        total = sum(counts)
        return [max(c / total if total else 0.0, _SHARE_FLOOR) for c in counts]

    @property
    def psi(self) -> float:
        """The population stability index of the recent shares against the training ones."""
        t, r = self._shares(self.train), self._shares(self.recent)
        return float(sum((b - a) * math.log(b / a) for a, b in zip(t, r, strict=True)))

    def describe(self) -> str:
        def pct(counts: Sequence[int]) -> str:
            total = sum(counts) or 1
            return "/".join(f"{100 * c / total:.0f}" for c in counts)

        span = "" if self.recent_span is None else f" {self.recent_span[0]}..{self.recent_span[1]}"
        return (
            f"regime shares low/normal/high % training {pct(self.train)} ({sum(self.train)} "
            f"days), recent {pct(self.recent)} ({sum(self.recent)} days{span}); PSI "
            f"{self.psi:.3f}"
        )


@dataclass(frozen=True)
class Evidence:
    """What the decision is made from: the model in service (None: there is none), the regime
    mix (None: not measured, ``regime_note`` says why) and the live agreement (RL's actions
    equal to the teacher's, out of ``live_total`` live decisions)."""

    model: ServiceModel | None
    regime: RegimeMix | None = None
    regime_note: str = "not measured"
    live_agree: int = 0
    live_total: int = 0


@dataclass(frozen=True)
class Reason:
    """One reason checked: its name, whether it calls for a retrain, and its evidence."""

    name: str
    triggered: bool
    evidence: str

    def line(self) -> str:
        return f"  {self.name:<9} {'RETRAIN' if self.triggered else 'ok':<7} {self.evidence}"


@dataclass(frozen=True)
class RetrainDecision:
    """The decision (``retrain``) and every reason checked."""

    retrain: bool
    reasons: tuple[Reason, ...]
    today: dt.date

    def text(self) -> str:
        why = [r.name for r in self.reasons if r.triggered]
        head = f"retrain: yes ({', '.join(why)})" if self.retrain else "retrain: no, nothing due"
        return "\n".join([f"decision on {self.today}: {head}", *(r.line() for r in self.reasons)])

    def to_dict(self) -> dict[str, Any]:
        return {
            "today": str(self.today),
            "retrain": self.retrain,
            "reasons": [asdict(r) for r in self.reasons],
        }


def _schedule_reason(cfg: RetrainConfig, model: ServiceModel | None) -> Reason:
    from otonom_trainer.walkforward import add_months

    if model is None:
        return Reason("schedule", True, f"no model in service under {cfg.model_dir}")
    trained = model.created_at.date()
    due = add_months(trained, SCHEDULES[cfg.schedule])
    data = f" on data to {model.train_end}" if model.train_end else " (training dates unknown)"
    return Reason(
        "schedule",
        cfg.day >= due,
        f"model {model.version} trained {trained}{data}; {cfg.schedule} retrain due {due}",
    )


def _regime_reason(cfg: RetrainConfig, ev: Evidence) -> Reason:
    mix = ev.regime
    if mix is None:
        return Reason("regime", False, ev.regime_note)
    if sum(mix.recent) < cfg.min_regime_days or not sum(mix.train):
        need = f"need >= {cfg.min_regime_days} new days and a training period"
        return Reason("regime", False, f"not measured: {mix.describe()}; {need}")
    moved = mix.psi > cfg.regime_psi
    return Reason("regime", moved, f"{mix.describe()} {'>' if moved else '<='} {cfg.regime_psi}")


def _agreement_reason(cfg: RetrainConfig, ev: Evidence) -> Reason:
    n = ev.live_total
    if n < cfg.min_live_decisions:
        return Reason(
            "agreement",
            False,
            f"too few live decisions with an RL signal to judge: {n} (need >= "
            f"{cfg.min_live_decisions})",
        )
    share = ev.live_agree / n
    low = share < cfg.min_agreement
    return Reason(
        "agreement",
        low,
        f"RL agrees with the teacher on {ev.live_agree}/{n} live decisions ({100 * share:.1f} %) "
        f"{'<' if low else '>='} {100 * cfg.min_agreement:.0f} %",
    )


def decide_retrain(cfg: RetrainConfig, ev: Evidence) -> RetrainDecision:
    """The decision (pure): every reason of the module docstring checked on ``ev``, plus
    ``force``; retrain when any holds."""
    reasons = [
        _schedule_reason(cfg, ev.model),
        _regime_reason(cfg, ev),
        _agreement_reason(cfg, ev),
    ]
    if cfg.force:
        reasons.append(Reason("force", True, "--force given"))
    return RetrainDecision(any(r.triggered for r in reasons), tuple(reasons), cfg.day)


# --- gathering it ---------------------------------------------------------------------------------


def regime_mix(
    histories: Mapping[str, MarketHistory],
    train: tuple[dt.date, dt.date],
    recent_days: int,
) -> RegimeMix:
    """Days per regime (the state's regime one-hot) in the ``train`` period (inclusive) and in
    the newest ``recent_days`` calendar days after its end, every symbol's bars pooled."""
    from otonom_schema import feature_index, market_feature_matrix

    first = feature_index("regime_low_vol")
    start, end = (np.datetime64(d, "D") for d in train)
    train_counts = np.zeros(3, dtype=np.int64)
    recent_counts = np.zeros(3, dtype=np.int64)
    span: list[np.datetime64] = []
    for history in histories.values():
        regime = np.argmax(market_feature_matrix(history)[:, first : first + 3], axis=1)
        dates = np.asarray(history.dates, dtype="datetime64[D]")
        in_train = (dates >= start) & (dates <= end)
        after = dates > end
        if after.any():
            after &= dates > dates[-1] - np.timedelta64(recent_days, "D")
            span += [dates[after].min(), dates[after].max()]
        train_counts += np.bincount(regime[in_train], minlength=3)
        recent_counts += np.bincount(regime[after], minlength=3)
    found = (min(span).astype(dt.date), max(span).astype(dt.date)) if span else None
    t, r = train_counts.tolist(), recent_counts.tolist()
    return RegimeMix((t[0], t[1], t[2]), (r[0], r[1], r[2]), found)


def teacher_agreement(
    rows: Sequence[Mapping[str, Mapping[str, Any] | None]], params: EngineParams
) -> tuple[int, int]:
    """(agreeing, total) over the decision rows' signals (``Decision.signals``: analyst ->
    ``{"action", "strength", "confidence"}`` or None) that have an RL signal: the RL analyst's
    action against the teacher's, the vote of the row's tech / news / risk signals without RL
    (``add_votes`` then ``decide_rows`` at ``params``' weights and ``min_score``; an analyst
    without a signal on a row adds no vote)."""
    from otonom_runtime.ensemble import Signals, add_votes, decide_rows
    from otonom_runtime.teacher import TEACHER_ANALYSTS

    voted = [r for r in rows if r.get("rl") is not None]
    n = len(voted)
    if not n:
        return 0, 0
    totals, sums = np.zeros((n, 3)), np.zeros((n, 3))
    for name, weight in zip(TEACHER_ANALYSTS, params.weights[:3], strict=True):
        given = [r.get(name) for r in voted]
        signals = Signals(
            np.array([0 if s is None else int(s["action"]) for s in given], dtype=np.int64),
            np.array([0.0 if s is None else float(s["strength"]) for s in given]),
            np.array([0.0 if s is None else float(s["confidence"]) for s in given]),
        )
        add_votes(totals, sums, signals, float(weight))
    decided = decide_rows(
        totals.ravel().tolist(), sums.ravel().tolist(), None, 0.0, params.min_score
    )
    teacher = decided[0::3]
    agree = sum(
        int(r["rl"]["action"]) == int(t)  # type: ignore[index]
        for r, t in zip(voted, teacher, strict=True)
    )
    return agree, n


def gather_evidence(cfg: RetrainConfig, params: EngineParams, name: str) -> Evidence:
    """The ``Evidence`` from the model folder and the store (read only; a SQLite store that
    does not exist yet is not created: nothing measured)."""
    from otonom_runtime import StateBuildError, StoreError, UnknownSymbolError
    from otonom_runtime.cli import require_store
    from otonom_runtime.store import get_session, load_history
    from otonom_runtime.store.ticks import load_live_signals

    model = service_model(cfg.model_dir)
    try:
        url = require_store(cfg.database_url)
    except StoreError as exc:
        return Evidence(model, regime_note=f"not measured: {exc}")
    start = model.train_start if model else None
    end = model.train_end if model else None
    with get_session(url) as session:
        if start is None or end is None:
            regime, note = None, "not measured: the training period of the model is unknown"
        else:
            histories = {}
            for symbol in cfg.symbols:  # one not stored yet (a DEMO-* the pipeline makes): none
                with contextlib.suppress(UnknownSymbolError, StateBuildError):
                    histories[symbol] = load_history(session, symbol)
            regime, note = regime_mix(histories, (start, end), cfg.regime_days), ""
        rows = load_live_signals(session, name, end, cfg.live_window)
    agree, total = teacher_agreement(rows, params)
    return Evidence(model, regime, note, agree, total)


# --- the run -------------------------------------------------------------------------------------


@dataclass
class RetrainResult:
    """What ``run_retrain`` did: the decision, and on a retrain the pipeline's result (its
    ``gate``) and whether the new version was promoted."""

    decision: RetrainDecision
    pipeline: PipelineResult | None = None
    promoted: bool = False
    log: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        out = self.decision.to_dict()
        if self.pipeline is not None:
            out["run"] = str(self.pipeline.report_dir)
            out["model"] = str(self.pipeline.model_dir)
            out["gate"] = self.pipeline.gate
        out["promoted"] = self.promoted
        return out


def _pipeline(cfg: RetrainConfig) -> PipelineResult:
    from otonom_trainer.pipeline import PipelineConfig, run_pipeline

    return run_pipeline(
        PipelineConfig(
            strategy_path=cfg.strategy_path,
            database_url=cfg.database_url,
            symbols=cfg.symbols,
            start=cfg.start,
            end=cfg.end,
            seed=cfg.seed,
            epochs=cfg.epochs,
            teacher_rows=cfg.teacher_rows,
            teacher_noise=cfg.teacher_noise,
            model_dir=cfg.model_dir,
            report_dir=cfg.report_dir,
            promote=True,  # the gate (stage 7) promotes only when every check passes
            quiet=cfg.quiet,
        )
    )


def _log(cfg: RetrainConfig, result: RetrainResult) -> Path:
    """Append the decision to ``<report_dir>/retrain.jsonl`` (rewritten atomically) and, on a
    retrain, write ``retrain.json`` into the pipeline run's folder."""
    entry = result.to_dict()
    if result.pipeline is not None:
        atomic_write(result.pipeline.report_dir / REPORT_FILE, json.dumps(entry, indent=2) + "\n")
    log = Path(cfg.report_dir) / LOG_FILE
    before = log.read_text(encoding="utf-8") if log.is_file() else ""
    log.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(log, before + json.dumps(entry, sort_keys=True) + "\n")
    return log


def decide(cfg: RetrainConfig) -> RetrainDecision:
    """Read the strategy, the model in service and the store (nothing written), then
    ``decide_retrain``. Raises for a bad strategy file, model folder or store."""
    from otonom_runtime.strategy import load_strategy
    from otonom_runtime.teacher import teacher_params

    strategy = load_strategy(cfg.strategy_path)
    return decide_retrain(cfg, gather_evidence(cfg, teacher_params(strategy), strategy.name))


def run_retrain(cfg: RetrainConfig, decision: RetrainDecision | None = None) -> RetrainResult:
    """Decide (``decide``, unless ``decision`` is given), print the decision with every
    reason's evidence and, when it says so and this is no dry run, run the pipeline (its gate
    promotes only a passing model) and log it. A bad strategy or model folder fails before
    anything is written."""
    decision = decision if decision is not None else decide(cfg)
    print(decision.text())
    result = RetrainResult(decision)
    if cfg.dry_run:
        print("dry run: nothing trained, nothing written")
        return result
    if decision.retrain:
        print("\nretraining: otonom-train pipeline on the newest bars")
        result.pipeline = _pipeline(cfg)
        result.promoted = bool((result.pipeline.gate or {}).get("promoted"))
    result.log = _log(cfg, result)
    if result.pipeline is not None:
        verdict = "promoted" if result.promoted else "NOT promoted (the gate rejected it)"
        print(f"retrained: {result.pipeline.model_dir} {verdict}")
    print(f"logged to {result.log}")
    return result
