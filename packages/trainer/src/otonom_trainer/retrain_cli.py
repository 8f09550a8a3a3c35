"""``otonom-train retrain``: the retraining decision's command line (``otonom_trainer.retrain``).

The flags map onto ``RetrainConfig``'s fields; every rule lives there. Importing this module
imports neither torch nor the store.
"""

from __future__ import annotations

import argparse
import sys

from otonom_schema import parse_iso_date
from otonom_trainer.flags import add_strategy_flag

__all__ = ["add_parser"]

_EXIT: str = (
    "exit status: 0 nothing to do, or retrained and the new model promoted (also a --dry-run); "
    "1 retrained but the production gate rejected the new model (not promoted), or a pipeline "
    "stage failed; 2 bad input (a flag, the strategy file, the model folder or the store), "
    "refused before anything is trained or written"
)


def _cmd_retrain(args: argparse.Namespace) -> int:
    from otonom_runtime._errors import OtonomRuntimeError
    from otonom_runtime.strategy import load_strategy
    from otonom_schema import SchemaError
    from otonom_trainer._errors import OtonomTrainerError
    from otonom_trainer.retrain import (
        RetrainConfig,
        choose_symbols,
        decide,
        run_retrain,
        serving_note,
    )

    try:
        strategy = load_strategy(args.strategy_path)
        symbols = tuple(dict.fromkeys(args.symbol or ()))
        if not symbols:  # never a synthetic market into a store of real data
            symbols, origin = choose_symbols(args.model_dir, strategy, args.database_url)
            print(f"symbols: {', '.join(symbols)} ({origin}; --symbol chooses others)")
        note = serving_note(args.model_dir, strategy)
        if note:
            print(note)
        cfg = RetrainConfig(
            strategy_path=args.strategy_path,
            schedule=args.schedule,
            database_url=args.database_url,
            symbols=symbols,
            model_dir=args.model_dir,
            report_dir=args.report_dir,
            today=args.today,
            regime_days=args.regime_days,
            min_regime_days=args.min_regime_days,
            regime_psi=args.regime_psi,
            min_agreement=args.min_agreement,
            min_live_decisions=args.min_live_decisions,
            live_window=args.live_window,
            start=args.start,
            end=args.end,
            seed=args.seed,
            epochs=args.epochs,
            teacher_rows=args.teacher_rows,
            force=args.force,
            dry_run=args.dry_run,
            quiet=args.quiet,
        )
        decision = decide(cfg)
    except (OSError, SchemaError, OtonomRuntimeError, OtonomTrainerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = run_retrain(cfg, decision)
    if result.pipeline is not None and not result.promoted:
        failed = ", ".join((result.pipeline.gate or {}).get("failed") or ["?"])
        print(
            f"the production gate rejected {result.pipeline.model_dir} (failed: {failed}); the "
            "model in service stays (exit 1)",
            file=sys.stderr,
        )
        return 1
    return 0


def _add_reasons(p: argparse.ArgumentParser) -> None:
    """The reasons' thresholds (``RetrainConfig``'s defaults)."""
    p.add_argument(
        "--today",
        type=parse_iso_date,
        help="the date the decision is made on (default: today, UTC)",
    )
    p.add_argument(
        "--regime-days",
        type=int,
        default=90,
        help="the newest calendar days after the training end whose volatility-regime mix is "
        "compared with the training period's (default %(default)s)",
    )
    p.add_argument(
        "--min-regime-days",
        type=int,
        default=20,
        help="fewer new days than this: the regime is not judged (default %(default)s)",
    )
    p.add_argument(
        "--regime-psi",
        type=float,
        default=0.25,
        help="a population stability index of the regime shares above this is a regime change "
        "(default %(default)s)",
    )
    p.add_argument(
        "--min-agreement",
        type=float,
        default=0.60,
        help="live agreement of the RL analyst with the teacher below this fraction calls for "
        "a retrain (default %(default)s)",
    )
    p.add_argument(
        "--min-live-decisions",
        type=int,
        default=30,
        help="fewer live decisions with an RL signal than this: the agreement is not judged "
        "(default %(default)s)",
    )
    p.add_argument(
        "--live-window",
        type=int,
        default=250,
        help="the newest live decisions (after the training end) judged (default %(default)s)",
    )


def _add_training(p: argparse.ArgumentParser) -> None:
    """What the pipeline runs with on a retrain (``otonom-train pipeline``'s flags)."""
    from otonom_runtime._demo import DEMO_SEED
    from otonom_trainer.pipeline import PIPELINE_EPOCHS, TEACHER_ROWS

    p.add_argument(
        "--start-date",
        "--start",
        dest="start",
        type=parse_iso_date,
        help="the pipeline's first bar (default: the first stored bar)",
    )
    p.add_argument(
        "--end-date",
        "--end",
        dest="end",
        type=parse_iso_date,
        help="the pipeline's last bar (default: the symbols' last common stored bar)",
    )
    p.add_argument("--epochs", type=int, default=PIPELINE_EPOCHS, help="training epochs")
    p.add_argument(
        "--teacher-rows",
        type=int,
        default=TEACHER_ROWS,
        help="teacher-labelled rows added to the training split (default %(default)s)",
    )
    p.add_argument(
        "--seed", type=int, default=DEMO_SEED, help="market and training seed (%(default)s)"
    )


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add the ``retrain`` command to ``sub``; its handler runs ``run_retrain``."""
    p = sub.add_parser(
        "retrain",
        help="decide whether to retrain (schedule, regime change, live agreement); retrain, "
        "gate and promote",
        description=(
            "Decide whether the model in service (MODEL_DIR's latest, else default) is due for "
            "a new one, printing each reason with its evidence: the schedule elapsed since it "
            "was trained (its otonom.created_at), a volatility-regime change in the bars after "
            "its training end (PSI of the regime shares), the RL analyst's live agreement with "
            "the teacher below --min-agreement (too few live decisions: not a reason). When one "
            "holds (or --force), run the pipeline on the newest bars; its production gate "
            "promotes the new model only if every check passes. The decision is appended to "
            "REPORT_DIR/retrain.jsonl and a retrain's run folder gets retrain.json. " + _EXIT
        ),
    )
    add_strategy_flag(p, "strategy YAML: the teacher's analysts and the live decisions' name")
    p.add_argument(
        "--schedule",
        choices=("monthly", "quarterly"),
        default="monthly",
        help="retrain when this long has passed since the model in service was trained "
        "(default %(default)s)",
    )
    p.add_argument(
        "--symbol",
        action="append",
        help="a symbol (repeatable; default: the training symbols of the model in service, "
        "else of the strategy's RL model, else the symbols of the strategy's live decisions, "
        "else DEMO-BTC, DEMO-ETH, DEMO-SOL where the store holds no real data)",
    )
    p.add_argument(
        "--database-url", help="SQLAlchemy URL (default: $OTONOM_DATABASE_URL or ./data/otonom.db)"
    )
    p.add_argument(
        "--model-dir",
        default="models/rl_bc",
        help="the model folder: its version in service is judged, new versions go there "
        "(default %(default)s)",
    )
    p.add_argument(
        "--report-dir",
        default="reports/retrain",
        help="retrain.jsonl and the pipeline runs' folders (default %(default)s)",
    )
    _add_reasons(p)
    _add_training(p)
    p.add_argument("--force", action="store_true", help="retrain whatever the reasons say")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the decision and its reasons only: nothing trained, nothing written",
    )
    p.add_argument(
        "--quiet",
        action="store_true",
        help="the pipeline prints nothing of its stages (the decision and its verdict are "
        "always printed)",
    )
    p.set_defaults(handler=_cmd_retrain)
    return p
