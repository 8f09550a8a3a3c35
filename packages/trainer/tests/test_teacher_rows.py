"""Teacher labelling: ``otonom_runtime.teacher.teacher_decisions`` is the teacher run's rule
(it gives back every stored action of a real teacher dataset, and its strengths to float32
rounding), and the trainer's
extra rows (``otonom_trainer.augment``) carry the teacher's labels, are dated within the train
split, and are refused when the strategy is not the dataset's teacher."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from otonom_runtime.backtest import run_backtest
from otonom_runtime.backtest.params import engine_params
from otonom_runtime.store import dispose_engines, get_session, init_db
from otonom_runtime.strategy import load_strategy
from otonom_runtime.synth import write_synthetic
from otonom_runtime.teacher import teacher_decisions, vote_share
from otonom_schema import FEATURES, OfflineDataset, save_dataset
from otonom_trainer._errors import TrainingError
from otonom_trainer.augment import noisy_columns, teacher_rows, with_teacher_rows
from otonom_trainer.config import ConfigError, TrainingConfig
from otonom_trainer.dataset import OfflineDatasetGenerator
from otonom_trainer.errors import error_breakdown
from otonom_trainer.train import BehaviorCloningTrainer, split_rows

ROOT = Path(__file__).resolve().parents[3]
BASELINE = ROOT / "strategies" / "baseline_v1.yaml"
SYMBOLS = ["DEMO-AAA", "DEMO-BBB"]
FIRST, LAST = dt.date(2021, 1, 1), dt.date(2022, 6, 30)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OfflineDataset, Path]]:
    """A real teacher dataset: the baseline's backtest (RL off) on two synthetic symbols."""
    folder = tmp_path_factory.mktemp("teacher_rows")
    url = f"sqlite:///{(folder / 'otonom.db').as_posix()}"
    init_db(url)
    strategy = load_strategy(BASELINE)
    with get_session(url) as session:
        write_synthetic(session, SYMBOLS, FIRST, LAST, 11)
        run = run_backtest(session, strategy, SYMBOLS, FIRST, LAST).run_id
        ds = OfflineDatasetGenerator(session).generate_dataset(SYMBOLS, FIRST, LAST, run)
    path = save_dataset(ds, folder / "offline_dataset.npz")
    yield ds, path
    dispose_engines()


def test_the_teacher_function_gives_back_every_stored_decision(
    dataset: tuple[OfflineDataset, Path],
) -> None:
    ds, _ = dataset
    assert len(ds) > 500
    assert len(set(ds.actions.tolist())) == 3
    strategy = load_strategy(BASELINE).with_rl(False)
    for source in (strategy, engine_params(strategy)):
        got = teacher_decisions(source, ds.states)
        np.testing.assert_array_equal(got.actions, ds.actions)
        # the dataset stores states and strengths as float32 (the teacher run decided on the
        # float64 features): the strengths agree to float32 rounding, the actions exactly
        np.testing.assert_allclose(got.strengths, ds.strengths, rtol=0, atol=1e-6)
    share = vote_share(teacher_decisions(strategy, ds.states))
    acting = ds.actions != 0
    assert (share[acting] >= 0.5).all()  # min_score 0.5: every BUY/SELL reached it
    assert ((share >= 0) & (share <= 1)).all()


def test_teacher_rows_carry_the_teachers_labels_and_their_sources_dates(
    dataset: tuple[OfflineDataset, Path],
) -> None:
    ds, _ = dataset
    strategy = load_strategy(BASELINE).with_rl(False)
    sources = np.flatnonzero(ds.dates < np.datetime64("2022-01-01"))
    rows = teacher_rows(ds, sources, 3000, noise=0.3, seed=4, teacher=strategy)
    assert len(rows) == 3000
    assert set(rows.sources.tolist()) <= set(sources.tolist())
    labels = teacher_decisions(strategy, rows.states)
    np.testing.assert_array_equal(rows.actions, labels.actions)
    np.testing.assert_array_equal(rows.strengths, labels.strengths.astype(np.float32))
    np.testing.assert_array_equal(rows.dates, ds.dates[rows.sources])
    np.testing.assert_array_equal(rows.symbols, ds.symbols[rows.sources])
    assert rows.dates.max() <= ds.dates[sources].max()
    low = np.array([f.low for f in FEATURES], dtype=np.float32)
    high = np.array([f.high for f in FEATURES], dtype=np.float32)
    assert ((rows.states >= low) & (rows.states <= high)).all()
    fixed = ~noisy_columns()
    np.testing.assert_array_equal(rows.states[:, fixed], ds.states[rows.sources][:, fixed])
    moved = rows.states[:, noisy_columns()] != ds.states[rows.sources][:, noisy_columns()]
    assert moved.mean() > 0.5  # noise on the market features (not on a constant one)
    assert (rows.actions != ds.actions[rows.sources]).any()  # some labels changed with them
    again = teacher_rows(ds, sources, 3000, noise=0.3, seed=4, teacher=strategy)
    np.testing.assert_array_equal(again.states, rows.states)


def test_the_trainer_adds_teacher_rows_dated_before_the_validation_period(
    dataset: tuple[OfflineDataset, Path], tmp_path: Path
) -> None:
    ds, path = dataset
    cfg = TrainingConfig(
        dataset_path=str(path),
        output_dir=str(tmp_path / "run"),
        max_epochs=1,
        teacher_rows=700,
        teacher_strategy=str(BASELINE),
        progress=False,
    )
    split = split_rows(ds.dates, cfg.val_fraction, cfg.split, cfg.seed)
    merged, extra = with_teacher_rows(ds, split.train, cfg)
    assert extra is not None
    assert len(extra) == 700
    assert len(merged) == split.train.size + 700
    assert split.val_start is not None
    assert (extra.dates < split.val_start).all()
    np.testing.assert_array_equal(merged.actions[split.train.size :], extra.actions)
    log = io.StringIO()
    metrics = BehaviorCloningTrainer(cfg, out=log).train(export=False)
    assert metrics.teacher_rows == 700
    assert metrics.train_size == split.train.size
    assert "Teacher rows: 700 perturbed train states labelled by" in log.getvalue()
    off = BehaviorCloningTrainer(cfg.replace(teacher_rows=0), out=io.StringIO())
    assert off.train(export=False).teacher_rows == 0


def test_a_strategy_that_is_not_the_datasets_teacher_is_refused(
    dataset: tuple[OfflineDataset, Path], tmp_path: Path
) -> None:
    ds, path = dataset
    other = tmp_path / "other.yaml"
    text = BASELINE.read_text(encoding="utf-8")
    assert "min_score: 0.5 " in text
    other.write_text(text.replace("min_score: 0.5 ", "min_score: 0.9 "), encoding="utf-8")
    cfg = TrainingConfig(
        dataset_path=str(path), output_dir=str(tmp_path), teacher_rows=10,
        teacher_strategy=str(other),
    )  # fmt: skip
    split = split_rows(ds.dates, cfg.val_fraction, cfg.split, cfg.seed)
    with pytest.raises(TrainingError, match=r"teacher_strategy .*other.yaml labels \d+ of the"):
        with_teacher_rows(ds, split.train, cfg)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"teacher_rows": -1}, "teacher_rows: got -1; expected an integer >= 0"),
        ({"teacher_noise": -0.5}, "teacher_noise: got -0.5; expected a finite number >= 0"),
        ({"teacher_strategy": ""}, "teacher_strategy: got ''"),
    ],
)
def test_teacher_options_are_validated(change: dict[str, object], message: str) -> None:
    cfg = TrainingConfig(dataset_path="x.npz")
    assert (cfg.teacher_rows, cfg.teacher_noise) == (0, 0.3)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        dataclasses.replace(cfg, **change)


def test_the_error_breakdown_puts_each_error_in_its_groups(
    dataset: tuple[OfflineDataset, Path],
) -> None:
    ds, _ = dataset
    strategy = load_strategy(BASELINE).with_rl(False)
    perfect = error_breakdown(ds.states, ds.actions, ds.actions, strategy)
    assert (perfect.rows, perfect.errors) == (len(ds), 0)
    assert all(g.errors == 0 for g in perfect.groups)
    share = vote_share(teacher_decisions(strategy, ds.states))
    near = np.abs(share - 0.5) <= 0.05
    # plant errors: every BUY row predicted HOLD, and every near-threshold HOLD predicted SELL
    predicted = ds.actions.copy()
    predicted[ds.actions == 1] = 0
    planted_near = near & (ds.actions == 0)
    predicted[planted_near] = 2
    out = error_breakdown(ds.states, ds.actions, predicted, strategy)
    wrong = predicted != ds.actions
    assert out.errors == int(wrong.sum()) > 0
    by = {(g.kind, g.name): g for g in out.groups}
    assert by["class", "BUY"].errors == by["class", "BUY"].rows == int((ds.actions == 1).sum())
    assert by["class", "SELL"].errors == 0
    assert by["class", "HOLD"].errors == int(planted_near.sum())
    assert by["vote", "near"].rows == int(near.sum())
    assert by["vote", "near"].errors == int((wrong & near).sum())
    for kind in ("class", "regime", "vote", "tech"):
        groups = [g for g in out.groups if g.kind == kind]
        assert sum(g.rows for g in groups) == len(ds)
        assert sum(g.errors for g in groups) == out.errors
        assert sum(g.error_share for g in groups) == pytest.approx(1.0)
    assert "| class: BUY |" in out.markdown()
    assert out.to_dict()["groups"][0]["kind"] == "class"
    with pytest.raises(ValueError, match="expected \\(N, 34\\), \\(N,\\) and \\(N,\\)"):
        error_breakdown(ds.states, ds.actions[:-1], ds.actions, strategy)
