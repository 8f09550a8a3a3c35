"""PNG charts (matplotlib, an optional extra: ``pip install "otonom-runtime[plot]"``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from otonom_runtime._errors import OtonomRuntimeError
from otonom_runtime.metrics import drawdown_series

__all__ = ["PlotUnavailableError", "figure", "plot_equity", "pyplot"]


class PlotUnavailableError(OtonomRuntimeError, RuntimeError):
    """matplotlib is not installed (PNG charts are an optional extra)."""


def figure(**kwargs: Any) -> Any:
    """A ``matplotlib.figure.Figure`` (``kwargs``: its arguments) on its own Agg canvas, or
    ``PlotUnavailableError`` saying how to install matplotlib. Every PNG chart of the project
    is drawn on one: no ``pyplot``, so no global backend is chosen (``matplotlib.use``) and no
    figure registry is touched; a process that imports the library (a daemon, a notebook)
    keeps its matplotlib settings."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise PlotUnavailableError(
            f"PNG charts need matplotlib ({exc}); install it with "
            "pip install 'otonom-runtime[plot]'"
        ) from None
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


class _Figures:
    """``pyplot()``'s answer: ``subplots`` and ``close`` as pyplot spells them, on ``figure()``."""

    @staticmethod
    def subplots(*args: Any, figsize: Any = None, **kwargs: Any) -> tuple[Any, Any]:
        fig = figure(figsize=figsize)
        return fig, fig.subplots(*args, **kwargs)

    @staticmethod
    def close(fig: Any) -> None:
        """Nothing to release: the figure is in no registry."""


def pyplot() -> Any:
    """For chart code written against pyplot (``plt.subplots(...)``, ``plt.close(fig)``): the
    same two calls drawing on ``figure()``, so without a global backend change; new code calls
    ``figure()``. ``PlotUnavailableError`` without matplotlib."""
    figure()  # fails now, not at the first chart, when matplotlib is missing
    return _Figures()


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
    fig = figure(figsize=(10, 6))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
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
    return out
