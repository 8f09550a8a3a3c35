"""``otonom-train check``: the production checklist's command line (``otonom_trainer.check``).

The flags map onto ``CheckConfig``'s fields; every rule lives there. Importing this module
imports neither torch nor the store.
"""

from __future__ import annotations

import argparse
import sys

from otonom_runtime.cli import require_store
from otonom_schema import parse_iso_date
from otonom_trainer.flags import add_strategy_flag

__all__ = ["add_parser"]


def _cmd_check(args: argparse.Namespace) -> int:
    from otonom_trainer.check import CheckConfig, run_check

    cfg = CheckConfig(
        model=args.model,
        symbols=tuple(dict.fromkeys(args.symbol)),
        start=args.start_date,
        end=args.end_date,
        strategy_path=args.strategy_path,
        database_url=args.database_url,
        min_val_accuracy=args.min_val_accuracy,
        sharpe_tolerance=args.sharpe_tolerance,
        sharpe_confidence=args.sharpe_confidence,
        min_regime_accuracy=args.min_regime_accuracy,
        regime_sharpe_tolerance=args.regime_sharpe_tolerance,
        max_p99_latency_ms=args.max_latency_ms,
        promote=args.promote,
        out_dir=args.out,
    )
    require_store(args.database_url)  # the check only reads the store
    result = run_check(cfg)
    print(result.table())
    if result.promoted:
        print(f"PASS: promoted {result.version_dir} ({result.promoted})")
        if result.note:
            print(f"warning: {result.note}", file=sys.stderr)
    elif result.passed:
        print("PASS" + ("" if args.promote else " (use --promote to make it the latest)"))
    else:
        failed = [i.name for i in result.items if i.status == "fail"]
        print(f"FAIL: {', '.join(failed)}" + (" (not promoted)" if args.promote else ""))
    return 0 if result.passed else 1


def _add_thresholds(p: argparse.ArgumentParser) -> None:
    """The items' thresholds (``CheckConfig``'s defaults)."""
    p.add_argument(
        "--min-val-accuracy",
        type=float,
        default=0.70,
        help="lowest validation accuracy that passes (default %(default)s)",
    )
    p.add_argument(
        "--sharpe-tolerance",
        type=float,
        default=0.25,
        help="RL may lower the out-of-sample Sharpe by at most this (default %(default)s)",
    )
    p.add_argument(
        "--sharpe-confidence",
        type=float,
        default=0.90,
        help="the level of the Sharpe difference's bootstrap interval: RL fails the item when "
        "the whole interval is below 0 (significant harm); an interval around 0 (no evidence "
        "either way) passes (default %(default)s)",
    )
    p.add_argument(
        "--min-regime-accuracy",
        type=float,
        default=0.60,
        help="lowest accuracy in each volatility regime that passes (default %(default)s)",
    )
    p.add_argument(
        "--regime-sharpe-tolerance",
        type=float,
        default=0.5,
        help="the same per volatility regime (default %(default)s)",
    )
    p.add_argument(
        "--max-latency-ms",
        type=float,
        default=10.0,
        help="highest p99 predict latency in ms that passes (default %(default)s)",
    )


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add the ``check`` command to ``sub``; its handler runs ``run_check``."""
    p = sub.add_parser(
        "check",
        help="the guide's production checklist: pass/fail table, non-zero exit on a failure",
        description=(
            "Run the production checklist on MODEL (a .onnx file or a model folder) over an "
            "out-of-sample period: validation accuracy, train/val loss and accuracy gaps, not "
            "degenerate (not marked so at training: one action on almost every row, or no "
            "better than always the majority action), the "
            "ensemble's Sharpe with vs without the RL analyst (with a bootstrap interval of the "
            "difference and a verdict: significant improvement, no evidence either way or "
            "significant harm), a stress test per volatility "
            "regime (accuracy and Sharpe), p99 predict latency on this machine, the model's "
            "metadata (schema, timestamp, versions, metrics) and the fallback with the model "
            "file removed. Prints a pass/fail table (also written as check.md / check.json in "
            "reports/check/<model version>/, or --out) and exits 1 if any item fails. The "
            "backtests are stored as runs marked internal (made by 'gate'): never a dataset's "
            "teacher."
        ),
    )
    p.add_argument("model", metavar="MODEL", help="a .onnx file or a model (version) folder")
    add_strategy_flag(p)
    p.add_argument("--symbol", action="append", required=True, help="a symbol (repeatable)")
    p.add_argument(
        "--start-date",
        "--start",
        type=parse_iso_date,
        help="out-of-sample start (default: what the pipeline holds out of the stored bars: "
        "the last 25 %% of the decision days after the warm-up)",
    )
    p.add_argument(
        "--end-date",
        "--end",
        type=parse_iso_date,
        help="out-of-sample end (default: the symbols' last common bar)",
    )
    p.add_argument(
        "--database-url", help="SQLAlchemy URL (default: $OTONOM_DATABASE_URL or ./data/otonom.db)"
    )
    _add_thresholds(p)
    p.add_argument(
        "--promote",
        action="store_true",
        help="when every item passes, point the model folder's parent 'latest' at it",
    )
    p.add_argument(
        "--out",
        help="the folder check.md/check.json go to (default: reports/check/<the model's "
        "version folder name>/)",
    )
    p.set_defaults(handler=_cmd_check)
    return p
