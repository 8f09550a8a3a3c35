"""The strategy's config objects: frozen dataclasses, each field with its rule
(``otonom_runtime.config_rules``), checked once when built."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from otonom_runtime._errors import StrategyError
from otonom_runtime._sources import SOURCE_NAME_RULE, is_source_name
from otonom_runtime.config_rules import (
    DERIVED_META,
    NO_RULE,
    CrossCheck,
    Problem,
    Validated,
    rule,
    to_plain,
)
from otonom_runtime.policy import DEVICES
from otonom_runtime.strategy._models import resolve_rl
from otonom_runtime.strategy._yaml import error, text
from otonom_runtime.vote import FILTER_VETOES, RL_MODES
from otonom_schema import MATHS_PARAMS

# The public names are listed once, in the package's ``__all__`` (otonom_runtime.strategy).

DICT_SOURCE: Final = "<dict>"
"""``StrategyConfig.source`` of a strategy parsed from a mapping."""
_MAX_LEVERAGE: Final = float(MATHS_PARAMS["MAX_LEVERAGE"])
_MAX_WEIGHT: Final = 1000.0  # every weight (analysts, tech signals, news blend)
_MAX_BPS: Final = 10_000.0  # a cost of 100 % of the traded notional
_MAX_CAPITAL: Final = 1e15


def _some_weight(names: tuple[str, ...], message: str) -> CrossCheck:
    """The cross check of a section whose weights ``names`` must not all be 0."""
    return CrossCheck(lambda v: sum(v[n] for n in names) > 0, lambda v: message)


class _Checked(Validated):
    """Base of the strategy's sections: objects built directly (or by ``dataclasses.replace``)
    obey the same rules as parsed ones; ints given for float fields become floats. A problem
    is a ``StrategyError`` naming ``Section.field``."""

    _path_prefix = True

    def _invalid(self, problems: list[Problem]) -> Exception:
        lines = [text(p, "", {}) for p in problems]
        head = f"invalid {type(self).__name__}:"
        return StrategyError("\n  ".join([head, *lines]), lines)


@dataclass(frozen=True)
class AnalystWeights(_Checked):
    """Voting weight of each analyst (each in [0, 1000]; at least one of tech/news/risk > 0).

    A weight missing from the file is 1.0. The RL analyst's weight counts only while
    ``ensemble.rl_policy.enabled`` (see ``StrategyConfig.weights_array``).
    """

    tech: float = field(default=1.0, metadata=rule(ge=0, le=_MAX_WEIGHT))
    news: float = field(default=1.0, metadata=rule(ge=0, le=_MAX_WEIGHT))
    risk: float = field(default=1.0, metadata=rule(ge=0, le=_MAX_WEIGHT))
    rl: float = field(default=1.0, metadata=rule(ge=0, le=_MAX_WEIGHT))

    __cross_checks__ = (
        _some_weight(
            ("tech", "news", "risk"),
            "tech, news and risk are all 0; expected at least one of them > 0 "
            "(the RL analyst cannot vote alone)",
        ),
    )

    def as_tuple(self) -> tuple[float, float, float, float]:
        """The weights in ``ANALYSTS`` order (tech, news, risk, rl), as written."""
        return (self.tech, self.news, self.risk, self.rl)


@dataclass(frozen=True)
class RlPolicyConfig(_Checked):
    """The RL analyst: an ONNX policy (found when the strategy is loaded, loaded by the caller).

    ``model_path`` is the path as written (``to_dict`` keeps it); ``model_file`` is the
    absolute ``.onnx`` file it resolved to, set by the loader when ``enabled`` (else ``None``).

    ``mode`` (one of ``voter``, ``sole``, ``filter``): how the policy's vote makes the
    decision (``otonom_runtime.vote``): the 4th voter, the sole decider, or a filter on the
    three analysts' vote; ``filter_veto`` (``opposite``, ``differs`` or ``off``) and
    ``filter_size`` tune ``filter``. With the RL analyst off, or on a day it falls back, every
    mode is the three analysts' vote.
    """

    enabled: bool = field(default=False, metadata=NO_RULE)
    model_path: str | None = field(default=None, metadata=rule(nonempty=True))
    device: str = field(default="cpu", metadata=rule(choices=tuple(DEVICES)))
    mode: str = field(default="voter", metadata=rule(choices=RL_MODES))
    filter_veto: str = field(default="opposite", metadata=rule(choices=FILTER_VETOES))
    filter_size: bool = field(default=False, metadata=NO_RULE)
    model_file: Path | None = field(default=None, compare=False, metadata=DERIVED_META)


@dataclass(frozen=True)
class EnsembleConfig(_Checked):
    """How the analysts' votes are combined.

    ``enabled: false`` means only the tech analyst decides (a simple baseline). ``min_score``
    (in [0, 1]) is the winning action's share of the total voting weight needed to act; below
    it the ensemble HOLDs.
    """

    enabled: bool = field(default=True, metadata=NO_RULE)
    analyst_weights: AnalystWeights = field(default_factory=AnalystWeights)
    min_score: float = field(default=0.5, metadata=rule(ge=0, le=1))
    rl_policy: RlPolicyConfig = field(default_factory=RlPolicyConfig)


@dataclass(frozen=True)
class TechWeights(_Checked):
    """Weights of the tech analyst's signals (each >= 0, sum > 0)."""

    trend: float = field(default=1.0, metadata=rule(ge=0, le=_MAX_WEIGHT))
    rsi: float = field(default=0.5, metadata=rule(ge=0, le=_MAX_WEIGHT))
    macd: float = field(default=1.0, metadata=rule(ge=0, le=_MAX_WEIGHT))

    __cross_checks__ = (
        _some_weight(
            ("trend", "rsi", "macd"),
            "trend, rsi and macd are all 0; expected weights with a sum > 0",
        ),
    )


@dataclass(frozen=True)
class TechConfig(_Checked):
    """The technical analyst (features of the state are in the schema's scaled units).

    ``trend_window``: the number of recent returns the trend is averaged over (int in [2, 20]);
    ``trend_threshold`` (> 0): the averaged trend beyond which it votes; ``rsi_oversold`` in
    (0, 0.5) and ``rsi_overbought`` in (0.5, 1), so always above ``rsi_oversold`` (RSI as a
    fraction); ``macd_threshold`` (>= 0); ``entry_threshold`` in (0, 1]: the weighted signal
    score needed to vote BUY/SELL.
    """

    trend_window: int = field(default=10, metadata=rule(ge=2, le=20))
    trend_threshold: float = field(default=0.10, metadata=rule(gt=0))
    rsi_oversold: float = field(default=0.30, metadata=rule(gt=0, lt=0.5))
    rsi_overbought: float = field(default=0.70, metadata=rule(gt=0.5, lt=1))
    macd_threshold: float = field(default=0.10, metadata=rule(ge=0))
    weights: TechWeights = field(default_factory=TechWeights)
    entry_threshold: float = field(default=0.30, metadata=rule(gt=0, le=1))


@dataclass(frozen=True)
class NewsConfig(_Checked):
    """The news analyst: ``news_weight`` x news sentiment + ``macro_weight`` x macro sentiment
    (each >= 0, sum > 0); votes when the blend's magnitude reaches ``threshold`` (in (0, 1])."""

    news_weight: float = field(default=0.6, metadata=rule(ge=0, le=_MAX_WEIGHT))
    macro_weight: float = field(default=0.4, metadata=rule(ge=0, le=_MAX_WEIGHT))
    threshold: float = field(default=0.20, metadata=rule(gt=0, le=1))

    __cross_checks__ = (
        _some_weight(
            ("news_weight", "macro_weight"),
            "news_weight and macro_weight are both 0; expected a sum > 0",
        ),
    )


@dataclass(frozen=True)
class RiskConfig(_Checked):
    """The risk/regime analyst.

    ``drawdown_window`` (int in [2, 20]: the state holds 20 returns): recent returns the price
    peak is taken over; ``max_drawdown`` in (0, 1):
    price drawdown from that peak (a fraction) beyond which risk votes SELL;
    ``high_vol_exposure`` in [0, 1]: position size multiplier in the high-volatility regime;
    ``exit_in_high_vol``: in high volatility and beyond ``max_drawdown``, vote SELL at full
    strength.
    """

    drawdown_window: int = field(default=20, metadata=rule(ge=2, le=20))
    max_drawdown: float = field(default=0.15, metadata=rule(gt=0, lt=1))
    high_vol_exposure: float = field(default=0.5, metadata=rule(ge=0, le=1))
    exit_in_high_vol: bool = field(default=True, metadata=NO_RULE)


@dataclass(frozen=True)
class AnalystsConfig(_Checked):
    """The parameters of the rule-based analysts."""

    tech: TechConfig = field(default_factory=TechConfig)
    news: NewsConfig = field(default_factory=NewsConfig)
    risk: RiskConfig = field(default_factory=RiskConfig)


@dataclass(frozen=True)
class PortfolioConfig(_Checked):
    """``initial_capital`` (in (0, 1e15], quote currency), ``max_leverage`` (gross exposure /
    equity, in (0, 4], 4 = the state schema's MAX_LEVERAGE) and whether short positions are
    allowed."""

    initial_capital: float = field(default=10000.0, metadata=rule(gt=0, le=_MAX_CAPITAL))
    max_leverage: float = field(default=1.0, metadata=rule(gt=0, le=_MAX_LEVERAGE))
    allow_short: bool = field(default=True, metadata=NO_RULE)


@dataclass(frozen=True)
class CostsConfig(_Checked):
    """Trading costs in basis points of the traded notional (1 bps = 0.01 %), each in
    [0, 10000] (10000 bps = 100 %)."""

    commission_bps: float = field(default=10.0, metadata=rule(ge=0, le=_MAX_BPS))
    slippage_bps: float = field(default=5.0, metadata=rule(ge=0, le=_MAX_BPS))


CALENDAR_AUTO: Final = "auto"
"""``calendar.periods_per_year: auto``: the bars per year come from the bars' dates."""
_DENSE: Final = 0.85  # bars on more than 85 % of the calendar days: every day trades


def infer_periods_per_year(dates: npt.ArrayLike) -> int:
    """252 or 365 from daily bar dates: 365 when the distinct dates cover more than 85 % of
    the calendar days from the first to the last (a bar every day: crypto), else 252
    (weekday-only data: stocks, indices, about 5 of 7 days). Fewer than two dates: 365."""
    days = np.unique(np.asarray(dates, dtype="datetime64[D]"))
    if days.size < 2:
        return 365
    span = int((days[-1] - days[0]).astype(np.int64)) + 1
    return 365 if days.size > _DENSE * span else 252


@dataclass(frozen=True)
class CalendarConfig(_Checked):
    """``periods_per_year``: bars per year for annualising: 252 (trading days), 365 (crypto
    trades every day) or ``auto`` (the default: inferred from the bars' dates when a backtest
    runs, see ``infer_periods_per_year``)."""

    periods_per_year: int | str = field(
        default=CALENDAR_AUTO, metadata=rule(choices=(252, 365, CALENDAR_AUTO))
    )

    def resolve(self, dates: npt.ArrayLike) -> int:
        """The bars per year: the configured number, or for ``auto`` inferred from ``dates``."""
        ppy = self.periods_per_year
        return ppy if isinstance(ppy, int) else infer_periods_per_year(dates)


_SOURCE_RULE: Final = rule(
    test=is_source_name, described=f"null or a sentiment source name: {SOURCE_NAME_RULE}"
)


@dataclass(frozen=True)
class DataConfig(_Checked):
    """Which stored sentiment the strategy reads (every row carries its source).

    ``news_source`` / ``macro_source``: a source name (``user``: imported with ``otonom data
    import-sentiment``; ``synthetic``: the synthetic market's; or a name given there with
    ``--source``), or null (the default): by the symbol's kind, ``synthetic`` for a synthetic
    symbol and ``user`` for a real one (``otonom_runtime.store.sentiment_source``).
    """

    news_source: str | None = field(default=None, metadata=_SOURCE_RULE)
    macro_source: str | None = field(default=None, metadata=_SOURCE_RULE)


@dataclass(frozen=True)
class MonitoringConfig(_Checked):
    """Thresholds of ``otonom monitor`` (``otonom_runtime.monitor``).

    ``psi_warn`` < ``psi_alert`` (> 0): population stability index of the action mix and of
    each feature group against the training summary that warns / alerts (0.1 / 0.25, the usual
    rule of thumb); ``chi2_p_value`` in (0, 1): the action mix's chi-square p-value below
    which it alerts when its PSI is at ``psi_warn`` or more (warns when smaller);
    ``min_hit_rate`` in [0, 1]: the share of the model's BUY/SELL calls that must be right
    ``horizon`` bars later (int in [1, 60]); ``min_rows`` (int >= 1): fewer rows (or calls)
    than this in a scope are reported but not judged. ``max_fallback_rate`` in [0, 1]: the
    share of decisions made without the RL analyst while it was on above which it alerts (0.05);
    ``max_latency_ms`` (> 0): the daemon's p99 predict latency above which it alerts (250);
    ``max_rl_sharpe_loss`` (>= 0): how far the Sharpe with the RL analyst may fall below the
    Sharpe of the three analysts alone before it alerts (0.5).
    """

    psi_warn: float = field(default=0.10, metadata=rule(gt=0, le=10))
    psi_alert: float = field(default=0.25, metadata=rule(gt=0, le=10))
    chi2_p_value: float = field(default=0.001, metadata=rule(gt=0, lt=1))
    min_hit_rate: float = field(default=0.45, metadata=rule(ge=0, le=1))
    horizon: int = field(default=1, metadata=rule(ge=1, le=60))
    min_rows: int = field(default=50, metadata=rule(ge=1))
    max_fallback_rate: float = field(default=0.05, metadata=rule(ge=0, le=1))
    max_latency_ms: float = field(default=250.0, metadata=rule(gt=0, le=1e6))
    max_rl_sharpe_loss: float = field(default=0.5, metadata=rule(ge=0, le=100))

    __cross_checks__ = (
        CrossCheck(
            lambda v: v["psi_alert"] > v["psi_warn"],
            lambda v: (
                f"psi_alert {v['psi_alert']:g} is not above psi_warn {v['psi_warn']:g}; "
                "expected psi_warn < psi_alert"
            ),
        ),
    )


@dataclass(frozen=True)
class StrategyConfig(_Checked):
    """A whole strategy file.

    ``source`` (the file path or ``"<dict>"``), ``file_sha256`` (sha256 of the file's bytes, or
    of the canonical JSON of the mapping given to ``parse_strategy``) and ``base_dir`` (the
    strategy file's folder, which the models root is found from) describe where it came from;
    they are not compared and not part of ``to_dict``.
    """

    name: str = field(default="strategy", metadata=rule(nonempty=True))
    description: str = field(default="", metadata=NO_RULE)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    analysts: AnalystsConfig = field(default_factory=AnalystsConfig)
    portfolio: PortfolioConfig = field(default_factory=PortfolioConfig)
    costs: CostsConfig = field(default_factory=CostsConfig)
    calendar: CalendarConfig = field(default_factory=CalendarConfig)
    data: DataConfig = field(default_factory=DataConfig)
    monitoring: MonitoringConfig = field(default_factory=MonitoringConfig)
    source: str = field(default=DICT_SOURCE, compare=False, metadata=DERIVED_META)
    file_sha256: str = field(default="", compare=False, metadata=DERIVED_META)
    base_dir: Path | None = field(default=None, compare=False, metadata=DERIVED_META)

    @property
    def rl_enabled(self) -> bool:
        """Whether the RL analyst votes (``ensemble.rl_policy.enabled``)."""
        return self.ensemble.rl_policy.enabled

    def to_dict(self) -> dict[str, Any]:
        """Every setting as plain JSON-able data (``parse_strategy`` reads it back)."""
        out = to_plain(self)
        assert isinstance(out, dict)
        return out

    def weights_array(self) -> npt.NDArray[np.float64]:
        """A new float64 array of the analysts' weights in ``ANALYSTS`` order (tech, news, risk,
        rl), rl set to 0.0 while ``ensemble.rl_policy.enabled`` is false.

        ``ensemble.enabled`` is not applied here (the caller lets the tech analyst decide alone).
        """
        weights = list(self.ensemble.analyst_weights.as_tuple())
        if not self.rl_enabled:
            weights[3] = 0.0
        return np.array(weights, dtype=np.float64)

    def with_rl(self, enabled: bool) -> StrategyConfig:
        """A copy with the RL analyst switched on or off (``source`` and ``file_sha256`` still
        name the original file).

        Switching it on resolves ``model_path`` as the loader does and raises ``StrategyError``
        when there is no model.
        """
        rl = self.ensemble.rl_policy
        if not enabled:
            rl = dataclasses.replace(rl, enabled=False, model_file=None)
        elif not rl.enabled or rl.model_file is None:
            on = dataclasses.replace(rl, enabled=True, model_file=None)
            problems: list[Problem] = []
            rl = resolve_rl(on, self.base_dir, problems)
            if problems:
                raise error(problems, self.source, {})
        ensemble = dataclasses.replace(self.ensemble, rl_policy=rl)
        return dataclasses.replace(self, ensemble=ensemble)
