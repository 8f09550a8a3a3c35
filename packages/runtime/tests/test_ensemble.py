"""Analysts and the weighted vote: hand-made states, tie-breaking, the RL fallback."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest

import otonom_schema as s
from otonom_runtime.ensemble import (
    NewsAnalyst,
    RiskAnalyst,
    RlAnalyst,
    RlMode,
    Signal,
    Signals,
    TechAnalyst,
    add_votes,
    aggregate_signal_arrays,
    aggregate_signals,
    decide,
    decide_rows,
    rows_decider,
)
from otonom_runtime.policy import load_rl_policy
from otonom_runtime.testing.models import make_policy_model
from otonom_schema import Action
from otonom_schema.testing import random_history

IDX = s.feature_index
HOLD, BUY, SELL = Action.HOLD, Action.BUY, Action.SELL


def neutral(**features: float) -> np.ndarray:
    """A valid state: flat market, normal regime, full DSI, then the given features."""
    v = np.zeros(34, dtype=np.float32)
    v[IDX("rsi")] = 0.5
    v[IDX("cash_fraction")] = 1.0
    v[IDX("regime_normal")] = 1.0
    v[IDX("dsi")] = 1.0
    for name, value in features.items():
        v[IDX(name)] = value
    return s.validate_state_array(v)


def returns_state(log_returns: list[float], **features: float) -> np.ndarray:
    v = neutral(**features)
    k = len(log_returns)
    v[IDX("ret_lag0") - k + 1 : IDX("ret_lag0") + 1] = np.tanh(np.array(log_returns) / 0.05)
    return v


# --- the vote -------------------------------------------------------------------------------


def test_weighted_vote_and_strength_of_the_agreeing_analysts() -> None:
    out = aggregate_signals(
        [Signal(BUY, 0.8, 1.0), Signal(BUY, 0.4, 0.5), Signal(SELL, 1.0, 1.0)], [1.0, 2.0, 1.5]
    )
    # BUY: 1*1 + 2*0.5 = 2.0 votes, SELL: 1.5; strength = (1*0.8 + 1*0.4) / 2
    assert out.action == BUY
    assert out.strength == pytest.approx(0.6)
    assert out.confidence == pytest.approx(2.0 / 3.5)


def test_ties_and_dilution() -> None:
    # a BUY/SELL tie has no conviction: HOLD
    assert aggregate_signals([Signal(BUY, 1.0), Signal(SELL, 1.0)], [1.0, 1.0]).action == HOLD
    # a confident HOLD dilutes the winning side's share ...
    diluted = [Signal(BUY, 0.7, 1.0), Signal(HOLD, 0.0, 1.0)]
    held = aggregate_signals(diluted, [1.0, 2.0], min_score=0.5)
    assert (held.action, held.strength) == (HOLD, 0.0)
    assert held.confidence == pytest.approx(2.0 / 3.0)  # 1 - the BUY share
    assert aggregate_signals(diluted, [1.0, 2.0], min_score=0.3) == Signal(BUY, 0.7, 1.0 / 3.0)
    # ... an analyst with nothing to say (confidence 0) does not
    silent = [Signal(BUY, 0.7, 1.0), Signal(HOLD, 0.0, 0.0)]
    assert aggregate_signals(silent, [1.0, 2.0], min_score=0.5) == Signal(BUY, 0.7, 1.0)


def test_min_score_holds_on_a_split_vote() -> None:
    split = [Signal(BUY, 1.0), Signal(SELL, 1.0), Signal(HOLD, 0.0), Signal(BUY, 1.0)]
    assert aggregate_signals(split, [1, 1, 1, 1]).action == BUY  # 2 of 4
    held = aggregate_signals(split, [1, 1, 1, 1], min_score=0.6)
    assert held.action == HOLD
    assert held.strength == 0.0


def test_guide_call_shapes_and_abstention() -> None:
    # the guide passes the RL action as returned by policy.predict, or a bare Action
    assert aggregate_signals([Signal(SELL, 0.5), (BUY, 0.9), None], [1.0, 2.0, 5.0]) == Signal(
        BUY, 0.9, 2.0 / 3.0
    )
    assert aggregate_signals([BUY, None], [1.0, 1.0]).action == BUY
    with pytest.raises(ValueError, match="no analyst signals"):
        aggregate_signals([None, None], [1.0, 1.0])
    with pytest.raises(ValueError, match=r"expected \(2,\), one per analyst"):
        aggregate_signals([BUY, SELL], [1.0])
    with pytest.raises(ValueError, match="expected finite numbers >= 0"):
        aggregate_signals([BUY, SELL], [1.0, -1.0])
    with pytest.raises(ValueError, match=r"signal strength is 1.5; expected a number in \[0, 1\]"):
        Signal(BUY, 1.5)


def test_the_guides_call_form_signals_positional_weights_by_keyword() -> None:
    tech, news, risk = Signal(BUY, 0.8, 1.0), Signal(HOLD, 0.0, 0.0), Signal(SELL, 0.6, 0.5)
    as_list = aggregate_signals([tech, news, risk, BUY], [1.0, 1.0, 1.0, 1.0])
    # the guide's Step 4 verbatim: rl_action is the bare Action from policy.predict
    guide = aggregate_signals(tech, news, risk, BUY, weights=[1.0, 1.0, 1.0, 1.0])
    assert guide == as_list == Signal(BUY, 0.9, 2.0 / 2.5)
    assert aggregate_signals([tech, news, risk, BUY], weights=[1.0, 1.0, 1.0, 1.0]) == guide
    # (action, strength) from policy.predict(state) keeps the policy's strength ...
    pair = aggregate_signals(tech, news, risk, (BUY, 0.4), weights=[1.0, 1.0, 1.0, 1.0])
    assert pair.action == BUY
    assert (pair.strength, pair.confidence) == pytest.approx((0.6, 2.0 / 2.5))
    # ... (action, strength, probs) from predict(return_probs=True) votes with its top prob
    probs = np.array([0.2, 0.7, 0.1], dtype=np.float32)
    triple = aggregate_signals(tech, news, risk, (BUY, 0.4, probs), weights=[1, 1, 1, 1])
    assert triple.confidence == pytest.approx(1.7 / 2.2)
    assert triple.strength == pytest.approx((0.8 + 0.7 * 0.4) / 1.7)
    # the RL fallback (None) abstains; a single analyst works too
    assert aggregate_signals(tech, news, risk, None, weights=[1, 1, 1, 1]) == aggregate_signals(
        [tech, news, risk], [1, 1, 1]
    )
    assert aggregate_signals(SELL, weights=[2.0]) == Signal(SELL, 1.0, 1.0)
    assert aggregate_signals(tech, risk, weights=[1, 1], min_score=0.9).action == HOLD


def test_aggregate_signals_rejects_what_it_cannot_read() -> None:
    with pytest.raises(TypeError, match=r"and no weights; expected aggregate_signals\(tech"):
        aggregate_signals(Signal(BUY, 1.0), Signal(SELL, 1.0))
    with pytest.raises(TypeError, match="no weights"):
        aggregate_signals([BUY])
    with pytest.raises(ValueError, match=r"expected \(2,\), one per analyst"):
        aggregate_signals(BUY, SELL, weights=[1.0])
    with pytest.raises(ValueError, match="a signal tuple has 4 items"):
        aggregate_signals((BUY, 0.5, 0.1, 0.2), weights=[1.0])
    with pytest.raises(ValueError, match="a signal is a str; expected a Signal"):
        aggregate_signals("BUY", weights=[1.0])
    with pytest.raises(ValueError, match=r"signal strength is 1.5"):
        aggregate_signals((BUY, 1.5), weights=[1.0])


def test_scalar_and_array_votes_agree() -> None:
    rng = np.random.default_rng(0)
    n, k = 300, 4
    per_analyst = [
        Signals(rng.integers(0, 3, n), rng.uniform(0, 1, n), rng.uniform(0, 1, n)) for _ in range(k)
    ]
    weights = rng.uniform(0, 2, k)
    many = aggregate_signal_arrays(per_analyst, weights, min_score=0.4)
    for i in range(n):
        one = aggregate_signals([sig[i] for sig in per_analyst], weights, min_score=0.4)
        assert one == many[i]


# --- analysts -------------------------------------------------------------------------------


def test_tech_analyst_rules() -> None:
    tech = TechAnalyst()
    up = returns_state([0.02] * 10, macd_signal=0.3)
    down = returns_state([-0.02] * 10, macd_signal=-0.3)
    oversold = neutral(rsi=0.1)
    sig = tech.signals(np.stack([up, down, oversold, neutral()]))
    assert sig[0].action == BUY
    assert sig[1].action == SELL
    assert sig[2].action == HOLD  # RSI alone: 0.5 x (0.3-0.1)/0.3 / 2.5 = 0.13 < 0.30
    assert tech.score(oversold[None])[0] == pytest.approx(0.5 * (0.2 / 0.3) / 2.5, rel=1e-5)
    assert sig[3] == Signal(HOLD, 0.0, 1.0)
    assert sig[0].strength == pytest.approx(tech.score(up[None])[0])


def test_news_analyst() -> None:
    sig = NewsAnalyst().signals(
        np.stack(
            [
                neutral(news_sentiment=0.8, macro_sentiment=0.2, dsi=0.9),
                neutral(news_sentiment=-0.1),
            ]
        )
    )
    assert sig[0].action == BUY
    assert sig[0].strength == pytest.approx(0.56)
    assert sig[0].confidence == pytest.approx(0.9)
    assert sig[1].action == HOLD
    silent = NewsAnalyst().signals(neutral()[None])  # no sentiment known at all
    assert silent[0] == Signal(HOLD, 0.0, 0.0)


def test_risk_analyst_drawdown_and_regime() -> None:
    risk = RiskAnalyst(max_drawdown=0.15)
    crash = [0.05] * 5 + [-0.06] * 5  # peak after 5 bars, then -30 % in log terms
    calm = returns_state(crash)
    turbulent = returns_state(crash, regime_normal=0.0, regime_high_vol=1.0)
    fine = returns_state([0.01] * 10)
    dd = 1 - math.exp(-0.30)
    np.testing.assert_allclose(risk.drawdown(calm[None]), [dd], rtol=1e-4)
    sig = risk.signals(np.stack([calm, turbulent, fine]))
    assert sig[0].action == SELL
    assert sig[0].strength == pytest.approx(min(1.0, dd / 0.30), rel=1e-4)
    assert sig[1] == Signal(SELL, 1.0, 1.0)
    assert sig[2] == Signal(HOLD, 0.0, 0.5)
    np.testing.assert_array_equal(risk.exposure(np.stack([calm, turbulent])), [1.0, 0.5])


def test_analysts_on_real_states_give_valid_signals() -> None:
    states = s.compute_states(random_history(600, seed=4))
    for analyst in (TechAnalyst(), NewsAnalyst(), RiskAnalyst()):
        sig = analyst.signals(states)
        assert len(sig) == 600
        assert set(np.unique(sig.actions)) <= {0, 1, 2}
        assert ((sig.strengths >= 0) & (sig.strengths <= 1)).all()
        assert ((sig.confidences >= 0) & (sig.confidences <= 1)).all()
    tech = TechAnalyst().signals(states)
    assert {int(a) for a in np.unique(tech.actions)} == {0, 1, 2}


def _drawdown_cell_by_cell(states: np.ndarray, window: int) -> np.ndarray:
    """``RiskAnalyst.drawdown`` as it was written before the one-series decoding: every cell
    of the (N, window) returns decoded, ``np.cumsum`` and ``np.maximum.accumulate`` per row."""
    ret0 = s.feature_index("ret_lag0")
    path = np.cumsum(s.log_returns_from_features(states[:, ret0 - window + 1 : ret0 + 1]), axis=1)
    peak = np.maximum(np.maximum.accumulate(path, axis=1), 0.0)
    out: np.ndarray = 1.0 - np.exp(path[:, -1] - peak[:, -1])
    return out


@pytest.mark.parametrize("window", [2, 7, 20])
def test_drawdown_equals_the_cell_by_cell_form_bit_for_bit(window: int) -> None:
    """Consecutive days' states (one series decoded once), states in no order (every cell
    decoded), float32 states, NaN and signed zeros: the same bits as the old form."""
    risk = RiskAnalyst(drawdown_window=window)
    days = s.market_feature_matrix(random_history(400, seed=11))
    rng = np.random.default_rng(window)
    shuffled = days[rng.permutation(len(days))]
    odd = days.copy()
    odd[5, 20:32] = 0.0
    odd[6, 20:32] = -0.0
    odd[9, 25] = np.nan
    for states in (days, shuffled, days.astype(np.float32), odd, days[:1], days[:0]):
        got = risk.drawdown(states)
        assert got.tobytes() == _drawdown_cell_by_cell(states, window).tobytes()


def test_the_analysts_read_float64_states_without_a_copy_and_others_as_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A C-contiguous float64 array is read as it is (``astype`` would copy it to the same
    layout); any other states are copied as before: the signals are the bits the old copy
    (``astype`` always) gave, whatever the layout."""
    from otonom_runtime import ensemble
    from otonom_runtime.ensemble import _float64

    days = s.market_feature_matrix(random_history(300, seed=5))
    assert _float64(days) is days
    layouts = (days, np.asfortranarray(days), days.astype(np.float32), days[::2])
    for other in layouts[1:]:
        assert _float64(other).tobytes() == other.astype(np.float64).tobytes()
    analysts = (TechAnalyst(), NewsAnalyst())
    got = [analyst.signals(states) for analyst in analysts for states in layouts]
    monkeypatch.setattr(ensemble, "_float64", lambda x: x.astype(np.float64))
    want = [analyst.signals(states) for analyst in analysts for states in layouts]
    for g, w in zip(got, want, strict=True):
        for a, b in zip(
            (g.actions, g.strengths, g.confidences),
            (w.actions, w.strengths, w.confidences),
            strict=True,
        ):
            assert a.tobytes() == b.tobytes()


# --- the RL analyst and its fallback -----------------------------------------------------------


def test_rl_analyst_uses_the_onnx_policy(tmp_path: Path) -> None:
    make_policy_model(tmp_path / "policy_best.onnx")
    policy = load_rl_policy(tmp_path)
    state = s.compute_states(random_history(200, seed=5))[-1]
    sig = RlAnalyst(policy).signal(state)
    action, strength, probs = policy.predict(state, return_probs=True)
    assert sig == Signal(action, strength, float(probs.max()))


class _Broken:
    def __init__(self, result: object) -> None:
        self.result = result

    def predict(self, state: object, return_probs: bool = False) -> object:
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


def test_fallback_without_a_model_counts_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    state = neutral()
    rl = RlAnalyst(_Broken(RuntimeError("onnx exploded")))  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="otonom_runtime.ensemble"):
        assert rl.signal(state) is None
        assert rl.signal(state) is None
    assert rl.fallbacks == 2
    assert rl.last_error == "RuntimeError: onnx exploded"
    assert len([r for r in caplog.records if "RL analyst failed" in r.message]) == 1

    nan = RlAnalyst(_Broken((BUY, float("nan"), np.array([0.1, 0.8, 0.1]))))  # type: ignore[arg-type]
    assert nan.signal(state) is None
    assert "non-finite" in (nan.last_error or "")

    missing = RlAnalyst(None, reason="models/rl_bc: no policy_best.onnx")
    assert missing.signal(state) is None
    assert missing.fallbacks == 1


def test_ensemble_works_without_rl_if_model_fails() -> None:
    """The guide's checklist item: with the RL analyst failing, the other three decide."""
    states = s.compute_states(random_history(300, seed=6))
    three = [
        TechAnalyst().signals(states),
        NewsAnalyst().signals(states),
        RiskAnalyst().signals(states),
    ]
    rl = RlAnalyst(_Broken(ValueError("schema mismatch")))  # type: ignore[arg-type]
    for i in range(0, 300, 25):
        with_failed_rl = aggregate_signals(
            [sig[i] for sig in three] + [rl.signal(states[i])], [1.0, 1.0, 1.0, 1.0]
        )
        without = aggregate_signals([sig[i] for sig in three], [1.0, 1.0, 1.0])
        assert with_failed_rl == without
    assert rl.fallbacks == 12


class _Flaky:
    """A policy that raises for states with rsi > 0.8 and answers NaN for rsi < 0.2."""

    def __init__(self, policy: object) -> None:
        self.policy = policy

    def predict(self, state: object, return_probs: bool = False) -> object:
        x = state.to_array() if isinstance(state, s.RlState) else np.asarray(state)
        if x[IDX("rsi")] > 0.8:
            raise RuntimeError("too hot")
        action, strength, probs = self.policy.predict(state, return_probs=True)  # type: ignore[attr-defined]
        return action, (math.nan if x[IDX("rsi")] < 0.2 else strength), probs

    def predict_batch(self, states: np.ndarray) -> object:
        x = s.validate_states(states)
        if (x[:, IDX("rsi")] > 0.8).any():
            raise RuntimeError("too hot")
        actions, strengths, probs = self.policy.predict_batch(x)  # type: ignore[attr-defined]
        return actions, np.where(x[:, IDX("rsi")] < 0.2, np.float32(np.nan), strengths), probs


def test_rl_votes_equal_one_signal_per_state(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One model call for many analysts' states gives each the votes, fallbacks and log lines
    ``signal`` gives it one state at a time (a batch that raises is retried row by row)."""
    from otonom_runtime.ensemble import rl_votes

    make_policy_model(tmp_path / "policy_best.onnx")
    real = load_rl_policy(tmp_path)
    states = s.compute_states(random_history(400, seed=8))[150:]
    hot = int(np.argmax(states[:, IDX("rsi")] > 0.8))
    assert states[hot, IDX("rsi")] > 0.8
    assert (states[:, IDX("rsi")] < 0.2).any()
    for policy in (real, _Flaky(real), None):
        one = [RlAnalyst(policy) for _ in range(5)]  # type: ignore[arg-type]
        many = [RlAnalyst(policy) for _ in range(5)]  # type: ignore[arg-type]
        for day in range(0, 240, 5):
            rows = states[day : day + 5] if day != 0 else states[hot : hot + 5]
            expected = [a.signal(s.RlState.from_array(r)) for a, r in zip(one, rows, strict=True)]
            with caplog.at_level(logging.WARNING, logger="otonom_runtime.ensemble"):
                votes, voted = rl_votes(many, rows)
            got = [
                (int(a), st, c) if ok else None
                for a, st, c, ok in zip(
                    votes.actions.tolist(),
                    votes.strengths.tolist(),
                    votes.confidences.tolist(),
                    voted.tolist(),
                    strict=True,
                )
            ]
            assert not (votes.confidences[~voted]).any()  # a fallback adds no vote
            assert got == [
                None if e is None else (int(e.action), e.strength, e.confidence) for e in expected
            ]
        assert [(a.fallbacks, a.last_error) for a in many] == [
            (a.fallbacks, a.last_error) for a in one
        ]
        assert all(a._logged == (a.fallbacks > 0) for a in many)
        if isinstance(policy, _Flaky):  # both kinds of failure happened
            assert "too hot" in caplog.text
            assert "non-finite" in caplog.text
    with pytest.raises(s.SchemaError):
        rl_votes([RlAnalyst(real)], np.full((1, 34), np.nan))
    with pytest.raises(s.SchemaError):
        rl_votes([RlAnalyst(None)], np.full((1, 34), np.nan))


def _random_votes(rng: np.random.Generator, n: int, trial: int) -> tuple[np.ndarray, ...]:
    """Totals and strength sums (n, 3) >= 0, and one more analyst's votes; every few trials
    from a small grid (ties between BUY and SELL, zero votes, shares at ``min_score``)."""
    if trial % 3 == 0:
        grid = np.array([0.0, 0.25, 0.5, 1.0, 0.3, 0.7])
        totals, sums = rng.choice(grid, (n, 3)), rng.choice(grid, (n, 3))
    else:
        totals = rng.random((n, 3)) * rng.choice([0.0, 1.0, 3.0], (n, 3))
        sums = totals * rng.random((n, 3))
    if trial % 7 == 0:
        totals[rng.integers(0, n), rng.integers(0, 3)] = np.nan
    actions = rng.integers(0, 3, n)
    strengths = rng.choice([0.0, 0.5, 1.0, float(rng.random())], n)
    confidences = rng.choice([0.0, 0.5, 1.0, float(rng.random())], n)
    voted = rng.random(n) < 0.8
    return totals, sums, actions, strengths, confidences, voted


def _reference_decide(totals: np.ndarray, strength_sums: np.ndarray, min_score: float) -> Signals:
    """The vote's rule as ``decide``'s docstring states it, in numpy (the array form the
    backtester ran until the rule was written once, in ``decide_rows``): the oracle."""
    hold, buy, sell = totals[:, 0], totals[:, 1], totals[:, 2]
    votes = hold + buy + sell
    best = np.maximum(buy, sell)
    share = np.divide(best, votes, out=np.zeros(votes.shape), where=votes > 0)
    act = (buy != sell) & (share >= min_score)
    buying = buy > sell
    side_sum = np.where(buying, strength_sums[:, 1], strength_sums[:, 2])
    strength = np.divide(side_sum, best, out=np.zeros(best.shape), where=act)
    return Signals(
        np.where(act, np.where(buying, int(BUY), int(SELL)), int(HOLD)).astype(np.int64),
        np.minimum(np.maximum(strength, 0.0), 1.0),
        np.minimum(np.maximum(np.where(act, share, 1.0 - share), 0.0), 1.0),
    )


def test_the_one_vote_matches_its_reference_bit_for_bit() -> None:
    """``decide_rows`` (the rule, Python floats, flat rows) with one more analyst's votes, and
    ``decide`` (its array form), against ``add_votes`` + the reference array rule on random
    rows: ties, zero votes, NaN totals, analysts that do not vote (an action of None; in the
    array form a HOLD with confidence 0), zero weights, min_score 0 and 1: the same actions
    (Python ints) and the same float bits; with no votes at all (None), ``decide``'s."""
    rng = np.random.default_rng(13)
    for trial in range(3000):
        n = int(rng.integers(1, 12))
        totals, sums, actions, strengths, confidences, voted = _random_votes(rng, n, trial)
        weight = float(rng.choice([0.0, 1.0, 2.0, 0.37]))
        min_score = float(rng.choice([0.0, 0.4, 0.5, 1.0]))
        votes = [
            number
            for a, st, c, v in zip(actions, strengths, confidences, voted, strict=True)
            for number in ((int(a), float(st), float(c)) if v else (None, None, None))
        ]
        got = decide_rows(totals.ravel().tolist(), sums.ravel().tolist(), votes, weight, min_score)
        plain = decide(totals, sums, min_score)
        unvoted = decide_rows(totals.ravel().tolist(), sums.ravel().tolist(), None, 1.0, min_score)
        assert unvoted[0::3] == plain.actions.tolist()
        assert np.array(unvoted[1::3]).tobytes() == plain.strengths.tobytes()
        assert np.array(unvoted[2::3]).tobytes() == plain.confidences.tobytes()
        with np.errstate(invalid="ignore"):
            plain_want = _reference_decide(totals, sums, min_score)
        for field in ("actions", "strengths", "confidences"):
            assert getattr(plain, field).tobytes() == getattr(plain_want, field).tobytes()
        rl = Signals(
            np.where(voted, actions, int(HOLD)).astype(np.int64),
            np.where(voted, strengths, 0.0),
            np.where(voted, confidences, 0.0),
        )
        with np.errstate(invalid="ignore"):
            add_votes(totals, sums, rl, weight)
            want = _reference_decide(totals, sums, min_score)
        assert got[0::3] == want.actions.tolist()
        assert all(type(a) is int for a in got[0::3])
        assert np.array(got[1::3]).tobytes() == want.strengths.tobytes()
        assert np.array(got[2::3]).tobytes() == want.confidences.tobytes()


def test_decide_of_no_rows_and_of_a_bad_shape() -> None:
    empty = decide(np.zeros((0, 3)), np.zeros((0, 3)), 0.5)
    assert empty.actions.dtype == np.int64
    assert len(empty) == 0
    with pytest.raises(ValueError, match=r"expected \(N, 3\) each"):
        decide(np.zeros((2, 3)), np.zeros((2, 2)), 0.5)


def test_decide_rows_wants_three_numbers_per_vote() -> None:
    with pytest.raises(ValueError, match="3 totals, 3 strength sums and 2 vote numbers"):
        decide_rows([0.0] * 3, [0.0] * 3, [None, None], 1.0, 0.0)
    with pytest.raises(ValueError, match="4 totals, 4 strength sums and no vote numbers"):
        decide_rows([0.0] * 4, [0.0] * 4, None, 1.0, 0.0)


# --- the RL analyst's deployment modes ----------------------------------------------------------

# three rows of three-analyst totals and strength sums (HOLD, BUY, SELL): a BUY (share 0.6,
# strength 0.8), a SELL (share 0.6, strength 0.5) and a HOLD (a 1 : 1 split)
_TOTALS = [0.4, 1.8, 0.8, 0.4, 0.8, 1.8, 1.0, 1.0, 1.0]
_SUMS = [0.0, 1.44, 0.4, 0.0, 0.4, 0.9, 0.0, 0.5, 0.5]


def _modes(votes: list[float | None], mode: RlMode) -> list[float]:
    return decide_rows(_TOTALS, _SUMS, votes, 2.0, 0.5, mode)


def test_the_teacher_rows_the_modes_start_from() -> None:
    assert decide_rows(_TOTALS, _SUMS, None, 0.0, 0.5) == pytest.approx(
        [1, 0.8, 0.6, 2, 0.5, 0.6, 0, 0.0, 2 / 3]
    )


def test_voter_is_the_vote_it_always_was() -> None:
    votes: list[float | None] = [2, 0.9, 1.0, 2, 0.9, 1.0, 1, 0.7, 0.5]
    assert _modes(votes, RlMode()) == decide_rows(_TOTALS, _SUMS, votes, 2.0, 0.5)
    assert rows_decider(RlMode()) is decide_rows  # the voter path is decide_rows itself
    # a weight-2 opposite vote overturns the first row's BUY as the 4th voter
    assert _modes(votes, RlMode())[0] == int(SELL)


def test_sole_is_the_policys_vote_and_the_teacher_where_it_fell_back() -> None:
    votes: list[float | None] = [2, 0.9, 0.7, None, None, None, 1, 0.3, 0.6]
    got = _modes(votes, RlMode("sole"))
    assert got == [2, 0.9, 0.7, 2, 0.5, pytest.approx(0.6), 1, 0.3, 0.6]
    assert all(type(a) is int for a in got[0::3])
    assert rows_decider(RlMode("sole"))(_TOTALS, _SUMS, votes, 2.0, 0.5) == got


def test_filter_vetoes_a_disagreeing_buy_or_sell_and_keeps_agreeing_ones() -> None:
    teacher = decide_rows(_TOTALS, _SUMS, None, 0.0, 0.5)
    agree: list[float | None] = [1, 0.5, 0.9, 2, 0.5, 0.9, 1, 1.0, 1.0]
    assert _modes(agree, RlMode("filter")) == teacher  # agreeing: kept; a HOLD never opens
    opposite: list[float | None] = [2, 0.5, 0.9, 1, 0.5, 0.8, 2, 1.0, 1.0]
    assert _modes(opposite, RlMode("filter")) == [0, 0.0, 0.9, 0, 0.0, 0.8, *teacher[6:]]
    holding: list[float | None] = [0, 0.5, 0.9, 0, 0.5, 0.8, 0, 1.0, 1.0]
    assert _modes(holding, RlMode("filter")) == teacher  # "opposite": a HOLD does not veto
    assert _modes(holding, RlMode("filter", veto="differs")) == [
        0, 0.0, 0.9, 0, 0.0, 0.8, *teacher[6:]
    ]  # fmt: skip
    assert _modes(opposite, RlMode("filter", veto="off")) == teacher
    fell_back: list[float | None] = [None] * 9
    assert _modes(fell_back, RlMode("filter", veto="differs")) == teacher


def test_filter_with_size_scales_an_agreeing_strength_by_the_policys() -> None:
    teacher = decide_rows(_TOTALS, _SUMS, None, 0.0, 0.5)
    votes: list[float | None] = [1, 0.5, 0.9, 0, 0.25, 0.8, 1, 1.0, 1.0]
    got = _modes(votes, RlMode("filter", size=True))
    # the BUY the policy shares: 0.8 x 0.5; the SELL it holds on: kept whole; HOLD stays
    assert got == [1, teacher[1] * 0.5, teacher[2], *teacher[3:]]


def test_a_bad_mode_is_a_one_line_error() -> None:
    with pytest.raises(ValueError, match="RL mode is 'boss'; expected one of voter, sole, filter"):
        RlMode("boss")
    with pytest.raises(ValueError, match="filter veto is 'x'; expected one of opposite, differs"):
        RlMode("filter", veto="x")
    with pytest.raises(ValueError, match="3 totals, 3 strength sums and 2 vote numbers"):
        decide_rows([0.0] * 3, [0.0] * 3, [None, None], 1.0, 0.0, RlMode("sole"))
