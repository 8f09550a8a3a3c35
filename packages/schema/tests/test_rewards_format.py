"""Dataset format version 3: the optional per-row rewards round trip (with and without labels);
version 1 and 2 files still load; inconsistent files are refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import otonom_schema as s
from otonom_schema.testing import random_history


def _dataset(n: int = 12) -> s.OfflineDataset:
    h = random_history(n, seed=3, symbol="DEMO")
    return s.OfflineDataset(
        states=s.compute_states(h),
        actions=np.arange(n) % 3,
        strengths=np.full(n, 0.5, np.float32),
        symbols=np.full(n, "DEMO"),
        dates=h.dates,
        metadata={"source": "unit-test"},
    )


def _with(ds: s.OfflineDataset, **kw: object) -> s.OfflineDataset:
    args: dict[str, object] = {"metadata": ds.metadata, "labels": ds.labels, **kw}
    return s.OfflineDataset(ds.states, ds.actions, ds.strengths, ds.symbols, ds.dates, **args)  # type: ignore[arg-type]


def test_rewards_round_trip_as_version_3_and_plain_files_stay_version_1(tmp_path: Path) -> None:
    plain = _dataset()
    assert plain.metadata["format_version"] == 1
    assert "rewards" not in plain.metadata
    rewards = np.linspace(-0.01, 0.01, len(plain)).astype(np.float32)
    rewards[-1] = np.nan
    ds = _with(plain, metadata={**plain.metadata, "rewards": {"definition": "d"}}, rewards=rewards)
    assert ds.metadata["format_version"] == 3
    assert ds.metadata["rewards"] == {"definition": "d", "rows": len(plain) - 1}
    back = s.load_dataset(s.save_dataset(ds, tmp_path / "r.npz"))
    assert back.rewards is not None
    assert back.labels is None
    np.testing.assert_array_equal(back.rewards, rewards)
    close, rows = np.linspace(100, 120, len(plain)), np.arange(len(plain))
    labels = s.ForwardLabels.make(2, *s.forward_labels(close, plain.dates, rows, horizon=2))
    both = _with(ds, labels=labels, rewards=ds.rewards)
    both = s.load_dataset(s.save_dataset(both, tmp_path / "b.npz"))
    assert both.metadata["format_version"] == 3
    assert both.labels is not None
    assert both.labels.horizon == 2
    assert both.rewards is not None
    again = s.load_dataset(s.save_dataset(plain, tmp_path / "p.npz"))
    assert again.rewards is None
    assert again.metadata["format_version"] == 1


def test_inconsistent_reward_files_are_refused(tmp_path: Path) -> None:
    ds = _with(_dataset(), rewards=np.zeros(12, np.float32))
    with pytest.raises(s.SchemaError, match=r"rewards: got shape \(3,\)"):
        _with(ds, rewards=np.zeros(3, np.float32))
    path = s.save_dataset(ds, tmp_path / "a.npz")
    with np.load(path) as raw:
        arrays = {k: raw[k] for k in raw.files}
    meta = json.loads(str(arrays["metadata"]))
    meta["format_version"] = 1
    np.savez(path, **{**arrays, "metadata": np.array(json.dumps(meta))})
    with pytest.raises(s.DatasetError, match="format version 1 holds a rewards array"):
        s.load_dataset(path)
    path = s.save_dataset(ds, tmp_path / "b.npz")
    with np.load(path) as raw:
        arrays = {k: raw[k] for k in raw.files if k != "rewards"}
    np.savez(path, **arrays)
    with pytest.raises(s.DatasetError, match="lacks the rewards array"):
        s.load_dataset(path)
