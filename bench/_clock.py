"""The ``--clock`` option the bench scripts share: which clock times each subject."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable


def add_clock_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--clock wall|cpu`` (default wall) to ``parser``."""
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="time each subject by the wall clock (default) or by this process's CPU time "
        "(steadier on a machine shared with other jobs)",
    )


def chosen_clock(args: argparse.Namespace) -> Callable[[], float]:
    """The clock ``--clock`` names: ``time.process_time`` or ``time.perf_counter``."""
    return time.process_time if args.clock == "cpu" else time.perf_counter
