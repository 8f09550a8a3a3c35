"""RlState: construction, array round trip, and every bad-input case."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import otonom_schema as s


def valid_vector(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lows = np.array([f.low for f in s.FEATURES])
    highs = np.array([f.high for f in s.FEATURES])
    v = lows + rng.uniform(size=34) * (highs - lows)
    v[28:31] = 0.0
    v[28 + seed % 3] = 1.0
    return v


def test_named_fields_match_the_array() -> None:
    v = valid_vector(1)
    state = s.RlState.from_array(v)
    arr = state.to_array()
    assert arr.dtype == np.float32
    assert arr.shape == (34,)
    np.testing.assert_array_equal(arr, v.astype(np.float32))
    assert state.returns[-1] == arr[s.feature_index("ret_lag0")]
    assert state.returns[0] == arr[s.feature_index("ret_lag19")]
    assert state.rsi == arr[s.feature_index("rsi")]
    assert state.regime == tuple(arr[28:31].tolist())
    assert state.macro_sentiment == arr[33]
    assert list(state.to_dict()) == list(s.FEATURE_NAMES)


def test_round_trip_is_exact_and_equal() -> None:
    state = s.RlState.from_array(valid_vector(2))
    again = s.RlState.from_array(state.to_array())
    assert again == state
    assert s.RlState.from_dict(state.to_dict()) == state
    assert state.validate() is state


def test_keyword_construction() -> None:
    state = s.RlState(
        returns=[0.0] * 20,
        rsi=0.5,
        macd_signal=0.1,
        bb_width=0.2,
        volume_ratio=-0.3,
        position=0.0,
        leverage=1.5,
        cash_fraction=0.5,
        days_since_last_trade=0.3,
        regime=(0, 1, 0),
        dsi=1.0,
        news_sentiment=0.2,
        macro_sentiment=-0.2,
    )
    assert state.returns == (0.0,) * 20
    assert state.regime == (0.0, 1.0, 0.0)
    assert state.leverage == 1.5
    assert state.rsi == 0.5


def test_to_array_copy_and_readonly_view() -> None:
    state = s.RlState.from_array(valid_vector(3))
    copy = state.to_array()
    copy[0] = 0.123
    assert state.to_array()[0] != np.float32(0.123)
    view = state.to_array(copy=False)
    assert not view.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        view[0] = 1.0


@given(st.integers(min_value=0, max_value=10_000))
@settings(max_examples=50, deadline=None)
def test_round_trip_property(seed: int) -> None:
    v = valid_vector(seed)
    state = s.RlState.from_array(v)
    np.testing.assert_array_equal(
        s.RlState.from_array(state.to_array()).to_array(), state.to_array()
    )


@pytest.mark.parametrize("length", [0, 33, 35])
def test_wrong_length(length: int) -> None:
    with pytest.raises(s.SchemaError, match=rf"shape \({length},\); expected \(34,\)"):
        s.RlState.from_array(np.zeros(length))


def test_wrong_rank() -> None:
    with pytest.raises(s.SchemaError, match=r"shape \(1, 34\)"):
        s.validate_state_array(np.zeros((1, 34)))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_names_the_feature(bad: float) -> None:
    v = valid_vector()
    v[s.feature_index("bb_width")] = bad
    with pytest.raises(s.SchemaError, match=r"'bb_width' \(index 22\) is (nan|inf|-inf)"):
        s.RlState.from_array(v)


def test_out_of_range_names_feature_value_and_range() -> None:
    v = valid_vector()
    v[s.feature_index("rsi")] = 1.5
    with pytest.raises(
        s.SchemaError, match=r"'rsi' \(index 20\) = 1\.5 is outside its range \[0\.0, 1\.0\]"
    ):
        s.RlState.from_array(v)


def test_range_tolerance() -> None:
    v = valid_vector()
    v[s.feature_index("rsi")] = 1.0 + s.RANGE_TOLERANCE / 2
    s.RlState.from_array(v)
    v[s.feature_index("rsi")] = 1.0 + s.RANGE_TOLERANCE * 10
    with pytest.raises(s.SchemaError, match="rsi"):
        s.RlState.from_array(v)


@pytest.mark.parametrize(
    "regime",
    [(0, 0, 0), (1, 1, 0), (1, 1, 1), (0.5, 0.2, 0.2), (0.5, 0.5, 0), (1 - 1e-6, 0, 1e-6)],
)
def test_regime_must_be_exactly_one_hot(regime: tuple[float, float, float]) -> None:
    """Each value exactly 0 or 1 and exactly one 1: [0.5, 0.5, 0] sums to 1 but is refused."""
    v = valid_vector()
    v[28:31] = regime
    with pytest.raises(s.SchemaError, match=r"regime one-hot .* is not one-hot"):
        s.RlState.from_array(v)
    with pytest.raises(s.SchemaError, match=r"row 0: regime one-hot .* is not one-hot"):
        s.validate_states(v[None, :])


def test_field_out_of_range_via_constructor() -> None:
    state = s.RlState.from_array(valid_vector())
    kwargs = {k: getattr(state, k) for k in state.__dataclass_fields__ if k != "_vector"}
    kwargs["position"] = -1.2
    with pytest.raises(s.SchemaError, match="'position'"):
        s.RlState(**kwargs)
    kwargs["position"] = 0.0
    kwargs["returns"] = (0.0,) * 19
    with pytest.raises(s.SchemaError, match=r"returns has shape \(19,\); expected \(20,\)"):
        s.RlState(**kwargs)


@pytest.mark.parametrize(
    "values",
    [np.array(["a"] * 34), np.zeros(34, dtype=complex), np.array([object()] * 34)],
    ids=["strings", "complex", "objects"],
)
def test_dtype_that_cannot_be_cast(values: np.ndarray) -> None:
    with pytest.raises(s.SchemaError, match="cannot be cast to float32"):
        s.RlState.from_array(values)


def test_castable_dtypes_are_accepted() -> None:
    v = np.zeros(34, dtype=np.int64)
    v[29] = 1
    v[s.feature_index("rsi")] = 1
    assert s.RlState.from_array(v).rsi == 1.0
    assert s.RlState.from_array(v.tolist()).regime == (0.0, 1.0, 0.0)
    assert s.RlState.from_array(v.astype(bool)).regime == (0.0, 1.0, 0.0)


def test_from_dict_names_missing_and_unknown() -> None:
    d = s.RlState.from_array(valid_vector()).to_dict()
    del d["dsi"]
    d["foo"] = 1.0
    with pytest.raises(
        s.SchemaError, match=r"missing features \['dsi'\], unknown features \['foo'\]"
    ):
        s.RlState.from_dict(d)


def test_batch_validation_names_the_row() -> None:
    batch = np.stack([valid_vector(i) for i in range(5)])
    out = s.validate_states(batch)
    assert out.dtype == np.float32
    assert out.flags.c_contiguous
    batch[3, s.feature_index("dsi")] = -0.5
    with pytest.raises(s.SchemaError, match=r"row 3: feature 'dsi' \(index 31\) = -0\.5"):
        s.validate_states(batch)
    with pytest.raises(s.SchemaError, match=r"shape \(5, 33\); expected \(N, 34\)"):
        s.validate_states(batch[:, :33])


def test_schema_error_is_a_value_error() -> None:
    assert issubclass(s.SchemaError, ValueError)
    assert issubclass(s.SchemaMismatchError, s.SchemaError)
    assert issubclass(s.DatasetError, s.SchemaError)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_columns_in_range_agrees_with_validate_states(dtype: type) -> None:
    """``columns_in_range`` on a state's portfolio columns accepts exactly what
    ``validate_states`` accepts when only those columns change (values inside, at the
    tolerance's edge, beyond it, NaN and inf), in the array's own dtype."""
    cols = s.PORTFOLIO_COLUMNS
    base = valid_vector(1)
    lows = np.array([f.low for f in s.FEATURES])[cols]
    highs = np.array([f.high for f in s.FEATURES])[cols]
    tol = s.RANGE_TOLERANCE
    candidates = [lows, highs, (lows + highs) / 2, lows - tol / 2, highs + tol / 2]
    candidates += [lows - 3 * tol, highs + 3 * tol, lows - 1.0]
    for bad in (math.nan, math.inf, -math.inf):
        v = (lows + highs) / 2
        v[2] = bad
        candidates.append(v)
    verdicts = []
    for values in candidates:
        states = np.tile(base, (3, 1)).astype(dtype)
        states[1, cols] = values
        try:
            s.validate_states(states)
            expected = True
        except s.SchemaError:
            expected = False
        assert s.columns_in_range(states[:, cols], cols) is expected, values
        verdicts.append(expected)
    assert True in verdicts  # both sides were tried
    assert False in verdicts


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_fast_batch_checks_agree_with_the_row_checks(dtype: type) -> None:
    """A C-contiguous float32 or float64 batch is judged by whole-array checks first; each
    batch gets the same result (the same float32 array, or the same error) as from the
    row-by-row checks (reached here through a Fortran-ordered copy), with one row changed in
    the 64-row blocks or in the tail: values at and beyond the bounds' tolerance, NaN, inf,
    regimes that are not one-hot, and -0.0 in a regime (accepted)."""
    cols = np.arange(s.STATE_DIM)
    lows = np.array([f.low for f in s.FEATURES])
    highs = np.array([f.high for f in s.FEATURES])
    tol = s.RANGE_TOLERANCE
    regime = slice(s.feature_index("regime_low_vol"), s.feature_index("regime_high_vol") + 1)
    changes: list[tuple[Any, Any]] = [(None, None)]
    for i in [*cols[::5].tolist(), s.STATE_DIM - 1]:
        for value in (lows[i], highs[i], lows[i] - tol / 2, highs[i] + tol / 2):
            changes.append((i, value))
        for value in (lows[i] - 3 * tol, highs[i] + 3 * tol, math.nan, math.inf, -math.inf):
            changes.append((i, value))
    for hot in [(-0.0, 1.0, 0.0), (1.0, 0.0, -0.0), (0.0, 0.0, 0.0), (1.0, 1.0, 0.0)]:
        changes.append((regime, hot))
    changes.append((regime, (0.5, 0.5, 0.0)))
    changes.append((regime, (2.0**-1, 2.0**-2, 2.0**-2)))
    verdicts = set()
    for row in (3, 66):
        for where, value in changes:
            batch = np.stack([valid_vector(i) for i in range(70)]).astype(dtype)
            if where is not None:
                batch[row, where] = value
            outcomes = []
            for arr in (batch, np.asfortranarray(batch)):
                try:
                    out = s.validate_states(arr)
                    outcomes.append((out.dtype, out.flags.c_contiguous, out.tobytes()))
                except s.SchemaError as exc:
                    outcomes.append(str(exc))
            assert outcomes[0] == outcomes[1], (row, where, value)
            verdicts.add(isinstance(outcomes[0], str))
    assert verdicts == {True, False}
    from otonom_schema import _state

    valid = np.stack([valid_vector(i) for i in range(70)]).astype(dtype)
    low, high, one, word = _state._FAST[np.dtype(dtype)]
    assert _state._in_range(valid, low, high)  # the fast checks do accept a valid batch
    assert _state._one_hot(valid, one, word)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_fast_checks_look_at_every_chunk_of_a_large_batch(
    dtype: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch longer than the fast checks' chunk (``_state._CHUNK`` rows; 128 here, so the
    row-by-row checks that name a bad row stay quick) is judged chunk by chunk: a valid one is
    accepted by the fast checks, and one bad value in any chunk (the first, a middle one, the
    short last one) is refused with its own row named."""
    from otonom_schema import _state

    monkeypatch.setattr(_state, "_CHUNK", 128)
    n = 2 * _state._CHUNK + 70
    base = np.stack([valid_vector(i) for i in range(70)]).astype(dtype)
    valid = np.ascontiguousarray(np.resize(base, (n, s.STATE_DIM)))
    assert _state._fast_valid(valid, _state._FAST[np.dtype(dtype)])
    assert s.validate_states(valid).tobytes() == valid.astype(np.float32).tobytes()
    regime = s.feature_index("regime_low_vol")
    for row in (5, _state._CHUNK + 1, 2 * _state._CHUNK + 66):
        for col, value in ((0, math.nan), (regime, 0.5)):
            bad = valid.copy()
            bad[row, col] = value
            assert not _state._fast_valid(bad, _state._FAST[np.dtype(dtype)])
            with pytest.raises(s.SchemaError, match=rf"^row {row}: "):
                s.validate_states(bad)
