"""The default strategy file of every command whose ``--strategy-path`` has a default.

A module of its own, importing nothing of the package: a command line builds its parser
(the default and the help below) without loading the strategy package, the ensemble or the
serving code (``otonom_runtime.strategy`` re-exports the three names).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

__all__ = ["BASELINE_STRATEGY", "DEFAULT_STRATEGY_HELP", "default_strategy_path"]

BASELINE_STRATEGY: Final = "strategies/baseline_v1.yaml"
"""The default strategy file of every command that takes ``--strategy-path`` with a default:
the guide's baseline ensemble (the teacher), relative to the working directory."""

DEFAULT_STRATEGY_HELP: Final = (
    f"{BASELINE_STRATEGY} in the working directory, else the copy shipped with otonom-runtime"
)
"""What ``default_strategy_path`` picks, in words (the flags' help)."""


def default_strategy_path() -> str:
    """``BASELINE_STRATEGY`` when the working directory holds it (a checkout of the project),
    else the same file as shipped inside ``otonom_runtime`` (an installed package run from any
    folder): a default that exists wherever a command runs. The two files are the same bytes
    (tested), so a run's strategy hash does not depend on which one was read."""
    if Path(BASELINE_STRATEGY).is_file():
        return BASELINE_STRATEGY
    return str(Path(__file__).parent / "strategy" / Path(BASELINE_STRATEGY).name)
