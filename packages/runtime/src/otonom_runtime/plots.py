"""PNG charts (matplotlib, an optional extra: ``pip install "otonom-runtime[plot]"``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from otonom_runtime.metrics import drawdown_series

__all__ = ["PlotUnavailableError", "plot_equity", "pyplot"]


class PlotUnavailableError(RuntimeError):
    """matplotlib is not installed."""


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (files only, never a window), or
    ``PlotUnavailableError`` saying how to install matplotlib. Every PNG chart goes through it."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, never a window
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlotUnavailableError(
            f"PNG charts need matplotlib ({exc}); install it with "
            "pip install 'otonom-runtime[plot]'"
        ) from None
    return plt


def plot_equity(
    curves: Mapping[str, tuple[npt.NDArray[np.datetime64], npt.ArrayLike]],
    path: str | Path,
    *,
    title: str,
) -> Path:
    """Equity curves (top) and their drawdowns (bottom) in one PNG; returns the path.

    ``curves``: label -> (dates, equity). Several curves share the axes (e.g. with and without
    the RL analyst).
    """
    plt = pyplot()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(10, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    try:
        for label, (dates, equity) in curves.items():
            eq = np.asarray(equity, dtype=np.float64)
            x = np.asarray(dates, dtype="datetime64[D]")
            top.plot(x, eq, label=label, linewidth=1.2)
            bottom.fill_between(x, -100.0 * drawdown_series(eq), 0.0, alpha=0.4, label=label)
        top.set_title(title)
        top.set_ylabel("equity")
        top.grid(alpha=0.3)
        top.legend(loc="upper left")
        bottom.set_ylabel("drawdown %")
        bottom.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out, dpi=110)
    finally:
        plt.close(fig)
    return out
