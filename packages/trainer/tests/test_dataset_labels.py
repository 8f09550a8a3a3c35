"""Forward labels from the dataset generator (``generate_dataset(horizon=...)``, ``otonom-train
dataset --horizon``): read from the store's bars, equal to a hand computation, never past the
dataset's end date."""

from __future__ import annotations

import datetime as dt
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import otonom_schema as s
from otonom_runtime.backtest import run_backtest
from otonom_runtime.store import get_session, init_db, load_history
from otonom_runtime.strategy import load_strategy
from otonom_runtime.synth import write_synthetic
from otonom_trainer.dataset import generate_dataset
from otonom_trainer.labels import LabelError

ROOT = Path(__file__).resolve().parents[3]
A, B = "DEMO-AAA", "DEMO-BBB"
FIRST, LAST = dt.date(2021, 1, 1), dt.date(2021, 12, 31)
START, END = dt.date(2021, 4, 1), dt.date(2021, 9, 30)  # bars exist after END
H = 5


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{(tmp_path_factory.mktemp('labels') / 'otonom.db').as_posix()}"
    init_db(url)
    with get_session(url) as session:
        write_synthetic(session, [A, B], FIRST, LAST, 7)
    with get_session(url) as session:
        run_backtest(
            session, load_strategy(ROOT / "strategies/baseline_v1.yaml"), [A, B], START, LAST
        )
    return url


def test_labels_equal_a_hand_computation_from_the_stored_bars(url: str) -> None:
    with get_session(url) as session:
        ds = generate_dataset(session, [A, B], START, END, horizon=H)
        plain = generate_dataset(session, [A, B], START, END)
        bars = {n: load_history(session, n, start=START, end=LAST) for n in (A, B)}
    labels = ds.labels
    assert labels is not None
    assert labels.horizon == H
    assert plain.labels is None
    np.testing.assert_array_equal(ds.states, plain.states)  # the rows are the same
    for name in (A, B):
        close, dates = bars[name].close, list(bars[name].dates)
        for i in np.flatnonzero(ds.symbols == name)[[0, 17, 60]]:
            t = dates.index(ds.dates[i])
            assert labels.returns[i] == pytest.approx(math.log(close[t + H] / close[t]), rel=1e-5)
            one_bar = [math.log(close[t + k] / close[t + k - 1]) for k in range(1, H + 1)]
            hand = math.sqrt(sum(r * r for r in one_bar) / H)
            assert labels.volatility[i] == pytest.approx(hand, rel=1e-5)
            assert labels.ends[i] == dates[t + H]


def test_no_label_reads_a_bar_after_the_end_date(url: str) -> None:
    with get_session(url) as session:
        ds = generate_dataset(session, A, START, END, horizon=H)
    labels = ds.labels
    assert labels is not None
    assert ds.dates.max() == np.datetime64(END)
    assert labels.ends[labels.labelled].max() <= np.datetime64(END)
    # the last H rows have no H bars after them up to END (the store has more: not read)
    assert not labels.labelled[-H:].any()
    assert labels.labelled[:-H].all()
    assert labels.risk[-H:].tolist() == [-1] * H
    assert np.isnat(labels.ends[-H:]).all()
    # the dataset's own terciles: cut on its labelled rows
    assert labels.cuts == pytest.approx(s.tercile_cuts(labels.volatility))
    assert ds.metadata["labels"]["unlabelled_rows"] == H


def test_a_bad_horizon_is_refused(url: str) -> None:
    with get_session(url) as session:
        with pytest.raises(LabelError, match="horizon: got 0; expected an integer >= 1"):
            generate_dataset(session, A, START, END, horizon=0)
        with pytest.raises(LabelError, match="horizon 500: no row has 500 bars after it"):
            generate_dataset(session, A, START, END, horizon=500)


def test_the_cli_writes_a_labelled_dataset(url: str, tmp_path: Path) -> None:
    out = tmp_path / "ds.npz"
    done = subprocess.run(
        [sys.executable, "-m", "otonom_trainer", "dataset", "--symbol", A, "--start", "2021-04-01",
         "--end", "2021-09-30", "--horizon", "3", "--output", str(out), "--database-url", url],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    ds = s.load_dataset(out)
    assert ds.labels is not None
    assert ds.labels.horizon == 3
    assert ds.metadata["format_version"] == 2
    helped = subprocess.run(
        [sys.executable, "-m", "otonom_trainer", "dataset", "--help"],
        capture_output=True, text=True, cwd=ROOT, check=True,
    ).stdout  # fmt: skip
    assert "--horizon BARS" in helped
