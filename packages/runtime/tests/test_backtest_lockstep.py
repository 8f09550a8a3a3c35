"""The RL lockstep's two day paths (``otonom_runtime.backtest.lockstep``): the bound day
(states written into the policy's pre-bound input, the vote in Python floats) gives exactly
what the general day (``rl_votes``, ``add_votes``, ``decide``) gives, fallbacks and errors
included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import otonom_schema as s
from otonom_runtime.backtest import EngineParams, engine, lockstep
from otonom_runtime.ensemble import RlAnalyst, RlMode, Signals, add_votes, decide, vote_totals
from otonom_runtime.policy import RlPolicy, load_rl_policy
from otonom_runtime.testing.models import make_policy_model, open_unchecked
from otonom_schema.testing import random_history


class Unbound:
    """A policy without ``bound_batch`` / ``predict_bound``: every lockstep day is a general
    day (the path every day took before the bound day existed)."""

    def __init__(self, policy: RlPolicy) -> None:
        self.policy = policy

    def predict(self, state: Any, return_probs: bool = False) -> Any:
        return self.policy.predict(state, return_probs=return_probs)  # type: ignore[call-overload]

    def predict_batch(self, states: Any) -> Any:
        return self.policy.predict_batch(states)

    def predict_valid_batch(self, x: npt.NDArray[np.float32]) -> Any:
        return self.policy.predict_valid_batch(x)


class Counting:
    """An ``RlPolicy`` that counts its bound days and its general days' batches."""

    def __init__(self, policy: RlPolicy) -> None:
        self.policy = policy
        self.bound = self.bound_none = self.general = 0

    def bound_batch(self, n: int) -> Any:
        return self.policy.bound_batch(n)

    def predict_bound(self, slot: Any) -> Any:
        out = self.policy.predict_bound(slot)
        self.bound += 1
        self.bound_none += out is None
        return out

    def predict(self, state: Any, return_probs: bool = False) -> Any:
        return self.policy.predict(state, return_probs=return_probs)  # type: ignore[call-overload]

    def predict_batch(self, states: Any) -> Any:
        return self.policy.predict_batch(states)

    def predict_valid_batch(self, x: npt.NDArray[np.float32]) -> Any:
        self.general += 1
        return self.policy.predict_valid_batch(x)


def _symbols(spans: tuple[tuple[int, int, int], ...]) -> list[engine._Bars]:
    out = []
    for seed, n, first in spans:
        h = random_history(n, seed=seed)
        market = s.market_feature_matrix(h)
        out.append(engine._Bars(f"S{seed}", h.dates, h.open, h.close, market, first))
    return out


SPANS = ((1, 420, 140), (2, 330, 150), (3, 400, 300), (4, 500, 120))
PARAMS = (
    EngineParams(weights=(1.0, 1.0, 1.0, 2.0), max_leverage=2.0, min_score=0.4),
    EngineParams(weights=(0.5, 1.0, 0.0, 1.0), min_score=0.0, allow_short=False),
    EngineParams(weights=(1.0, 1.0, 1.0, 0.0), min_score=0.6, max_leverage=3.0),
    # the RL analyst's other deployment modes (``otonom_runtime.vote``)
    EngineParams(weights=(1.0, 1.0, 1.0, 2.0), min_score=0.4, rl_mode=RlMode("sole")),
    EngineParams(min_score=0.4, rl_mode=RlMode("filter", veto="opposite", size=True)),
    EngineParams(min_score=0.3, rl_mode=RlMode("filter", veto="differs")),
)


def _same(a: engine.SymbolResult, b: engine.SymbolResult) -> None:
    """Every field of two results, bit for bit (arrays by their bytes and dtypes)."""
    for name, value in vars(a).items():
        other = getattr(b, name)
        if name == "rl_signals":
            for field in ("actions", "strengths", "confidences"):
                x, y = getattr(value, field), getattr(other, field)
                assert x.dtype == y.dtype, (name, field)
                assert x.tobytes() == y.tobytes(), (name, field)
        elif name == "signals":
            for sig, sig2 in zip(value.values(), other.values(), strict=True):
                for field in ("actions", "strengths", "confidences"):
                    assert getattr(sig, field).tobytes() == getattr(sig2, field).tobytes()
        elif isinstance(value, np.ndarray):
            assert value.dtype == other.dtype, name
            assert value.tobytes() == other.tobytes(), name
        else:
            assert value == other, name


def _check_decisions(results: list[engine.SymbolResult], params: EngineParams) -> None:
    """Each day's decision is the array form's: ``vote_totals`` of the three analysts,
    ``add_votes`` of the RL votes recorded (a fallback's is HOLD with confidence 0: adds
    nothing), ``decide``; in the other RL modes, ``_moded``; bit for bit."""
    for r in results:
        assert r.rl_signals is not None
        assert r.rl_voted is not None
        signals = [r.signals[name] for name in ("tech", "news", "risk")]
        totals, sums = vote_totals(signals, params.weights[:3])
        if params.rl_mode.voter:
            add_votes(totals, sums, r.rl_signals, params.weights[3])
            want = decide(totals, sums, params.min_score)
        else:
            teacher = decide(totals, sums, params.min_score)
            want = _moded(teacher, r.rl_signals, r.rl_voted, params.rl_mode)
        assert want.actions.tobytes() == r.actions.tobytes()
        assert want.strengths.tobytes() == r.strengths.tobytes()
    assert sum(int((r.actions != 0).sum()) for r in results) > 10  # not only HOLD


def _moded(teacher: Signals, rl: Signals, voted: npt.NDArray[np.bool_], mode: RlMode) -> Signals:
    """The ``"sole"`` and ``"filter"`` rules (``otonom_runtime.vote``'s docstring) in numpy,
    from the three analysts' decision and the RL votes (``voted``: False where it fell back:
    the teacher's row): the oracle of ``decide_rows``' modes."""
    if mode.name == "sole":
        return Signals(*(np.where(voted, getattr(rl, f), getattr(teacher, f)) for f in _FIELDS))
    acting = voted & (teacher.actions != 0)
    agree = rl.actions == teacher.actions
    vetoed = (
        acting & ~agree & {"opposite": rl.actions != 0, "differs": True, "off": False}[mode.veto]
    )
    sized = acting & agree & mode.size
    strengths = np.where(
        sized, np.clip(teacher.strengths * rl.strengths, 0.0, 1.0), teacher.strengths
    )
    return Signals(
        np.where(vetoed, 0, teacher.actions),
        np.where(vetoed, 0.0, strengths),
        np.where(vetoed, rl.confidences, teacher.confidences),
    )


_FIELDS = ("actions", "strengths", "confidences")


def _run(symbols: list[engine._Bars], params: EngineParams, policy: Any) -> list[Any]:
    return engine._simulate(symbols, params, 1000.0, [RlAnalyst(policy) for _ in symbols])


@pytest.mark.parametrize("params", PARAMS)
def test_bound_days_equal_general_days(tmp_path: Path, params: EngineParams) -> None:
    """A healthy model: every day bound, the same results as every day general (four
    histories of different lengths: the day's batch shrinks from 4 to 1)."""
    make_policy_model(tmp_path / "policy_best.onnx")
    policy = load_rl_policy(tmp_path)
    symbols = _symbols(SPANS)
    counting = Counting(policy)
    bound = _run(symbols, params, counting)
    general = _run(symbols, params, Unbound(policy))
    for a, b in zip(bound, general, strict=True):
        _same(a, b)
        assert a.rl_voted is not None
        assert a.rl_voted.all()
    _check_decisions(bound, params)
    assert counting.bound == max(len(r.actions) for r in bound)
    assert counting.bound_none == counting.general == 0


@pytest.mark.parametrize("params", PARAMS[3:], ids=["sole", "filter-size", "filter-differs"])
def test_fallback_rows_are_the_three_analysts_vote_in_every_mode(
    tmp_path: Path, params: EngineParams
) -> None:
    """A model failing on some states (a strength outside [0, 1]): in ``"sole"`` and
    ``"filter"`` mode those rows are decided by the three analysts alone (``_moded``), on the
    bound and the general days alike."""
    make_policy_model(tmp_path / "policy_best.onnx", strength_op="Identity")
    policy = load_rl_policy(tmp_path)
    symbols = _symbols(SPANS[:2])
    bound = _run(symbols, params, Counting(policy))
    for a, b in zip(bound, _run(symbols, params, Unbound(policy)), strict=True):
        _same(a, b)
    _check_decisions(bound, params)
    voted = np.concatenate([r.rl_voted for r in bound])
    assert 0 < (~voted).sum() < voted.size // 2


@pytest.mark.parametrize("strength_op", ["Identity", "Sqrt"])
def test_contract_violations_fall_back_on_their_days_only(tmp_path: Path, strength_op: str) -> None:
    """A model whose output breaks the contract for some states (a raw strength outside
    [0, 1], or NaN): ``predict_bound`` refuses those days, which run as general days
    (``predict_valid_batch`` raises ``PolicyError``, the rows are retried one by one), so
    exactly the rows that break it fall back, on their days only, as before."""
    make_policy_model(tmp_path / "policy_best.onnx", strength_op=strength_op)
    policy = load_rl_policy(tmp_path)
    symbols = _symbols(SPANS)
    counting = Counting(policy)
    bound = _run(symbols, PARAMS[0], counting)
    general = _run(symbols, PARAMS[0], Unbound(policy))
    for a, b in zip(bound, general, strict=True):
        _same(a, b)
    _check_decisions(bound, PARAMS[0])
    voted = np.concatenate([r.rl_voted for r in bound])
    assert 0 < (~voted).sum() < voted.size // 2  # some fall back, most vote
    assert 0 < counting.bound_none == counting.general < counting.bound  # those days only
    assert sum(r.fallbacks for r in bound) == (~voted).sum()


def test_a_model_breaking_the_contract_everywhere_never_votes(tmp_path: Path) -> None:
    """Logits as probabilities: every bound day is refused, every row falls back."""
    make_policy_model(tmp_path / "broken.onnx", seal=False, probs_op="Identity")
    policy = open_unchecked(tmp_path / "broken.onnx")
    symbols = _symbols(SPANS[:2])
    bound = _run(symbols, PARAMS[0], policy)
    general = _run(symbols, PARAMS[0], Unbound(policy))
    for a, b in zip(bound, general, strict=True):
        _same(a, b)
        assert a.rl_voted is not None
        assert not a.rl_voted.any()
        assert a.fallbacks == len(a.actions)


def test_a_bad_portfolio_column_raises_as_the_general_day(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A portfolio feature out of range on a bound day: the day runs as a general day, whose
    whole validation raises the ``SchemaError`` naming the feature and its row."""
    make_policy_model(tmp_path / "policy_best.onnx")
    policy = load_rl_policy(tmp_path)
    symbols = _symbols(SPANS[:2])

    class Snapshot:  # the schema's normalisation, except one value out of range
        def __init__(self, days_since_last_trade: float) -> None:
            self.days = days_since_last_trade

        def features(self) -> npt.NDArray[np.float64]:
            real = s.PortfolioSnapshot(days_since_last_trade=self.days).features()
            return np.array([*real[:3], 1.5 if self.days == 3.0 else real[3]])

    monkeypatch.setattr(lockstep, "PortfolioSnapshot", Snapshot)
    errors = []
    for p in (policy, Unbound(policy)):
        with pytest.raises(s.SchemaError) as caught:
            _run(symbols, PARAMS[0], p)
        errors.append(str(caught.value))
    assert errors[0] == errors[1]
    assert "days_since_last_trade" in errors[0]


def test_the_portfolio_check_is_columns_in_range_in_float64() -> None:
    """The lockstep sleeve's check of its portfolio columns (``_Sleeve.steps`` with a
    ``Board``, in Python floats) says what ``columns_in_range`` says on the same row in
    float64: the board's bounds are the schema's with its tolerance, and on days whose days
    feature (the board's cache, preset) lies at, just inside and just outside each bound,
    or is NaN or an infinity, and on a day whose leverage is NaN (an infinite close), the
    check agrees."""
    low = np.array([f.low for f in s.FEATURES[s.PORTFOLIO_COLUMNS]]) - s.RANGE_TOLERANCE
    high = np.array([f.high for f in s.FEATURES[s.PORTFOLIO_COLUMNS]]) + s.RANGE_TOLERANCE
    assert lockstep.Board().bounds == (*low.tolist(), *high.tolist())
    lo, hi = low[3], high[3]
    edges = [np.nextafter(lo, -np.inf), lo, np.nextafter(lo, np.inf), (lo + hi) / 2]
    edges += [np.nextafter(hi, -np.inf), hi, np.nextafter(hi, np.inf), np.nan, np.inf, -np.inf]
    n = len(edges) + 3  # day 0 buys; each later day holds, one day further from that fill
    closes = 100.0 + np.arange(n + 1, dtype=np.float64)
    closes[-1] = np.inf  # the last decision day, held long: exposure inf / inf, NaN
    dates = np.datetime64("2020-01-01") + np.arange(n + 1)
    bars = engine._Bars("X", dates, closes.copy(), closes, np.zeros((n + 1, 34)), 1)
    sleeve = engine._Sleeve(bars, EngineParams(), 1000.0, [1.0] * n)
    board = lockstep.Board()
    board.features.update({float(d): float(e) for d, e in enumerate(edges)})
    board.features[np.inf] = 1.0
    days = sleeve.steps([], [], board, 0)
    checked = []
    for k in range(n):
        in_range = next(days)
        row = np.array([board.portfolio])
        assert in_range == s.columns_in_range(row, s.PORTFOLIO_COLUMNS), (k, row)
        checked.append(in_range)
        board.portfolio.clear()
        board.decided = [1, 0.5, 1.0] if k == 0 else [0, 0.0, 1.0]
    assert checked[1 : 1 + len(edges)] == [False, True, True, True, True, True, False] + [False] * 3
    assert np.isnan(sleeve.out[-5])  # the last day's leverage
    assert checked[-2]
    assert not checked[-1]


def test_no_bound_day_where_it_cannot_run(tmp_path: Path) -> None:
    """More symbols than a bound batch holds (65 > 64: general days until histories end and
    the batch fits), float32 market features (their portfolio columns are checked in float32
    by the general day), analysts on two policies (refused each day by ``rl_votes``): the
    results are the general days' as before."""
    make_policy_model(tmp_path / "policy_best.onnx")
    policy = load_rl_policy(tmp_path)
    many = _symbols(tuple((seed, 190 + seed % 3, 150) for seed in range(65)))
    many[0] = _symbols(((0, 230, 150),))[0]  # one longer history: the last days fit a slot
    counting = Counting(policy)
    bound = _run(many, PARAMS[0], counting)
    for a, b in zip(bound, _run(many, PARAMS[0], Unbound(policy)), strict=True):
        _same(a, b)
    assert 0 < counting.bound < len(bound[0].actions)
    assert counting.general == len(bound[0].actions) - counting.bound
    single = [
        engine._Bars(b.symbol, b.dates, b.opens, b.closes, b.market.astype(np.float32), b.first)
        for b in _symbols(SPANS[:2])
    ]
    counting = Counting(policy)
    for a, b in zip(
        _run(single, PARAMS[0], counting), _run(single, PARAMS[0], Unbound(policy)), strict=True
    ):
        _same(a, b)
    assert counting.bound == 0
    two = [RlAnalyst(policy), RlAnalyst(load_rl_policy(tmp_path))]
    with pytest.raises(ValueError, match="share one policy"):
        engine._simulate(_symbols(SPANS[:2]), PARAMS[0], 1000.0, two)
