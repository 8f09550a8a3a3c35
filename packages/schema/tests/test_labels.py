"""Forward labels: the maths against hand computations, the terciles, the dataset format's
version 2 (labels round trip; version 1 files still load; inconsistent files refused)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import otonom_schema as s
from otonom_schema.testing import random_history

CLOSE = np.array([100.0, 101.0, 99.0, 102.0, 104.0, 103.0, 105.0])
DATES = np.datetime64("2021-03-01") + np.arange(7)


def test_forward_return_and_volatility_equal_a_hand_computation() -> None:
    returns, vol, ends = s.forward_labels(CLOSE, DATES, [0, 2, 4, 5], horizon=2)
    # row on bar 0: log(99 / 100); one-bar log returns log(101/100), log(99/101)
    assert returns[0] == pytest.approx(math.log(99.0 / 100.0), rel=1e-6)
    hand = math.sqrt((math.log(101 / 100) ** 2 + math.log(99 / 101) ** 2) / 2)
    assert vol[0] == pytest.approx(hand, rel=1e-6)
    assert ends[0] == np.datetime64("2021-03-03")
    # bar 2 -> bar 4
    assert returns[1] == pytest.approx(math.log(104.0 / 99.0), rel=1e-6)
    hand = math.sqrt((math.log(102 / 99) ** 2 + math.log(104 / 102) ** 2) / 2)
    assert vol[1] == pytest.approx(hand, rel=1e-6)
    # bar 4 -> bar 6, the last bar: labelled; bar 5 has one bar after it: no label
    assert returns[2] == pytest.approx(math.log(105.0 / 104.0), rel=1e-6)
    assert ends[2] == DATES[6]
    assert np.isnan([returns[3], vol[3]]).all()
    assert np.isnat(ends[3])
    assert returns.dtype == vol.dtype == np.dtype(np.float32)


def test_forward_labels_refuse_bad_inputs() -> None:
    with pytest.raises(s.SchemaError, match="horizon is 0; expected an integer >= 1"):
        s.forward_labels(CLOSE, DATES, [0], horizon=0)
    with pytest.raises(s.SchemaError, match=r"close at bar 1 .* is -1\.0; expected a price > 0"):
        s.forward_labels([1.0, -1.0], DATES[:2], [0], horizon=1)
    with pytest.raises(s.SchemaError, match=r"row bars 0 \.\. 9; expected indices of 7 bars"):
        s.forward_labels(CLOSE, DATES, [0, 9], horizon=1)


def test_terciles_cut_only_the_rows_given_and_levels_follow_the_cuts() -> None:
    vol = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, np.nan, 5.0, 6.0], dtype=np.float32)
    cut_on = np.array([True] * 7 + [False, False])  # the last two (e.g. validation) left out
    labels = s.ForwardLabels.make(2, np.where(np.isnan(vol), np.nan, 0.0), vol, _ends(vol), cut_on)
    q1, q2 = np.quantile(vol[:6].astype(np.float64), [1 / 3, 2 / 3])
    assert labels.cuts == pytest.approx((q1, q2))
    assert labels.cut_rows == 6
    assert labels.risk.tolist() == [0, 0, 1, 1, 2, 2, -1, 2, 2]
    assert s.risk_levels([q1, q2, q2 + 1e-9], (q1, q2)).tolist() == [0, 1, 2]
    with pytest.raises(s.SchemaError, match="no labelled row to cut risk terciles on"):
        s.tercile_cuts([np.nan])


def _ends(vol: np.ndarray) -> np.ndarray:
    ends = np.datetime64("2022-01-01") + np.arange(vol.size)
    return np.where(np.isnan(vol), np.datetime64("NaT"), ends).astype("datetime64[D]")


def _dataset(n: int = 40, labels: bool = True) -> s.OfflineDataset:
    h = random_history(n, seed=3, symbol="DEMO")
    rng = np.random.default_rng(1)
    fwd = None
    if labels:
        returns, vol, ends = s.forward_labels(h.close, h.dates, np.arange(n), horizon=5)
        fwd = s.ForwardLabels.make(5, returns, vol, ends)
    return s.OfflineDataset(
        states=s.compute_states(h),
        actions=rng.integers(0, 3, n),
        strengths=rng.uniform(0, 1, n).astype(np.float32),
        symbols=np.full(n, "DEMO"),
        dates=h.dates,
        metadata={"source": "unit-test"},
        labels=fwd,
    )


def test_labels_round_trip_as_format_version_2(tmp_path: Path) -> None:
    ds = _dataset()
    assert ds.labels is not None
    assert ds.metadata["format_version"] == 2
    assert ds.metadata["labels"]["horizon"] == 5
    assert ds.metadata["labels"]["unlabelled_rows"] == 5  # the last five rows: no 5 bars after
    back = s.load_dataset(s.save_dataset(ds, tmp_path / "d.npz"))
    assert back.labels is not None
    for name in ("returns", "volatility", "risk", "ends"):
        np.testing.assert_array_equal(getattr(back.labels, name), getattr(ds.labels, name))
    assert back.labels.cuts == ds.labels.cuts
    assert back.metadata == ds.metadata


def test_a_dataset_without_labels_is_written_as_version_1_and_old_files_load(
    tmp_path: Path,
) -> None:
    ds = _dataset(labels=False)
    path = s.save_dataset(ds, tmp_path / "d.npz")
    with np.load(path) as raw:
        assert sorted(raw.files) == sorted(
            ["states", "actions", "strengths", "symbols", "dates", "metadata"]
        )
        assert json.loads(str(raw["metadata"]))["format_version"] == 1
        assert "labels" not in json.loads(str(raw["metadata"]))
    assert s.load_dataset(path).labels is None
    # a labelled dataset's metadata re-used without its labels says version 1 again
    plain = s.OfflineDataset(
        ds.states, ds.actions, ds.strengths, ds.symbols, ds.dates, _dataset().metadata
    )
    assert plain.metadata["format_version"] == 1
    assert "labels" not in plain.metadata


def _rewrite(path: Path, drop: str | None = None, **meta: object) -> None:
    with np.load(path) as raw:
        arrays = {k: raw[k] for k in raw.files if k != drop}
    m = json.loads(str(arrays["metadata"]))
    m.update(meta)
    arrays["metadata"] = np.array(json.dumps(m))
    np.savez(path, **arrays)


def test_inconsistent_label_files_are_refused(tmp_path: Path) -> None:
    path = s.save_dataset(_dataset(), tmp_path / "a.npz")
    _rewrite(path, format_version=1)
    with pytest.raises(s.DatasetError, match="format version 1 holds label arrays"):
        s.load_dataset(path)
    path = s.save_dataset(_dataset(), tmp_path / "b.npz")
    _rewrite(path, drop="risk_levels")
    with pytest.raises(s.DatasetError, match=r"lacks \['risk_levels'\]"):
        s.load_dataset(path)
    path = s.save_dataset(_dataset(), tmp_path / "c.npz")
    with np.load(path) as raw:
        arrays = {k: raw[k] for k in raw.files}
    arrays["risk_levels"] = np.where(arrays["risk_levels"] == 0, 2, arrays["risk_levels"])
    np.savez(path, **arrays)
    with pytest.raises(s.DatasetError, match=r"c\.npz: labels: row .* has risk level 2"):
        s.load_dataset(path)
    path = s.save_dataset(_dataset(), tmp_path / "d.npz")
    _rewrite(path, format_version=4)
    with pytest.raises(s.DatasetError, match="format version 4; this otonom-schema reads versions"):
        s.load_dataset(path)


def test_labels_must_match_the_rows() -> None:
    ds = _dataset()
    assert ds.labels is not None
    with pytest.raises(s.SchemaError, match="expected ForwardLabels of 40 rows"):
        s.OfflineDataset(
            ds.states, ds.actions, ds.strengths, ds.symbols, ds.dates, labels=ds.labels.take([0])
        )
