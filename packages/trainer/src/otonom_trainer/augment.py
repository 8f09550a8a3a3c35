"""Teacher labelling: extra training rows whose labels the teacher ensemble gives.

The teacher's decision is a deterministic function of the market features
(``otonom_runtime.teacher.teacher_decisions``), so the trainer can ask it to label states it
never decided on. ``teacher_rows`` makes them: perturbed copies of training states. Each copy
starts from a row drawn (uniformly, with replacement) from the given source rows, adds
Gaussian noise of ``noise`` x that feature's standard deviation over the source rows to the
market, technical and sentiment features (a feature that never varies gets none), clips
each into the schema's range (``otonom_schema.FEATURES``) and keeps the portfolio, regime and
data-quality features as they were. The teacher labels the copy (action and strength, the
strength rounded to float32 as datasets store it). A copy carries its source row's date and
symbol, so none is dated after the source rows' last date: the trainer draws the sources
from its train split only (never a validation or held-out date).

``check_teacher`` is the guard before that: the strategy must give back the dataset's own
actions on its rows, else the labels would come from another teacher.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt

from otonom_schema import FEATURES, OfflineDataset

if TYPE_CHECKING:
    from otonom_runtime.backtest.params import EngineParams
    from otonom_runtime.strategy import StrategyConfig
    from otonom_trainer.config import TrainingConfig

__all__ = [
    "NOISY_GROUPS",
    "TeacherRows",
    "check_teacher",
    "noisy_columns",
    "teacher_rows",
    "with_teacher_rows",
]

NOISY_GROUPS: Final = ("market", "technical", "sentiment")
"""The feature groups ``teacher_rows`` perturbs (the others are copied)."""
_LOW: Final = np.array([f.low for f in FEATURES], dtype=np.float64)
_HIGH: Final = np.array([f.high for f in FEATURES], dtype=np.float64)


def noisy_columns() -> npt.NDArray[np.bool_]:
    """A (34,) mask: True for the features of ``NOISY_GROUPS``."""
    return np.array([f.group in NOISY_GROUPS for f in FEATURES])


@dataclass(frozen=True)
class TeacherRows:
    """Teacher-labelled rows: states (n, 34) float32, actions int64, strengths float32, dates
    and symbols (their source rows'), ``sources`` (the source rows' indices)."""

    states: npt.NDArray[np.float32]
    actions: npt.NDArray[np.int64]
    strengths: npt.NDArray[np.float32]
    dates: npt.NDArray[np.datetime64]
    symbols: npt.NDArray[np.str_]
    sources: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    def describe(self, strategy_path: str, noise: float) -> str:
        """The training log's line about these rows."""
        span = f"{self.dates.min()} .. {self.dates.max()}" if len(self) else "none"
        return (
            f"Teacher rows: {len(self)} perturbed train states labelled by {strategy_path} "
            f"(noise {noise:g} sd), dated {span}"
        )


def teacher_rows(
    dataset: OfflineDataset,
    sources: npt.NDArray[np.int64],
    n: int,
    *,
    noise: float,
    seed: int,
    teacher: EngineParams | StrategyConfig,
) -> TeacherRows:
    """``n`` perturbed copies of ``dataset``'s rows ``sources``, labelled by ``teacher`` (see
    the module docstring); the same arguments give the same rows."""
    from otonom_runtime.teacher import teacher_decisions

    if n < 0 or noise < 0:
        raise ValueError(f"teacher_rows(n={n}, noise={noise}); expected both >= 0")
    if n and not len(sources):
        raise ValueError("teacher_rows: no source rows to perturb")
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(np.asarray(sources, dtype=np.int64), size=n)) if n else sources[:0]
    base = dataset.states[np.asarray(sources, dtype=np.int64)].astype(np.float64)
    scale = np.where(noisy_columns(), base.std(axis=0) if len(base) else 0.0, 0.0) * noise
    x = dataset.states[picked].astype(np.float64)
    x += rng.standard_normal(x.shape) * scale
    states = np.clip(x, _LOW, _HIGH).astype(np.float32)
    labels = teacher_decisions(teacher, states)
    return TeacherRows(
        states=states,
        actions=np.asarray(labels.actions, dtype=np.int64),
        strengths=np.asarray(labels.strengths, dtype=np.float32),
        dates=dataset.dates[picked],
        symbols=dataset.symbols[picked],
        sources=picked.astype(np.int64),
    )


def check_teacher(
    dataset: OfflineDataset, rows: npt.NDArray[np.int64], teacher: EngineParams | StrategyConfig
) -> int:
    """How many of ``dataset``'s ``rows`` the ``teacher`` labels with another action than the
    stored one (0: it is the dataset's teacher, as far as these rows tell)."""
    from otonom_runtime.teacher import teacher_decisions

    got = teacher_decisions(teacher, dataset.states[rows]).actions
    return int(np.count_nonzero(got != dataset.actions[rows]))


def with_teacher_rows(
    dataset: OfflineDataset, train: npt.NDArray[np.int64], cfg: TrainingConfig
) -> tuple[OfflineDataset, TeacherRows | None]:
    """The train split ``train`` of ``dataset`` followed by ``cfg.teacher_rows`` rows drawn
    from it (``teacher_rows`` with ``cfg.teacher_noise`` and ``cfg.seed``, labelled by the
    strategy file ``cfg.teacher_strategy`` with its RL analyst off), as one dataset; with
    ``teacher_rows`` 0: the train rows alone and None. ``TrainingError`` when the strategy does
    not give back the stored actions of the train rows (it is not this dataset's teacher)."""
    from otonom_runtime.strategy import load_strategy
    from otonom_trainer._errors import TrainingError

    rows = np.asarray(train, dtype=np.int64)
    n, strategy_path = cfg.teacher_rows, cfg.teacher_strategy
    if n == 0:
        return _subset(dataset, rows, None), None
    strategy = load_strategy(strategy_path).with_rl(False)
    wrong = check_teacher(dataset, rows, strategy)
    if wrong:
        raise TrainingError(
            f"teacher_strategy {strategy_path} labels {wrong} of the {rows.size} train rows "
            f"with another action than the dataset's teacher "
            f"({', '.join(dataset.metadata.get('strategy_names', [])) or 'unnamed'}); pass "
            "that strategy's file, or teacher_rows 0"
        )
    extra = teacher_rows(dataset, rows, n, noise=cfg.teacher_noise, seed=cfg.seed, teacher=strategy)
    return _subset(dataset, rows, extra), extra


def _subset(
    dataset: OfflineDataset, rows: npt.NDArray[np.int64], extra: TeacherRows | None
) -> OfflineDataset:
    parts = [(dataset.states[rows], dataset.actions[rows], dataset.strengths[rows],
              dataset.symbols[rows], dataset.dates[rows])]  # fmt: skip
    if extra is not None:
        parts.append((extra.states, extra.actions, extra.strengths, extra.symbols, extra.dates))
    cols = [np.concatenate(c) for c in zip(*parts, strict=True)]
    return OfflineDataset(
        states=cols[0], actions=cols[1], strengths=cols[2], symbols=cols[3], dates=cols[4],
        metadata=dataset.metadata,
    )  # fmt: skip
