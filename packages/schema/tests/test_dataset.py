"""The .npz dataset format: round trip, schema mismatch, truncated and foreign files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import otonom_schema as s
from otonom_schema.testing import random_history


def make_dataset(n: int = 50, **meta: object) -> s.OfflineDataset:
    h = random_history(n, seed=4, symbol="DEMO")
    rng = np.random.default_rng(0)
    return s.OfflineDataset(
        states=s.compute_states(h),
        actions=rng.integers(0, 3, n),
        strengths=rng.uniform(0, 1, n).astype(np.float32),
        symbols=np.full(n, "DEMO"),
        dates=h.dates,
        metadata={"source": "unit-test", **meta},
    )


def test_round_trip(tmp_path: Path) -> None:
    ds = make_dataset(run_id=7)
    out = s.save_dataset(ds, tmp_path / "sub" / "offline.npz")
    assert out == tmp_path / "sub" / "offline.npz"
    back = s.load_dataset(out)
    for name in ("states", "actions", "strengths", "symbols", "dates"):
        np.testing.assert_array_equal(getattr(back, name), getattr(ds, name))
    assert back.states.dtype == np.float32
    assert back.actions.dtype == np.int64
    assert back.strengths.dtype == np.float32
    assert back.dates.dtype == np.dtype("datetime64[D]")
    assert back.metadata == ds.metadata
    assert back.metadata["schema_fingerprint"] == s.schema_fingerprint()
    assert back.metadata["schema_version"] == s.SCHEMA_VERSION
    assert back.metadata["feature_names"] == list(s.FEATURE_NAMES)
    assert back.metadata["source"] == "unit-test"
    assert back.metadata["run_id"] == 7
    assert "created_at" in back.metadata
    # a plain numpy reader needs no pickle
    with np.load(out, allow_pickle=False) as raw:
        assert raw["states"].shape == (50, 34)
        assert json.loads(str(raw["metadata"]))["format"] == "otonom-rl/offline-dataset"


def test_summary_matches_the_guide_layout() -> None:
    ds = s.OfflineDataset(
        states=np.tile(s.compute_states(random_history(1)), (4, 1)),
        actions=np.array([0, 0, 1, 2]),
        strengths=np.array([0, 0, 0.5, 0.7], dtype=np.float32),
        symbols=np.full(4, "X"),
        dates=np.datetime64("2020-01-01") + np.arange(4),
    )
    assert ds.summary() == (
        "Action distribution:\n  HOLD: 2 (50.0%)\n  BUY: 1 (25.0%)\n  SELL: 1 (25.0%)"
    )
    assert ds.action_counts() == {s.Action.HOLD: 2, s.Action.BUY: 1, s.Action.SELL: 1}


def _rewrite(path: Path, **changes: object) -> None:
    with np.load(path, allow_pickle=False) as raw:
        arrays = {k: raw[k] for k in raw.files}
    meta = json.loads(str(arrays["metadata"]))
    meta.update(changes)
    arrays["metadata"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)


def test_fingerprint_mismatch_names_both_versions(tmp_path: Path) -> None:
    path = s.save_dataset(make_dataset(), tmp_path / "d.npz")
    _rewrite(path, schema_version="0.9.0", schema_fingerprint="deadbeefdeadbeef")
    with pytest.raises(s.SchemaMismatchError) as err:
        s.load_dataset(path)
    text = str(err.value)
    assert "0.9.0" in text
    assert "deadbeefdeadbeef" in text
    assert s.SCHEMA_VERSION in text
    assert s.schema_fingerprint() in text
    assert "Regenerate" in text
    assert len(s.load_dataset(path, check_schema=False)) == 50


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no dataset file at"):
        s.load_dataset(tmp_path / "nope.npz")


def test_truncated_file(tmp_path: Path) -> None:
    path = s.save_dataset(make_dataset(500), tmp_path / "d.npz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(s.DatasetError, match=r"cannot be read as a \.npz dataset"):
        s.load_dataset(path)


def test_not_a_numpy_file(tmp_path: Path) -> None:
    """A CSV renamed .npz: named as such, never numpy's advice to load it as a pickle."""
    path = tmp_path / "d.npz"
    path.write_text("date,open\n2020-01-01,1\n")
    with pytest.raises(s.DatasetError) as info:
        s.load_dataset(path)
    assert str(info.value) == (
        f"{path} is not an otonom dataset (.npz) file: it starts with the text 'date,open'; "
        "expected the numpy .npz archive (a zip file) that save_dataset and `otonom-train "
        "dataset` write"
    )


@pytest.mark.parametrize(
    ("content", "found"),
    [
        (b"", "it is empty"),
        (b"\x93NUMPY\x01\x00", "it is a single-array .npy file"),
        (b"\xff\xfe\x00\x01binary", "it starts with the bytes"),
    ],
)
def test_other_files_are_named(tmp_path: Path, content: bytes, found: str) -> None:
    path = tmp_path / "d.npz"
    path.write_bytes(content)
    with pytest.raises(s.DatasetError, match=f"is not an otonom dataset \\(.npz\\) file: {found}"):
        s.load_dataset(path)


def test_pickled_arrays_are_refused_without_pickle_advice(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    names = ("states", "actions", "strengths", "symbols", "dates", "metadata")
    np.savez(path, **{name: np.array([{"x": 1}], dtype=object) for name in names})
    with pytest.raises(s.DatasetError) as info:
        s.load_dataset(path)
    assert "pickled (object) arrays, which an otonom dataset never has" in str(info.value)
    assert "allow_pickle" not in str(info.value)


def test_foreign_npz(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros(3), y=np.ones(3))
    with pytest.raises(s.DatasetError, match=r"missing arrays \['states'.*found \['x', 'y'\]"):
        s.load_dataset(path)


def test_foreign_format_and_bad_metadata(tmp_path: Path) -> None:
    path = s.save_dataset(make_dataset(), tmp_path / "d.npz")
    _rewrite(path, format="someone-else")
    with pytest.raises(s.DatasetError, match="format is 'someone-else'"):
        s.load_dataset(path)
    _rewrite(path, format="otonom-rl/offline-dataset", format_version=99)
    with pytest.raises(s.DatasetError, match="format version 99"):
        s.load_dataset(path)
    with np.load(path, allow_pickle=False) as raw:
        arrays = {k: raw[k] for k in raw.files}
    arrays["metadata"] = np.array("{not json")
    np.savez(path, **arrays)
    with pytest.raises(s.DatasetError, match="metadata entry is not a JSON object"):
        s.load_dataset(path)


def test_inconsistent_arrays_in_file(tmp_path: Path) -> None:
    path = s.save_dataset(make_dataset(), tmp_path / "d.npz")
    with np.load(path, allow_pickle=False) as raw:
        arrays = {k: raw[k] for k in raw.files}
    arrays["actions"] = arrays["actions"][:-1]
    np.savez(path, **arrays)
    with pytest.raises(s.DatasetError, match=r"d.npz: actions has shape \(49,\); expected \(50,\)"):
        s.load_dataset(path)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("actions", np.full(50, 3), r"actions at row 0 is 3; expected 0 \(HOLD\)"),
        ("actions", np.full(50, 0.5), "actions have dtype float64; expected integers"),
        ("strengths", np.full(50, 1.5), r"strengths at row 0 is 1.5; expected a value in \[0, 1\]"),
        ("states", np.full((50, 34), np.nan), r"row 0: feature 'ret_lag19' .* is nan"),
    ],
)
def test_invalid_dataset_contents(field: str, value: np.ndarray, message: str) -> None:
    ds = make_dataset()
    kwargs = {k: getattr(ds, k) for k in ("states", "actions", "strengths", "symbols", "dates")}
    kwargs[field] = value
    with pytest.raises(s.SchemaError, match=message):
        s.OfflineDataset(**kwargs)


def test_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    ds = make_dataset()
    bad = s.OfflineDataset(
        states=ds.states,
        actions=ds.actions,
        strengths=ds.strengths,
        symbols=ds.symbols,
        dates=ds.dates,
        metadata={"source": "x", "not_json": float("nan")},
    )
    with pytest.raises(ValueError, match="Out of range float values"):
        s.save_dataset(bad, tmp_path / "d.npz")
    assert list(tmp_path.iterdir()) == []


def test_require_schema_is_the_one_rule_for_artefacts() -> None:
    s.require_schema("x.npz", s.schema_fingerprint(), s.SCHEMA_VERSION, "unused")  # installed
    with pytest.raises(s.SchemaMismatchError) as err:
        s.require_schema("model.pt", "0123456789abcdef", "0.1.0", "Do this next.")
    assert str(err.value) == (
        "model.pt was made under state schema 0.1.0 (fingerprint 0123456789abcdef); the "
        f"installed schema is {s.SCHEMA_VERSION} (fingerprint {s.schema_fingerprint()}). "
        "Do this next."
    )
    with pytest.raises(s.SchemaMismatchError):  # a missing fingerprint is another schema
        s.require_schema("old.npz", None, None, "Regenerate.")
