"""``otonom_trainer.stats`` on constructed return series: real numbers, no mocked maths."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest

from otonom_trainer.stats import (
    MIN_ROWS,
    StatsError,
    block_length,
    deflated_sharpe_ratio,
    equity_sharpe_test,
    expected_max_sharpe,
    normal_cdf,
    probabilistic_sharpe_ratio,
    sharpe_difference,
    sharpe_ratio,
)

# 20 daily returns whose moments were computed independently (scipy.stats.skew / kurtosis,
# fisher=False, and norm.cdf, outside the project): mean 0.0041, std (ddof 1) 0.009824245,
# skewness -0.181562918, kurtosis 2.233690542.
TWENTY = np.array(
    [
        *(0.012, -0.004, 0.007, 0.021, -0.015, 0.003, 0.009, -0.002, 0.016, -0.008),
        *(0.005, 0.011, -0.006, 0.002, 0.018, -0.011, 0.004, 0.008, -0.001, 0.013),
    ]
)


def _noise(seed: int, n: int, mean: float = 0.0, sd: float = 0.01) -> np.ndarray[Any, Any]:
    return np.random.default_rng(seed).normal(mean, sd, n)


# --- Sharpe and the bootstrap --------------------------------------------------------------------


def test_sharpe_ratio_is_the_runtimes_definition() -> None:
    r = TWENTY
    assert sharpe_ratio(r, 252) == pytest.approx(0.0041 / 0.00982424498237316 * math.sqrt(252))
    assert sharpe_ratio(r[:1]) is None
    assert sharpe_ratio(np.full(30, 0.001)) is None  # constant growth: no variance


def test_block_length_grows_as_the_cube_root() -> None:
    assert [block_length(n) for n in (1, 8, 27, 250, 1000)] == [1, 2, 3, 6, 10]


def test_three_verdicts_on_constructed_series() -> None:
    without = _noise(1, 750, mean=0.0002)  # three years of days
    better = sharpe_difference(without + 0.002, without)  # a clear daily drift on top
    assert better.verdict == "significant improvement"
    assert better.low > 0
    assert better.difference == pytest.approx(0.2 * math.sqrt(252), rel=0.05)
    worse = sharpe_difference(without - 0.002, without)
    assert worse.verdict == "significant harm"
    assert worse.high < 0
    # two independent noisy series of three months: the interval spans 0
    short = sharpe_difference(_noise(2, 60), _noise(3, 60), confidence=0.90)
    assert short.verdict == "no evidence either way"
    assert short.low < 0 < short.high
    assert short.high - short.low > 4.0
    assert (short.block, short.rows, short.samples) == (4, 60, 2000)


def test_the_interval_is_seeded_and_at_its_level() -> None:
    on, off = _noise(4, 200, 0.0005), _noise(5, 200)
    a = sharpe_difference(on, off, seed=7)
    assert a == sharpe_difference(on, off, seed=7)
    assert a != sharpe_difference(on, off, seed=8)
    wide = sharpe_difference(on, off, seed=7, confidence=0.99)
    assert wide.low < a.low < a.difference < a.high < wide.high


def test_the_interval_covers_the_true_difference_about_as_often_as_its_level() -> None:
    """200 pairs of independent normal series with known Sharpes: the 90 % interval covers
    the true difference (1.587) about 90 % of the time, and a single known case covers it."""
    n, sd, drift = 250, 0.01, 0.001
    true = drift / sd * math.sqrt(252)
    covered = []
    for k in range(200):
        rng = np.random.default_rng(100 + k)
        d = sharpe_difference(rng.normal(drift, sd, n), rng.normal(0.0, sd, n), samples=400, seed=k)
        covered.append(d.low <= true <= d.high)
    assert 0.82 <= np.mean(covered) <= 0.96
    assert covered[0]


def test_blocks_widen_the_interval_of_autocorrelated_returns() -> None:
    """AR(1) returns with phi 0.6: resampling single days (block 1) forgets the dependence and
    gives too narrow an interval; the default blocks keep part of it."""
    rng = np.random.default_rng(9)
    shocks = rng.normal(0.0, 0.01, (2, 1000))
    r = np.zeros((2, 1000))
    for t in range(1, 1000):
        r[:, t] = 0.6 * r[:, t - 1] + shocks[:, t]
    iid = sharpe_difference(r[0] + 0.0003, r[1], block=1)
    blocked = sharpe_difference(r[0] + 0.0003, r[1])
    assert blocked.block == 10
    assert blocked.high - blocked.low > 1.3 * (iid.high - iid.low)


# --- PSR and DSR ---------------------------------------------------------------------------------


def test_normal_cdf() -> None:
    assert normal_cdf(0.0) == 0.5
    assert normal_cdf(1.959963984540054) == pytest.approx(0.975, abs=1e-12)
    assert normal_cdf(-1.0) == pytest.approx(0.15865525393145707, abs=1e-12)


def test_psr_against_a_hand_computed_value() -> None:
    # SR = 0.0041 / 0.009824245 = 0.417334870 per day, n = 20
    sr, g3, g4 = 0.41733486973872247, -0.18156291798380833, 2.2336905424004487
    z = sr * math.sqrt(19) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr**2)
    assert probabilistic_sharpe_ratio(TWENTY) == pytest.approx(normal_cdf(z), abs=1e-12)
    assert probabilistic_sharpe_ratio(TWENTY) == pytest.approx(0.9565213360695788, abs=1e-12)
    # against an annualised benchmark of 1.0 (1 / sqrt(252) per day)
    assert probabilistic_sharpe_ratio(TWENTY, 1.0, 252) == pytest.approx(
        0.9269304484752975, abs=1e-12
    )
    # the benchmark at the sample's own Sharpe: a coin toss
    own = sharpe_ratio(TWENTY, 252)
    assert own is not None
    assert probabilistic_sharpe_ratio(TWENTY, own, 252) == pytest.approx(0.5, abs=1e-12)
    assert probabilistic_sharpe_ratio(np.full(25, 0.001)) is None


def test_expected_max_sharpe_against_simulated_maxima() -> None:
    """The Euler-Mascheroni formula against the mean maximum of N standard normals (20 000
    draws each): within 0.05 for 10, 100 and 1000 trials; 0 for a single trial."""
    rng = np.random.default_rng(0)
    for n in (10, 100, 1000):
        simulated = rng.standard_normal((20_000, n)).max(axis=1).mean()
        assert expected_max_sharpe(n, 1.0) == pytest.approx(simulated, abs=0.05)
    assert expected_max_sharpe(100, 4.0) == pytest.approx(2 * expected_max_sharpe(100, 1.0))
    assert expected_max_sharpe(1, 1.0) == 0.0


def test_dsr_falls_as_the_number_of_trials_grows() -> None:
    """Two years with an observed Sharpe of 2.15: convincing alone (DSR = PSR > 0.99), not as
    the best of 100 trials whose Sharpes vary by 1 (the luck of the best is then ~2.5)."""
    r = _noise(11, 500, mean=0.001)
    dsr = [deflated_sharpe_ratio(r, n, 1.0, 252) for n in (1, 2, 10, 100, 1000)]
    assert dsr[0] == probabilistic_sharpe_ratio(r, 0.0, 252)
    assert all(a is not None and b is not None and a > b for a, b in itertools.pairwise(dsr))
    assert dsr[0] is not None
    assert dsr[0] > 0.99
    assert dsr[3] is not None
    assert dsr[3] < 0.5


# --- equity curves (the gate's view) -------------------------------------------------------------


def test_equity_sharpe_test_reads_the_curves_as_the_runtime_does() -> None:
    from otonom_runtime.metrics import compute_metrics

    r = _noise(12, 300, mean=0.0004)
    off = 1e4 * np.cumprod(np.r_[1.0, 1.0 + r])
    on = 1e4 * np.cumprod(np.r_[1.0, 1.0 + r + 0.002])
    test = equity_sharpe_test(on, off, 252, 0.9)
    assert test.verdict == "significant improvement"
    m_on, m_off = (compute_metrics(e, np.zeros(e.size), [], 252).sharpe for e in (on, off))
    assert test.difference is not None
    assert m_on is not None
    assert m_off is not None
    assert test.difference.difference == pytest.approx(m_on - m_off, rel=1e-9)
    assert test.psr_benchmark == pytest.approx(m_off, rel=1e-12)
    assert test.psr is not None
    assert test.psr > 0.99
    assert "significant improvement; PSR" in test.summary()
    assert "90% interval" in test.summary()
    short = equity_sharpe_test(on[:10], off[:10], 252)
    assert short.difference is None
    assert short.verdict == "no evidence either way"
    assert short.summary().startswith("too few days to tell")
    assert short.to_dict()["difference"] is None


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: sharpe_difference(np.r_[TWENTY, 0.0], TWENTY),
            "with_returns has 21 rows and without_returns 20; expected aligned series",
        ),
        (
            lambda: sharpe_difference(np.r_[TWENTY[:-1], np.nan], TWENTY),
            r"with_returns: got nan at row 19 \(1 not finite\); expected a 1-D series of finite",
        ),
        (
            lambda: sharpe_difference(TWENTY[:5], TWENTY[:5]),
            rf"with_returns: got 5 returns; expected a 1-D .* returns \(at least {MIN_ROWS}\)",
        ),
        (
            lambda: sharpe_difference(TWENTY, TWENTY, confidence=90),
            r"confidence: got 90; expected a level in \(0, 1\)",
        ),
        (
            lambda: sharpe_difference(TWENTY, TWENTY, samples=10),
            "samples: got 10; expected an integer >= 100",
        ),
        (
            lambda: sharpe_difference(TWENTY, TWENTY, block=21),
            r"block: got 21; expected an integer in \[1, 20\]",
        ),
        (
            lambda: sharpe_ratio(TWENTY.reshape(4, 5)),
            r"returns: got shape \(4, 5\); expected a 1-D series of finite returns$",
        ),
        (lambda: sharpe_ratio(TWENTY, 0), "periods_per_year: got 0; expected an integer >= 1"),
        (
            lambda: probabilistic_sharpe_ratio(TWENTY[:10]),
            r"returns: got 10 returns; expected a 1-D series of finite returns \(at least 20\)",
        ),
        (
            lambda: probabilistic_sharpe_ratio(TWENTY, math.inf),
            "benchmark: got inf; expected a finite annualised Sharpe",
        ),
        (lambda: expected_max_sharpe(0, 1.0), "n_trials: got 0; expected an integer >= 1"),
        (lambda: expected_max_sharpe(5, -1.0), "variance: got -1.0; expected a finite number"),
    ],
)
def test_bad_input_is_refused_in_one_line(call: Any, message: str) -> None:
    with pytest.raises(StatsError, match=message) as caught:
        call()
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_gate_test_deflates_with_the_trial_count() -> None:
    """With ``n_trials`` the gate's test adds the deflated Sharpe: equal to the PSR against 0
    for one trial, lower for many (the ledger's count, ``otonom_trainer.trials``)."""
    from otonom_trainer.stats import (
        equity_sharpe_test,
        null_sharpe_variance,
        probabilistic_sharpe_ratio,
    )

    rng = np.random.default_rng(3)
    on = 100.0 * np.cumprod(1.0 + rng.normal(0.001, 0.01, 300))
    off = 100.0 * np.cumprod(1.0 + rng.normal(0.0, 0.01, 300))
    plain = equity_sharpe_test(on, off, 252)
    assert plain.n_trials is None
    assert plain.dsr is None
    one = equity_sharpe_test(on, off, 252, n_trials=1)
    many = equity_sharpe_test(on, off, 252, n_trials=200)
    r = on[1:] / on[:-1] - 1.0
    assert one.dsr == pytest.approx(probabilistic_sharpe_ratio(r, 0.0, 252))
    assert many.dsr is not None
    assert one.dsr is not None
    assert many.dsr < one.dsr
    assert "200 trials in the ledger" in many.summary()
    assert many.to_dict()["n_trials"] == 200
    assert null_sharpe_variance(253, 252) == pytest.approx(1.0)
