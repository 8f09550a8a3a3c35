"""Per-row rewards for a generated dataset (``otonom-train dataset --rewards``): what each
decision of the teacher run earned, the return-aware learning's signal (``training.awr``).

The reward of a row (a decision of run R for symbol S on day t) is the realised return of
S's sleeve in R from t to the day t' of R's next decision for S::

    reward = equity(t') / equity(t) - 1

with ``equity`` the sleeve equity R stored on its decision rows (marked at the close, before
that day's decision is filled: ``otonom_runtime.backtest``). The decision of t is filled at
the open after t and held until t' is decided, so the change holds what that position earned,
slippage and commission included, exactly as the backtester computed it. The run decides on
every bar, so t' is the next bar. Only the dataset's own decisions are read (dated up to its
last row's date per symbol, through ``otonom_runtime.store.datasets.load_decision_equity``,
no SQL here): a symbol's last row has no next decision in the dataset and no reward (NaN), as
has a row whose sleeve equity is not positive (a bust sleeve). The result is the same dataset
with ``rewards`` (format version 3). Torch-free.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from sqlalchemy.orm import Session

from otonom_runtime.store.datasets import load_decision_equity
from otonom_schema import OfflineDataset
from otonom_trainer._errors import OtonomTrainerError

__all__ = ["REWARD_DEFINITION", "RewardError", "decision_rewards", "with_rewards"]

REWARD_DEFINITION = (
    "equity(next decision) / equity(decision) - 1 of the teacher run's sleeve for the row's "
    "symbol (after slippage and commission); NaN for a symbol's last row"
)


class RewardError(OtonomTrainerError, ValueError):
    """Rewards cannot be made for a dataset (no teacher run recorded, or rows off its run)."""


def decision_rewards(equity: np.ndarray) -> np.ndarray:
    """``equity[i + 1] / equity[i] - 1`` per decision (float32), NaN for the last one and where
    ``equity[i]`` is not positive."""
    eq = np.asarray(equity, dtype=np.float64)
    out = np.full(eq.shape, np.nan, dtype=np.float64)
    if eq.size > 1:
        with np.errstate(divide="ignore", invalid="ignore"):
            out[:-1] = np.where(eq[:-1] > 0, eq[1:] / eq[:-1] - 1.0, np.nan)
    return out.astype(np.float32)


def with_rewards(session: Session, dataset: OfflineDataset) -> OfflineDataset:
    """``dataset`` (made by ``OfflineDatasetGenerator``: its metadata ``symbol_runs`` names each
    symbol's run) with its per-row rewards (module docstring). ``RewardError`` when a symbol
    has no recorded run or a row is not one of its run's decisions."""
    runs = dataset.metadata.get("symbol_runs")
    rewards = np.full(len(dataset), np.nan, dtype=np.float32)
    for name in dict.fromkeys(dataset.symbols.tolist()):
        run = runs.get(name) if isinstance(runs, dict) else None
        if not isinstance(run, int):
            raise RewardError(
                f"the dataset's metadata names no teacher run for {name!r} (symbol_runs = "
                f"{runs!r}); expected a dataset made by `otonom-train dataset`"
            )
        rows = np.flatnonzero(dataset.symbols == name)
        dates = dataset.dates[rows]
        first, last = dates.min().item(), dates.max().item()
        read = load_decision_equity(session, run, name, first, last)
        stored = read[0] if read is not None else np.array([], dtype="datetime64[D]")
        if read is None or stored.shape != dates.shape or not (stored == dates).all():
            raise RewardError(
                f"the rows of {name!r} ({dates.size}, {first} .. {last}) are not the decisions "
                f"run {run} stored there ({stored.size}); expected the dataset as generated"
            )
        rewards[rows] = decision_rewards(read[1])
    meta = {**dataset.metadata, "rewards": {"definition": REWARD_DEFINITION}}
    return dataclasses.replace(dataset, metadata=meta, rewards=rewards)
