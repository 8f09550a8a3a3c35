"""An honest comparison: teacher, clone and improved agent, walk-forward, with intervals.

``run_compare(CompareConfig(...))`` is what ``otonom-train compare`` calls. The windows are the
walk-forward's (``otonom_trainer.walkforward``: rolling ``train_years`` of training, then
``test_months`` of out-of-sample test, laid out backwards from ``end``). One backtest of the
strategy without the RL analyst over every decision day is the **teacher** and gives the
labels and the rewards (``otonom_trainer.rewards``). Per window, on its training days only:

- the **clone**: behaviour cloning of the teacher (``BehaviorCloningTrainer``, plain);
- the **agent**: advantage-weighted imitation of the same rows (``--awr-beta``; ``auto``: the
  standard deviation of the training rewards), i.e. the teacher's actions weighted by what they
  earned;
- with ``--ppo-steps N``, **ppo**: the clone fine-tuned with PPO for N steps
  (``otonom_trainer.rl.finetune``, as the 4th voter) on the first symbol's training days.

Both go into the strategy as the RL analyst (the 4th voter, as the strategy YAML configures
it) and the test period is backtested three times: teacher (RL off), clone, agent. Per window:
Sharpe, total return, max drawdown and turnover of each, and the Sharpe differences agent -
teacher and clone - teacher with a paired circular block-bootstrap interval
(``otonom_trainer.stats.sharpe_difference``). Pooled over the windows (their test periods'
daily returns joined): the same differences, the agent's PSR, and its deflated Sharpe with the
trial count of the trials ledger (``otonom_trainer.trials``; ``--trials`` overrides it).

Where the agent departs from the teacher: the decisions of both test runs, per symbol and day,
by action pair (teacher -> agent) and by trend regime, with what the agent's sleeve earned over
the teacher's in the step after. The regime of a ``DEMO-*`` symbol is the synthetic market's
hidden trend (``otonom_runtime.synth.hidden_trend`` with ``--seed``); of any other symbol a
causal proxy: the 63-bar return up to that day beyond +/-5 % (up / down), else flat.

``--oracle`` (``DEMO-*`` symbols only) adds two upper bounds that no causal policy can reach,
close to close, paying the strategy's commission and slippage on each change, equal weight
over the symbols: ``oracle``, told the hidden trend (long in an up-trend, short, or flat when
the strategy forbids shorts, in a down-trend, flat otherwise); ``oracle_state``, told every
hidden variable (``otonom_runtime.synth.hidden_drift``: trend, macro factor, volatility regime
and the pull back to the anchor): long when the next day's expected log return is above
``ORACLE_BAND``, short below ``-ORACLE_BAND``, flat between.

Outputs in ``out_dir`` (written to a temporary folder beside it and renamed at the end: a
failed run leaves no report behind): ``compare.md`` (the trader's report), ``compare.json``,
``compare.png`` and ``window_KK/{clone,agent}/`` (the models). Runs in the store: the teacher
with purpose ``walk-forward``, the test backtests with purpose ``evaluation``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import io
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from otonom_runtime._demo import DEMO_SEED
from otonom_runtime.config_rules import rule
from otonom_trainer._errors import OtonomTrainerError
from otonom_trainer.compare_report import (
    ArmResult,
    CompareResult,
    Departure,
    WindowComparison,
    write_report,
)
from otonom_trainer.config import DEMO_SYMBOLS, POSITIVE_INT, START_BEFORE_END, WindowedRun

if TYPE_CHECKING:
    from otonom_runtime.backtest import BacktestReport
    from otonom_runtime.strategy import StrategyConfig
    from otonom_trainer.walkforward import Window

__all__ = ["CompareConfig", "CompareError", "add_parser", "run_compare"]

PROXY_BARS: Final = 63
PROXY_BAND: Final = 0.05
ORACLE_BAND: Final = 0.0005
"""The expected daily log return the state oracle needs to hold a position (a third of a
trend's drift; fixed before any run, not tuned)."""


class CompareError(OtonomTrainerError, ValueError):
    """A comparison setting (or the history it meets) does not work; the message says what was
    given and what was expected."""


def _beta_ok(value: object) -> bool:
    if value == "auto":
        return True
    return isinstance(value, float | int) and not isinstance(value, bool) and value > 0


@dataclass(frozen=True)
class CompareConfig(WindowedRun):
    """What to compare; validated on construction (``CompareError`` names the field). Dates
    and sizes None: from the stored bars, as the walk-forward's. ``trials`` None: the trials
    ledger's count."""

    epochs: int = field(default=10, metadata=POSITIVE_INT)
    batch_size: int = field(default=256, metadata=POSITIVE_INT)
    hidden_dim: int = field(default=64, metadata=POSITIVE_INT)
    awr_beta: float | str = field(
        default="auto", metadata=rule(test=_beta_ok, described="a number > 0 or 'auto'")
    )
    seed: int = field(default=DEMO_SEED, metadata=rule(ge=0, described="an integer >= 0"))
    confidence: float = field(
        default=0.90, metadata=rule(gt=0, lt=1, described="a level in (0, 1)")
    )
    samples: int = field(default=2000, metadata=rule(ge=100, described="an integer >= 100"))
    trials: int | None = field(default=None, metadata=POSITIVE_INT)
    ppo_steps: int = field(default=0, metadata=rule(ge=0, described="an integer >= 0"))
    rl_mode: str | None = field(
        default=None,
        metadata=rule(choices=(None, "voter", "sole", "filter"), described="voter, sole or filter"),
    )
    oracle: bool = False
    out_dir: str = field(
        default="reports/compare", metadata=rule(nonempty=True, described="a folder path")
    )
    quiet: bool = False

    _error_class = CompareError
    __cross_checks__ = (START_BEFORE_END,)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.oracle and not all(s.startswith("DEMO-") for s in self.symbols):
            real = [s for s in self.symbols if not s.startswith("DEMO-")]
            raise CompareError(
                f"--oracle with {real}: the oracle reads the synthetic market's hidden trend; "
                "expected only DEMO-* symbols"
            )

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["symbols"] = list(self.symbols)
        for name in ("start", "end"):
            out[name] = None if out[name] is None else str(out[name])
        return out


def _say(cfg: CompareConfig, text: str) -> None:
    if not cfg.quiet:
        print(text, flush=True)


def _with_mode(strategy: StrategyConfig, mode: str | None) -> StrategyConfig:
    """``strategy`` with the RL analyst off (the runs switch it on with their model) and its
    deployment mode ``mode`` (None: the file's)."""
    strategy = strategy.with_rl(False)
    if mode is None:
        return strategy
    ensemble = strategy.ensemble
    rl = dataclasses.replace(ensemble.rl_policy, mode=mode)
    return dataclasses.replace(strategy, ensemble=dataclasses.replace(ensemble, rl_policy=rl))


def _walk_forward_config(cfg: CompareConfig) -> Any:
    from otonom_trainer.walkforward import WalkForwardConfig, WalkForwardError

    try:
        return WalkForwardConfig(
            strategy_path=cfg.strategy_path,
            database_url=cfg.database_url,
            symbols=cfg.symbols,
            start=cfg.start,
            end=cfg.end,
            train_years=cfg.train_years,
            test_months=cfg.test_months,
            step_months=cfg.step_months,
            seed=cfg.seed,
            out_dir=cfg.out_dir,
            quiet=cfg.quiet,
        )
    except WalkForwardError as exc:
        raise CompareError(str(exc)) from None


def run_compare(cfg: CompareConfig) -> CompareResult:
    """Run every window (module docstring), write the report, return the result. Nothing is
    left in ``out_dir`` when a stage fails (the store keeps the runs it recorded)."""
    from otonom_runtime.backtest import run_backtest
    from otonom_runtime.store import default_database_url, get_session
    from otonom_runtime.strategy import load_strategy
    from otonom_trainer.walkforward import WalkForwardError, plan_run

    clock = time.perf_counter()
    url = cfg.database_url or default_database_url()
    strategy = _with_mode(load_strategy(cfg.strategy_path), cfg.rl_mode)
    wf = _walk_forward_config(cfg)
    try:
        if wf.start is not None and wf.end is not None:
            wf.windows()  # a too-short history fails before anything is written
        wf, windows = plan_run(wf, url, strategy.calendar.periods_per_year)
    except WalkForwardError as exc:
        raise CompareError(str(exc)) from None
    final = Path(cfg.out_dir)
    stage = final.with_name(f".{final.name}.partial")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        span = (windows[0].train_start, windows[-1].test_end)
        _say(cfg, f"teacher: backtest without RL, {span[0]} .. {span[1]}")
        with get_session(url) as session:
            teacher = run_backtest(
                session, strategy, list(cfg.symbols), span[0], span[1], use_rl=False,
                purpose="walk-forward",
            )  # fmt: skip
        results = [
            _run_window(cfg, url, strategy, teacher.run_id, w, len(windows), stage) for w in windows
        ]
        result = _finish(cfg, wf, results, teacher.run_id, clock, final)
        write_report(result, stage)
        if final.exists():
            shutil.rmtree(final)
        stage.rename(final)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    _say(cfg, "\n" + result.summary())
    _say(cfg, f"\nreport: {final}/compare.md, compare.json, compare.png ({result.elapsed_s:.0f} s)")
    return result


def _finish(
    cfg: CompareConfig,
    wf: Any,
    results: list[WindowComparison],
    teacher_run_id: int,
    clock: float,
    final: Path,
) -> CompareResult:
    from otonom_trainer.trials import count_trials, ledger_path

    n_trials = cfg.trials if cfg.trials is not None else count_trials()
    source = "--trials" if cfg.trials is not None else f"ledger {ledger_path()}"
    filled = dataclasses.replace(
        cfg, start=wf.start, end=wf.end, train_years=wf.train_years,
        test_months=wf.test_months, step_months=wf.step_months,
    )  # fmt: skip
    return CompareResult(
        config=filled.to_dict(),
        windows=results,
        teacher_run_id=teacher_run_id,
        n_trials=n_trials,
        trials_source=source,
        out_dir=final,
        elapsed_s=time.perf_counter() - clock,
    )


def _run_window(
    cfg: CompareConfig,
    url: str,
    strategy: StrategyConfig,
    teacher_run_id: int,
    w: Window,
    total: int,
    out_dir: Path,
) -> WindowComparison:
    """One window: clone and agent trained on its training days, its test period backtested
    three times, the differences, the departures and (``--oracle``) the upper bound."""
    from otonom_runtime.backtest import run_backtest
    from otonom_runtime.policy import load_rl_policy
    from otonom_runtime.store import get_session

    tag = f"[window {w.index}/{total}]"
    _say(cfg, f"{tag} train {w.train_start} .. {w.train_end}, test {w.test_start} .. {w.test_end}")
    wdir = out_dir / f"window_{w.index:02d}"
    models, beta, degenerate = _train_pair(
        cfg, url, strategy.ensemble.rl_policy.mode, teacher_run_id, w, wdir
    )
    symbols = list(cfg.symbols)
    reports: dict[str, BacktestReport] = {}
    with get_session(url) as session:
        reports["teacher"] = run_backtest(
            session, strategy, symbols, w.test_start, w.test_end, use_rl=False,
            purpose="evaluation",
        )  # fmt: skip
        for arm, path in models.items():
            reports[arm] = run_backtest(
                session, strategy, symbols, w.test_start, w.test_end, use_rl=True,
                policy=load_rl_policy(path), purpose="evaluation",
            )  # fmt: skip
        departures = _departures(cfg, session, reports["teacher"], reports["agent"], w)
        arms = {name: ArmResult.from_report(rep) for name, rep in reports.items()}
        for name, reason in degenerate.items():
            arms[name] = dataclasses.replace(arms[name], degenerate=reason)
        for kind in ("oracle", "oracle_state") if cfg.oracle else ():
            arms[kind] = _oracle(cfg, session, strategy, reports["teacher"], w, kind)
    result = WindowComparison.build(
        w, arms, departures, awr_beta=beta, confidence=cfg.confidence, samples=cfg.samples,
        seed=cfg.seed,
    )  # fmt: skip
    _say(cfg, f"{tag} {result.line()}")
    return result


def _train_pair(
    cfg: CompareConfig, url: str, mode: str, teacher_run_id: int, w: Window, wdir: Path
) -> tuple[dict[str, Path], float, dict[str, str]]:
    """The clone and the agent of one window (their ONNX files), the AWR beta used and the
    reason of each arm whose model the trainer marked degenerate."""
    from otonom_runtime.store import get_session
    from otonom_trainer.config import TrainingConfig
    from otonom_trainer.dataset import OfflineDatasetGenerator, save_dataset
    from otonom_trainer.rewards import with_rewards
    from otonom_trainer.train import BehaviorCloningTrainer

    log = io.StringIO()
    with get_session(url) as session:
        ds = OfflineDatasetGenerator(session).generate_dataset(
            list(cfg.symbols), w.train_start, w.train_end, run_id=teacher_run_id
        )
        ds = with_rewards(session, ds)
    data = save_dataset(ds, wdir / "train.npz", log)
    rewards = np.asarray(ds.rewards, dtype=np.float64)
    spread = float(np.nanstd(rewards)) if np.isfinite(rewards).any() else 0.0
    beta = float(cfg.awr_beta) if cfg.awr_beta != "auto" else max(spread, 1e-4)
    models: dict[str, Path] = {}
    degenerate: dict[str, str] = {}
    for arm, awr in (("clone", None), ("agent", beta)):
        tcfg = TrainingConfig(
            dataset_path=str(data), output_dir=str(wdir / arm), max_epochs=cfg.epochs,
            batch_size=cfg.batch_size, hidden_dim=cfg.hidden_dim, seed=cfg.seed, split="time",
            device="cpu", progress=False, awr_beta=awr,
        )  # fmt: skip
        trainer = BehaviorCloningTrainer(tcfg, out=log)
        mark = trainer.train().degenerate
        assert trainer.onnx_path is not None  # train() exports
        models[arm] = trainer.onnx_path
        if mark:
            degenerate[arm] = str(mark.get("reason") or "degenerate")
    if cfg.ppo_steps:
        models["ppo"] = _finetune(cfg, url, mode, w, wdir)
    (wdir / "train.log").write_text(log.getvalue(), encoding="utf-8")
    return models, beta, degenerate


def _finetune(cfg: CompareConfig, url: str, mode: str, w: Window, wdir: Path) -> Path:
    """The window's clone fine-tuned with PPO (``otonom-train finetune``, in the deployment
    ``mode`` it is judged in) for ``cfg.ppo_steps`` steps on the first symbol's training days;
    its ONNX file."""
    from otonom_trainer.rl.finetune import finetune
    from otonom_trainer.rl.ppo import FinetuneConfig

    result = finetune(
        wdir / "clone", wdir / "ppo", url=url, strategy=Path(cfg.strategy_path),
        symbol=cfg.symbols[0], train=(w.train_start, w.train_end),
        config=FinetuneConfig(timesteps=cfg.ppo_steps, seed=cfg.seed, mode=mode),
    )  # fmt: skip
    return Path(result.model)


# --- where the agent departs, and the regimes ----------------------------------------------------


def _regimes(
    cfg: CompareConfig, session: Any, symbol: str, dates: np.ndarray, w: Window
) -> tuple[np.ndarray, str]:
    """The trend label (``down``/``flat``/``up``) of ``symbol`` on each of ``dates`` and what
    it is: the hidden trend of a ``DEMO-*`` symbol, else the causal 63-bar proxy."""
    from otonom_runtime.store import load_history
    from otonom_runtime.synth import TREND_NAMES, hidden_trend

    days = dates.astype("datetime64[D]")
    if symbol.startswith("DEMO-"):
        states = hidden_trend(symbol, w.test_start, w.test_end, cfg.seed)
        index = (days - np.datetime64(w.test_start, "D")).astype(np.int64)
        return np.asarray(TREND_NAMES)[states[index]], "hidden trend (synthetic market)"
    first = w.test_start - dt.timedelta(days=200)
    hist = load_history(session, symbol, start=first, end=w.test_end)
    bar_days = np.asarray(hist.dates).astype("datetime64[D]")
    close = np.asarray(hist.close, dtype=np.float64)
    back = np.concatenate([np.full(PROXY_BARS, np.nan), close[:-PROXY_BARS]])[: close.size]
    with np.errstate(invalid="ignore", divide="ignore"):
        move = close / back - 1.0
    labels = np.where(move > PROXY_BAND, "up", np.where(move < -PROXY_BAND, "down", "flat"))
    at = np.searchsorted(bar_days, days, side="right") - 1
    return labels[np.clip(at, 0, None)], f"causal proxy ({PROXY_BARS}-bar return beyond +/-5 %)"


def _departures(
    cfg: CompareConfig,
    session: Any,
    teacher: BacktestReport,
    agent: BacktestReport,
    w: Window,
) -> list[Departure]:
    """Per symbol and regime: decision days, days the agent's action differs (by pair), and
    the agent's sleeve return minus the teacher's over the steps after (module docstring)."""
    from otonom_runtime.store.datasets import load_decision_equity, load_decisions
    from otonom_trainer.rewards import decision_rewards

    out: list[Departure] = []
    for symbol in cfg.symbols:
        read_t = load_decisions(session, teacher.run_id, symbol, w.test_start, w.test_end)
        read_a = load_decisions(session, agent.run_id, symbol, w.test_start, w.test_end)
        eq_t = load_decision_equity(session, teacher.run_id, symbol, w.test_start, w.test_end)
        eq_a = load_decision_equity(session, agent.run_id, symbol, w.test_start, w.test_end)
        if read_t is None or read_a is None or eq_t is None or eq_a is None:
            continue
        if read_t.dates.shape != read_a.dates.shape or not (read_t.dates == read_a.dates).all():
            continue  # the runs decided on different days: nothing to pair
        regimes, source = _regimes(cfg, session, symbol, read_t.dates, w)
        earned = np.nan_to_num(
            decision_rewards(eq_a[1]).astype(np.float64)
            - decision_rewards(eq_t[1]).astype(np.float64)
        )
        for regime in dict.fromkeys(regimes.tolist()):
            rows = regimes == regime
            out.append(
                Departure.collect(
                    symbol,
                    str(regime),
                    source,
                    read_t.actions[rows],
                    read_a.actions[rows],
                    earned[rows],
                )
            )
    return out


def _oracle_positions(
    cfg: CompareConfig, symbol: str, w: Window, kind: str, short: float
) -> np.ndarray:
    """The oracle's position on each day of ``w``'s test period (module docstring)."""
    from otonom_runtime.synth import hidden_drift, hidden_trend

    if kind == "oracle":
        return np.array([short, 0.0, 1.0])[hidden_trend(symbol, w.test_start, w.test_end, cfg.seed)]
    drift = hidden_drift(symbol, w.test_start, w.test_end, cfg.seed)
    return np.where(drift > ORACLE_BAND, 1.0, np.where(drift < -ORACLE_BAND, short, 0.0))


def _oracle(
    cfg: CompareConfig,
    session: Any,
    strategy: StrategyConfig,
    teacher: BacktestReport,
    w: Window,
    kind: str,
) -> ArmResult:
    """An upper bound on the teacher's days (module docstring): ``kind`` ``oracle`` (the
    hidden trend) or ``oracle_state`` (every hidden variable)."""
    from otonom_runtime.store import load_history

    days = np.asarray(teacher.dates).astype("datetime64[D]")
    cost = (strategy.costs.commission_bps + strategy.costs.slippage_bps) / 1e4
    short = -1.0 if strategy.portfolio.allow_short else 0.0
    at = (days - np.datetime64(w.test_start, "D")).astype(np.int64)
    legs = []
    for symbol in cfg.symbols:
        hist = load_history(session, symbol, start=w.test_start, end=w.test_end)
        bar_days = np.asarray(hist.dates).astype("datetime64[D]")
        close = np.asarray(hist.close, dtype=np.float64)[np.searchsorted(bar_days, days)]
        held = _oracle_positions(cfg, symbol, w, kind, short)[at][:-1]
        changes = np.abs(np.diff(np.concatenate([[0.0], held])))
        legs.append(held * (close[1:] / close[:-1] - 1.0) - cost * changes)
    returns = np.mean(legs, axis=0)
    equity = float(strategy.portfolio.initial_capital) * np.concatenate(
        [[1.0], np.cumprod(1.0 + returns)]
    )
    return ArmResult.from_equity(days, equity, int(teacher.metrics.periods_per_year))


# --- command line --------------------------------------------------------------------------------


def _cmd_compare(args: argparse.Namespace) -> int:
    beta = args.awr_beta if args.awr_beta == "auto" else float(args.awr_beta)
    cfg = CompareConfig(
        strategy_path=args.strategy_path, database_url=args.database_url,
        symbols=tuple(dict.fromkeys(args.symbol or DEMO_SYMBOLS)), start=args.start_date,
        end=args.end_date, train_years=args.train_years, test_months=args.test_months,
        step_months=args.step_months, epochs=args.epochs, batch_size=args.batch_size,
        hidden_dim=args.hidden_dim, awr_beta=beta, seed=args.seed, confidence=args.confidence,
        samples=args.samples, trials=args.trials, oracle=args.oracle, out_dir=args.out,
        ppo_steps=args.ppo_steps, rl_mode=args.rl_mode,
        quiet=args.quiet,
    )  # fmt: skip
    run_compare(cfg)
    return 0


def _beta_arg(text: str) -> str:
    if text == "auto":
        return text
    try:
        float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"got {text!r}; expected a number > 0 or auto") from None
    return text


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add the ``compare`` command to ``sub``; its handler runs ``run_compare``."""
    p = sub.add_parser(
        "compare",
        help="teacher vs clone vs return-aware agent, walk-forward, with bootstrap intervals",
        description=(
            "An honest comparison. Walk-forward windows as `otonom-train walk-forward`; per "
            "window a clone (behaviour cloning) and an agent (advantage-weighted imitation, "
            "--awr-beta) are trained on the training days and the test period is backtested "
            "for the teacher (RL off), the clone and the agent (each as the RL analyst). "
            "Reports per window and pooled: Sharpe, return, max drawdown, turnover, the Sharpe "
            "difference agent - teacher and clone - teacher with a block-bootstrap interval, "
            "PSR and the deflated Sharpe (trial count from the trials ledger), and where the "
            "agent departs from the teacher by action and trend regime. Writes compare.md, "
            "compare.json, compare.png to --out; nothing when it fails."
        ),
        epilog="example: otonom-train compare --symbol DEMO-A --seed 101 --oracle",
    )
    from otonom_trainer.flags import add_window_flags

    add_window_flags(p)
    p.add_argument("--epochs", type=int, default=10, help="training epochs per model (10)")
    p.add_argument("--batch-size", type=int, default=256, help="training batch size (256)")
    p.add_argument("--hidden-dim", type=int, default=64, help="hidden layer width (64)")
    p.add_argument(
        "--awr-beta",
        type=_beta_arg,
        default="auto",
        help="the agent's AWR temperature (return units) or auto: the training rewards' "
        "standard deviation (default auto)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=DEMO_SEED,
        help="seed: synthetic market (DEMO-* symbols generated and their hidden trend), "
        "training, bootstrap (default %(default)s)",
    )
    p.add_argument(
        "--ppo-steps",
        type=int,
        default=0,
        help="add a PPO arm: each window's clone fine-tuned this many steps (otonom-train "
        "finetune, the rl extra) on the first symbol's training days; 0 = off (default)",
    )
    p.add_argument(
        "--rl-mode",
        choices=("voter", "sole", "filter"),
        help="how the clone, agent and ppo decide (ensemble.rl_policy.mode): the 4th voter, the "
        "sole decider, or a filter on the ensemble (default: the strategy file's)",
    )
    p.add_argument("--confidence", type=float, default=0.90, help="interval level (0.90)")
    p.add_argument("--samples", type=int, default=2000, help="bootstrap resamples (2000)")
    p.add_argument(
        "--trials",
        type=int,
        help="override the deflated Sharpe's trial count (default: the trials ledger's count, "
        "$OTONOM_TRIALS_LEDGER or data/trials.jsonl)",
    )
    p.add_argument(
        "--oracle",
        action="store_true",
        help="add the upper bound told the synthetic market's hidden trend (DEMO-* only)",
    )
    p.add_argument("--out", default="reports/compare", help="report folder (reports/compare)")
    p.add_argument("--quiet", action="store_true", help="print only errors")
    p.set_defaults(handler=_cmd_compare)
    return p
