"""Bad states, property-based: every kind is refused by ``RlState.from_array`` (hence every
single-state predict) and by ``validate_states`` (every batch predict, ``compute_states``) with
a ``SchemaError`` naming the feature (or the shape, dtype or mask); the states
``compute_states`` makes from random histories and portfolios all pass.

Derandomized hypothesis runs (fixed examples, no deadline) so CI sees the same cases each time.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import otonom_schema as s
from otonom_schema.testing import random_history, random_sentiment

EXAMPLES = 300  # per property below; docs/reliability.md gives the totals
STABLE = settings(max_examples=EXAMPLES, deadline=None, derandomize=True)
N = s.STATE_DIM
LOW = np.array([f.low for f in s.FEATURES])
HIGH = np.array([f.high for f in s.FEATURES])
REGIME = [s.feature_index(n) for n in ("regime_low_vol", "regime_normal", "regime_high_vol")]
DTYPES = [np.float32, np.float64]
BLOCK = 64  # rows per block of validate_states' float32 range check

F64 = npt.NDArray[np.float64]


@st.composite
def valid_states(draw: st.DrawFn) -> F64:
    """A state with every feature inside its range (ends included) and a one-hot regime."""
    unit = draw(st.lists(st.floats(0.0, 1.0), min_size=N, max_size=N))
    v: F64 = LOW + np.array(unit) * (HIGH - LOW)
    v[REGIME] = 0.0
    v[REGIME[draw(st.integers(0, 2))]] = 1.0
    return v


def _refused(bad: object, pattern: str) -> None:
    """The three entry points refuse ``bad`` as one state with a message matching ``pattern``
    (``validate_state_into``: the fast path of ``RlPolicy.predict`` with an array)."""
    with pytest.raises(s.SchemaError, match=pattern):
        s.RlState.from_array(bad)
    with pytest.raises(s.SchemaError, match=pattern):
        s.validate_state_array(bad)
    with pytest.raises(s.SchemaError, match=pattern):
        s.validate_state_into(bad, np.zeros(N, dtype=np.float32))


def _refused_in_batch(state: F64, dtype: type, row: int, size: int, pattern: str) -> None:
    """``state`` as row ``row`` of a batch of ``size`` valid rows is refused naming the row;
    and in a batch of ``2 * BLOCK + size`` rows at ``row`` and at ``2 * BLOCK + row`` (the
    float32 range check reduces whole blocks of 64 rows, then the rows after the last block)."""
    for rows, at in ((size, row), (2 * BLOCK + size, row), (2 * BLOCK + size, 2 * BLOCK + row)):
        batch: npt.NDArray[np.floating] = np.tile(_plain_valid(), (rows, 1)).astype(dtype)
        batch[at] = state
        with pytest.raises(s.SchemaError, match=rf"^row {at}: {pattern}"):
            s.validate_states(batch)


def _plain_valid() -> F64:
    v: F64 = (LOW + HIGH) / 2
    v[REGIME] = (0.0, 1.0, 0.0)
    return v


def _name(i: int) -> str:
    return re.escape(repr(s.FEATURE_NAMES[i]))


@given(
    valid_states(),
    st.integers(0, N - 1),
    st.sampled_from([np.nan, np.inf, -np.inf]),
    st.sampled_from(DTYPES),
    st.integers(0, 7),
)
@STABLE
def test_non_finite_anywhere_is_refused_naming_the_feature(
    state: F64, i: int, bad: float, dtype: type, row: int
) -> None:
    state[i] = bad
    pattern = rf"feature {_name(i)} \(index {i}\) is (nan|inf|-inf); expected a finite number"
    _refused(state.astype(dtype), pattern)
    _refused_in_batch(state, dtype, row, 8, pattern)


@given(
    valid_states(),
    st.integers(0, N - 1),
    st.floats(1e-4, 1e12),
    st.booleans(),
    st.sampled_from(DTYPES),
    st.integers(0, 7),
)
@STABLE
def test_out_of_range_per_feature_is_refused_naming_it(
    state: F64, i: int, beyond: float, above: bool, dtype: type, row: int
) -> None:
    state[i] = HIGH[i] + beyond if above else LOW[i] - beyond
    pattern = rf"feature {_name(i)} \(index {i}\) = .* is outside its range"
    _refused(state.astype(dtype), pattern)
    _refused_in_batch(state, dtype, row, 8, pattern)


def _one_hot(values: tuple[float, float, float]) -> bool:
    return sorted(values) == [0.0, 0.0, 1.0]


@given(
    valid_states(),
    st.tuples(*[st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.0)] * 3).filter(
        lambda t: not _one_hot(t)
    ),
    st.sampled_from(DTYPES),
    st.integers(0, 7),
)
@STABLE
def test_a_regime_that_is_not_exactly_one_hot_is_refused(
    state: F64, regime: tuple[float, float, float], dtype: type, row: int
) -> None:
    state[REGIME] = regime
    if _one_hot(tuple(state[REGIME].astype(dtype).tolist())):
        return  # a value so close to 0 or 1 that this dtype rounds it there: a valid state
    pattern = (
        r"regime one-hot \(regime_low_vol, regime_normal, regime_high_vol\) = .* is not one-hot"
    )
    _refused(state.astype(dtype), pattern)
    _refused_in_batch(state, dtype, row, 8, pattern)


@given(
    valid_states(),
    st.lists(st.booleans(), min_size=N, max_size=N),
    st.sampled_from([None, np.nan, 1e6, -np.inf]),
    st.integers(0, N - 1),
    st.sampled_from(["array", "batch", "list", "scalar field"]),
)
@STABLE
def test_masked_arrays_are_refused_whatever_they_hide(
    state: F64, mask: list[bool], hidden: float | None, i: int, how: str
) -> None:
    """Masked values used to slip through (a masked NaN or rsi 1e6 reached the model); a masked
    array is refused even when nothing is masked: the caller must unmask explicitly."""
    if hidden is not None:
        state[i] = hidden
        mask[i] = True
    masked = np.ma.array(state, mask=mask)
    pattern = "masked array"
    if how == "array":
        _refused(masked, pattern)
    elif how == "batch":
        with pytest.raises(s.SchemaError, match=pattern):
            s.validate_states(np.ma.vstack([masked, masked]))
        with pytest.raises(s.SchemaError, match=pattern):
            s.validate_states([masked, np.ma.array(state)])
    elif how == "list":
        values: list[object] = state.tolist()
        values[i] = np.ma.masked
        _refused(values, pattern)
    else:
        fields = s.RlState.from_array(_plain_valid()).to_dict()
        with pytest.raises(s.SchemaError, match=pattern):
            s.RlState(
                returns=np.ma.array([fields[f"ret_lag{k}"] for k in range(19, -1, -1)]),  # type: ignore[arg-type]
                rsi=fields["rsi"],
                macd_signal=fields["macd_signal"],
                bb_width=fields["bb_width"],
                volume_ratio=fields["volume_ratio"],
                position=fields["position"],
                leverage=fields["leverage"],
                cash_fraction=fields["cash_fraction"],
                days_since_last_trade=fields["days_since_last_trade"],
                regime=(0.0, 1.0, 0.0),
                dsi=fields["dsi"],
                news_sentiment=fields["news_sentiment"],
                macro_sentiment=np.ma.masked,  # type: ignore[arg-type]
            )


@given(
    st.one_of(
        st.tuples(st.integers(0, 80).filter(lambda n: n != N)),
        st.tuples(st.integers(0, 4), st.integers(0, 80)),
        st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 40)),
        st.just(()),
    )
)
@STABLE
def test_wrong_shapes_are_refused(shape: tuple[int, ...]) -> None:
    arr = np.zeros(shape)
    if shape != (N,):
        _refused(arr, r"shape \(")
    if len(shape) != 2 or shape[1] != N:
        with pytest.raises(s.SchemaError, match=r"states have shape .*; expected \(N, 34\)"):
            s.validate_states(arr)


@given(
    valid_states(),
    st.sampled_from(["object", "str", "bytes", "complex", "datetime", "matrix", "recarray"]),
)
@STABLE
def test_object_and_other_dtypes_and_subclasses_are_refused(state: F64, kind: str) -> None:
    """Object arrays are refused even when they hold valid floats; so are ndarray subclasses."""
    single: object
    batch: object
    if kind == "object":
        single, batch = state.astype(object), np.stack([state, state]).astype(object)
        pattern = "dtype object"
    elif kind in ("str", "bytes"):
        single = state.astype(str if kind == "str" else bytes)
        batch = np.stack([single, single])
        pattern = "cannot be cast to float32"
    elif kind == "complex":
        single, batch = state.astype(complex), np.stack([state, state]).astype(complex)
        pattern = "dtype complex128"
    elif kind == "datetime":
        single = np.zeros(N, dtype="datetime64[D]")
        batch = np.zeros((2, N), dtype="datetime64[D]")
        pattern = "dtype datetime64"
    elif kind == "matrix":
        with warnings.catch_warnings():  # numpy discourages np.matrix (why it is refused)
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            single, batch = np.asmatrix(state), np.asmatrix(np.stack([state, state]))
        pattern = "numpy.matrix .*ndarray subclass"
    else:
        single = state.view(np.recarray)
        batch = np.stack([state, state]).view(np.recarray)
        pattern = "recarray .*ndarray subclass"
    _refused(single, pattern)
    with pytest.raises(s.SchemaError, match=pattern):
        s.validate_states(batch)


@given(valid_states(), st.sampled_from(DTYPES), st.sampled_from(["array", "list", "tuple"]))
@STABLE
def test_valid_states_pass_as_arrays_lists_and_tuples(state: F64, dtype: type, how: str) -> None:
    arr: npt.NDArray[np.floating] = state.astype(dtype)
    values: object = {"array": arr, "list": arr.tolist(), "tuple": tuple(arr.tolist())}[how]
    np.testing.assert_array_equal(s.RlState.from_array(values).to_array(), arr.astype(np.float32))
    assert s.validate_states(np.stack([arr, arr])).shape == (2, N)
    assert s.validate_states(np.tile(arr, (2 * BLOCK + 3, 1))).shape == (2 * BLOCK + 3, N)
    out = np.full(N, np.nan, dtype=np.float32)
    s.validate_state_into(values, out)
    np.testing.assert_array_equal(out, arr.astype(np.float32))


@given(
    st.integers(0, 2**31 - 1),
    st.integers(1, 400),
    st.floats(0.001, 0.2),
    st.integers(0, 40),
    st.booleans(),
)
@settings(max_examples=60, deadline=None, derandomize=True)
def test_every_state_compute_states_makes_is_valid(
    seed: int, n: int, vol: float, gap_every: int, sentiment: bool
) -> None:
    history = random_history(n, seed=seed, vol=vol, gap_every=gap_every)
    rng = np.random.default_rng(seed)
    portfolio = s.portfolio_feature_matrix(
        rng.uniform(-1, 1, n), rng.uniform(0, 4, n), rng.uniform(0, 1, n), rng.exponential(20, n)
    )
    news = random_sentiment(history.dates, seed=seed) if sentiment else None
    macro = random_sentiment(history.dates, seed=seed + 1) if sentiment else None
    states = s.compute_states(history, portfolio, news=news, macro=macro)
    assert states.shape == (n, N)
    s.validate_states(states)
    for row in states[:: max(1, n // 10)]:  # the single-state path too
        assert s.RlState.from_array(row).to_array().tolist() == row.tolist()
    regime = states[:, REGIME]
    assert ((regime == 0) | (regime == 1)).all()
    assert (regime.sum(axis=1) == 1).all()


@pytest.mark.parametrize(
    "regime",
    [
        (0.5, 2.0**-126, 0.0),  # float32 words 0x3f000000 + 0x00800000: 1.0's word
        (0.0, 2.0**-126, 0.5),
        (0.75, 0.0, 2.0**-127),  # 0x3f400000 + 0x00400000 (a subnormal)
    ],
)
def test_a_regime_whose_float32_words_sum_to_one_is_refused(
    regime: tuple[float, float, float],
) -> None:
    """The batch fast path reads the float32 regime as uint32 words: three words that only add
    up to 1.0's word (and are each smaller) are still refused, one state or in a batch."""
    state = _plain_valid()
    state[REGIME] = regime
    words = np.array(regime, dtype=np.float32).view(np.uint32)
    assert int(words.sum()) == int(np.float32(1.0).view(np.uint32))  # the case is what it says
    pattern = r"regime one-hot .* is not one-hot"
    _refused(state.astype(np.float32), pattern)
    _refused_in_batch(state, np.float32, 3, 8, pattern)
