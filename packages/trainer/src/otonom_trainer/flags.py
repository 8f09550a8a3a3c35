"""Command-line flags several ``otonom-train`` commands share, defined once: the strategy
with its default (every command that has one), the symbols (the demo's by default), the
teacher rows' (``pipeline`` and ``walk-forward``: the pipeline's recipe) and the windowed
run's (``walk-forward`` and ``compare``: the store, strategy, symbols and windows). Importing
it imports neither torch nor the store."""

from __future__ import annotations

import argparse

from otonom_runtime.baseline import DEFAULT_STRATEGY_HELP, default_strategy_path
from otonom_schema import parse_iso_date as iso_date
from otonom_trainer.ranges import WARMUP_DAYS

__all__ = ["add_strategy_flag", "add_symbol_flag", "add_teacher_flags", "add_window_flags"]


def add_strategy_flag(p: argparse.ArgumentParser, what: str = "strategy YAML") -> None:
    """``--strategy-path`` defaulting to ``default_strategy_path()`` (the working directory's
    baseline, else the copy shipped with otonom-runtime); ``what``: the help's first words."""
    p.add_argument(
        "--strategy-path",
        default=default_strategy_path(),
        help=f"{what} (default: {DEFAULT_STRATEGY_HELP})",
    )


def add_symbol_flag(p: argparse.ArgumentParser) -> None:
    """``--symbol`` (repeatable; none given: the three synthetic ``DEMO-*`` symbols)."""
    p.add_argument(
        "--symbol",
        action="append",
        help="a symbol (repeatable; default DEMO-BTC, DEMO-ETH, DEMO-SOL: synthetic)",
    )


def add_teacher_flags(p: argparse.ArgumentParser, into: str) -> None:
    """``--teacher-rows N`` and ``--teacher-noise SD`` at the pipeline's defaults (the
    pipeline's and walk-forward's flags); ``into``: what the rows are added to."""
    from otonom_trainer.pipeline import TEACHER_NOISE, TEACHER_ROWS

    p.add_argument(
        "--teacher-rows",
        type=int,
        default=TEACHER_ROWS,
        metavar="N",
        help=f"add N rows labelled by the teacher ensemble (--strategy-path, RL off) to {into}: "
        "perturbed copies of its states, dated as their source rows, so never after it "
        "(0 = off; default %(default)s)",
    )
    p.add_argument(
        "--teacher-noise",
        type=float,
        default=TEACHER_NOISE,
        metavar="SD",
        help="their noise on the market features, in standard deviations (default %(default)s)",
    )


def add_window_flags(p: argparse.ArgumentParser) -> None:
    """The flags of the store, strategy, symbols and windows (walk-forward and compare)."""
    add_strategy_flag(p)
    add_symbol_flag(p)
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
    p.add_argument(
        "--database-url", help="SQLAlchemy URL (default: $OTONOM_DATABASE_URL or ./data/otonom.db)"
    )
