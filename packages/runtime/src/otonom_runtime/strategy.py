"""Strategy files: YAML in the guide's format, loaded into frozen, validated config objects.

::

    cfg = load_strategy("strategies/baseline_v1.yaml")   # StrategyConfig (frozen)
    cfg.ensemble.analyst_weights.news                     # 1.0
    cfg.weights_array()                                   # float64 (tech, news, risk, rl)
    cfg.with_rl(False)                                    # the same strategy, RL analyst off
    cfg.to_dict()                                         # JSON-able; parse_strategy(...) reads it

Every key has a default (see the dataclasses below and ``strategies/baseline_v1.yaml``), so a
file only spells out what it changes. Unknown keys, wrong types (``true`` is not a number; an
integer is fine where a number is expected, but 10.0 or 2.5 is not an integer) and
values out of range are errors. ``load_strategy``/``parse_strategy`` check everything and raise
one ``StrategyError`` listing every problem, each as ``FILE[:LINE]: key.path: what was received,
what was expected``.

A section that is present but empty (``analysts:`` with every child commented out) means "all
defaults". With ``ensemble.rl_policy.enabled: true`` the model must resolve (``model_path``
accepts whatever ``otonom_runtime.policy.resolve_model_path`` accepts: a ``.onnx`` file, a model
folder, or a ``policy_best.pt`` path standing for the ``.onnx`` beside it) inside the models
root: ``$OTONOM_MODELS_ROOT`` if set, else the project root found from the strategy file (the
nearest folder holding ``models/``, see ``models_root``). A relative path resolves against that
root, never the bare working directory, and the model must stay inside it after symlinks are
resolved (``resolve_strategy_model``). The model file is found, not loaded:
``RlPolicyConfig.model_file`` is the ``.onnx`` to give to ``load_rl_policy``.

Validation lives in one place: every field carries its rule (``_rule(...)`` in its metadata), a
few rules span fields (``_CROSS_CHECKS``), and one converter (``_convert``) applies them for
parsing while ``__post_init__`` applies the same rules to objects built directly.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import numbers
import os
import stat
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

import numpy as np
import numpy.typing as npt

from otonom_runtime._errors import PolicyError, StrategyError
from otonom_runtime._sources import SOURCE_NAME_RULE, is_source_name
from otonom_runtime.ensemble import ANALYSTS  # also the order of weights_array()
from otonom_runtime.policy import DEVICES, resolve_model_path
from otonom_schema import MATHS_PARAMS

__all__ = [
    "ANALYSTS",
    "CALENDAR_AUTO",
    "DICT_SOURCE",
    "MODELS_ROOT_ENV",
    "AnalystWeights",
    "AnalystsConfig",
    "CalendarConfig",
    "CostsConfig",
    "DataConfig",
    "EnsembleConfig",
    "NewsConfig",
    "PortfolioConfig",
    "RiskConfig",
    "RlPolicyConfig",
    "StrategyConfig",
    "TechConfig",
    "TechWeights",
    "infer_periods_per_year",
    "load_strategy",
    "models_root",
    "parse_strategy",
    "resolve_strategy_model",
]


DICT_SOURCE: Final = "<dict>"
"""``StrategyConfig.source`` of a strategy parsed from a mapping."""
_MAX_LEVERAGE: Final = float(MATHS_PARAMS["MAX_LEVERAGE"])
_MAX_WEIGHT: Final = 1000.0  # every weight (analysts, tech signals, news blend)
_MAX_BPS: Final = 10_000.0  # a cost of 100 % of the traded notional
_MAX_CAPITAL: Final = 1e15
# structural limits of a strategy file (no clocks): checked before / while parsing
_MAX_FILE_BYTES: Final = 1 << 20  # 1 MiB, checked before reading
_MAX_DEPTH: Final = 32  # nested mappings/lists
_MAX_NODES: Final = 100_000  # scalars + collections in the file
_RULE: Final = "otonom.rule"
_DERIVED: Final = "otonom.derived"

_T = TypeVar("_T")


# --- rules -------------------------------------------------------------------------------------


def _num(x: object) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


@dataclass(frozen=True)
class _Rule:
    """The allowed values of one field beyond its type: bounds, a set of choices, non-empty,
    or a named test (``test`` and the ``described`` values it allows)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[object, ...] | None = None
    nonempty: bool = False
    test: Callable[[Any], bool] | None = None
    described: str = ""

    def expected(self) -> str:
        if self.test is not None:
            return self.described
        if self.choices is not None:
            return "one of " + ", ".join(_num(c) for c in self.choices)
        if self.nonempty:
            return "non-empty text"
        lo = f"[{_num(self.ge)}" if self.ge is not None else f"({_num(self.gt)}"
        hi = f"{_num(self.le)}]" if self.le is not None else f"{_num(self.lt)})"
        has_lo = self.ge is not None or self.gt is not None
        has_hi = self.le is not None or self.lt is not None
        if has_lo and has_hi:
            return f"a value in {lo}, {hi}"
        if self.ge is not None:
            return f"a value >= {_num(self.ge)}"
        if self.gt is not None:
            return f"a value > {_num(self.gt)}"
        if self.le is not None:
            return f"a value <= {_num(self.le)}"
        return f"a value < {_num(self.lt)}"

    def allows(self, v: Any) -> bool:
        if self.test is not None:
            return self.test(v)
        if self.choices is not None:
            return v in self.choices
        if self.nonempty:
            return bool(str(v).strip())
        return (
            (self.ge is None or v >= self.ge)
            and (self.gt is None or v > self.gt)
            and (self.le is None or v <= self.le)
            and (self.lt is None or v < self.lt)
        )

    @property
    def empty(self) -> bool:
        return self == _Rule()


def _rule(
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: tuple[object, ...] | None = None,
    nonempty: bool = False,
    test: Callable[[Any], bool] | None = None,
    described: str = "",
) -> dict[str, _Rule]:
    """The metadata of a dataclass field whose values obey this rule."""
    return {_RULE: _Rule(ge, gt, le, lt, choices, nonempty, test, described)}


_NO_RULE: Final = {_RULE: _Rule()}
_DERIVED_META: Final = {_DERIVED: True}
"""Metadata of a field that is not read from YAML nor written by ``to_dict`` (set by the
loader); such fields are also left out of comparisons."""


class _Checked:
    """Base of the config dataclasses: ``__post_init__`` checks and normalises every field.

    Objects built directly (or by ``dataclasses.replace``) obey the same rules as parsed ones;
    ints given for float fields become floats.
    """

    def __post_init__(self) -> None:
        problems: list[_Problem] = []
        values: dict[str, Any] = {}
        name = type(self).__name__
        for f in _fields(type(self)):
            value = getattr(self, f.name)
            section = _section_type(f.type)
            if section is not None:
                if not isinstance(value, section):
                    problems.append(
                        _Problem(
                            f"{name}.{f.name}",
                            f"received {_show(value)}, expected a {section.__name__}",
                        )
                    )
                values[f.name] = value
                continue
            converted, message = _check_value(value, f.type, f.rule)
            if message is not None:
                problems.append(_Problem(f"{name}.{f.name}", message))
            elif converted is not value:
                object.__setattr__(self, f.name, converted)
            values[f.name] = converted
        if not problems:
            problems.extend(_cross_problems(type(self), values, name))
        if problems:
            lines = [p.text("", {}) for p in problems]
            raise StrategyError("\n  ".join([f"invalid {name}:", *lines]), lines)


# --- the config objects ------------------------------------------------------------------------


@dataclass(frozen=True)
class AnalystWeights(_Checked):
    """Voting weight of each analyst (each in [0, 1000]; at least one of tech/news/risk > 0).

    A weight missing from the file is 1.0. The RL analyst's weight counts only while
    ``ensemble.rl_policy.enabled`` (see ``StrategyConfig.weights_array``).
    """

    tech: float = field(default=1.0, metadata=_rule(ge=0, le=_MAX_WEIGHT))
    news: float = field(default=1.0, metadata=_rule(ge=0, le=_MAX_WEIGHT))
    risk: float = field(default=1.0, metadata=_rule(ge=0, le=_MAX_WEIGHT))
    rl: float = field(default=1.0, metadata=_rule(ge=0, le=_MAX_WEIGHT))

    def as_tuple(self) -> tuple[float, float, float, float]:
        """The weights in ``ANALYSTS`` order (tech, news, risk, rl), as written."""
        return (self.tech, self.news, self.risk, self.rl)


@dataclass(frozen=True)
class RlPolicyConfig(_Checked):
    """The RL analyst: an ONNX policy (found when the strategy is loaded, loaded by the caller).

    ``model_path`` is the path as written (``to_dict`` keeps it); ``model_file`` is the
    absolute ``.onnx`` file it resolved to, set by the loader when ``enabled`` (else ``None``).
    """

    enabled: bool = field(default=False, metadata=_NO_RULE)
    model_path: str | None = field(default=None, metadata=_rule(nonempty=True))
    device: str = field(default="cpu", metadata=_rule(choices=tuple(DEVICES)))
    model_file: Path | None = field(default=None, compare=False, metadata=_DERIVED_META)


@dataclass(frozen=True)
class EnsembleConfig(_Checked):
    """How the analysts' votes are combined.

    ``enabled: false`` means only the tech analyst decides (a simple baseline). ``min_score``
    (in [0, 1]) is the winning action's share of the total voting weight needed to act; below
    it the ensemble HOLDs.
    """

    enabled: bool = field(default=True, metadata=_NO_RULE)
    analyst_weights: AnalystWeights = field(default_factory=AnalystWeights)
    min_score: float = field(default=0.5, metadata=_rule(ge=0, le=1))
    rl_policy: RlPolicyConfig = field(default_factory=RlPolicyConfig)


@dataclass(frozen=True)
class TechWeights(_Checked):
    """Weights of the tech analyst's signals (each >= 0, sum > 0)."""

    trend: float = field(default=1.0, metadata=_rule(ge=0, le=_MAX_WEIGHT))
    rsi: float = field(default=0.5, metadata=_rule(ge=0, le=_MAX_WEIGHT))
    macd: float = field(default=1.0, metadata=_rule(ge=0, le=_MAX_WEIGHT))


@dataclass(frozen=True)
class TechConfig(_Checked):
    """The technical analyst (features of the state are in the schema's scaled units).

    ``trend_window``: the number of recent returns the trend is averaged over (int in [2, 20]);
    ``trend_threshold`` (> 0): the averaged trend beyond which it votes; ``rsi_oversold`` in
    (0, 0.5) and ``rsi_overbought`` in (0.5, 1), so always above ``rsi_oversold`` (RSI as a
    fraction); ``macd_threshold`` (>= 0); ``entry_threshold`` in (0, 1]: the weighted signal
    score needed to vote BUY/SELL.
    """

    trend_window: int = field(default=10, metadata=_rule(ge=2, le=20))
    trend_threshold: float = field(default=0.10, metadata=_rule(gt=0))
    rsi_oversold: float = field(default=0.30, metadata=_rule(gt=0, lt=0.5))
    rsi_overbought: float = field(default=0.70, metadata=_rule(gt=0.5, lt=1))
    macd_threshold: float = field(default=0.10, metadata=_rule(ge=0))
    weights: TechWeights = field(default_factory=TechWeights)
    entry_threshold: float = field(default=0.30, metadata=_rule(gt=0, le=1))


@dataclass(frozen=True)
class NewsConfig(_Checked):
    """The news analyst: ``news_weight`` x news sentiment + ``macro_weight`` x macro sentiment
    (each >= 0, sum > 0); votes when the blend's magnitude reaches ``threshold`` (in (0, 1])."""

    news_weight: float = field(default=0.6, metadata=_rule(ge=0, le=_MAX_WEIGHT))
    macro_weight: float = field(default=0.4, metadata=_rule(ge=0, le=_MAX_WEIGHT))
    threshold: float = field(default=0.20, metadata=_rule(gt=0, le=1))


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

    drawdown_window: int = field(default=20, metadata=_rule(ge=2, le=20))
    max_drawdown: float = field(default=0.15, metadata=_rule(gt=0, lt=1))
    high_vol_exposure: float = field(default=0.5, metadata=_rule(ge=0, le=1))
    exit_in_high_vol: bool = field(default=True, metadata=_NO_RULE)


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

    initial_capital: float = field(default=10000.0, metadata=_rule(gt=0, le=_MAX_CAPITAL))
    max_leverage: float = field(default=1.0, metadata=_rule(gt=0, le=_MAX_LEVERAGE))
    allow_short: bool = field(default=True, metadata=_NO_RULE)


@dataclass(frozen=True)
class CostsConfig(_Checked):
    """Trading costs in basis points of the traded notional (1 bps = 0.01 %), each in
    [0, 10000] (10000 bps = 100 %)."""

    commission_bps: float = field(default=10.0, metadata=_rule(ge=0, le=_MAX_BPS))
    slippage_bps: float = field(default=5.0, metadata=_rule(ge=0, le=_MAX_BPS))


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
        default=CALENDAR_AUTO, metadata=_rule(choices=(252, 365, CALENDAR_AUTO))
    )

    def resolve(self, dates: npt.ArrayLike) -> int:
        """The bars per year: the configured number, or for ``auto`` inferred from ``dates``."""
        ppy = self.periods_per_year
        return ppy if isinstance(ppy, int) else infer_periods_per_year(dates)


_SOURCE_RULE: Final = _rule(
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
class StrategyConfig(_Checked):
    """A whole strategy file.

    ``source`` (the file path or ``"<dict>"``), ``file_sha256`` (sha256 of the file's bytes, or
    of the canonical JSON of the mapping given to ``parse_strategy``) and ``base_dir`` (the
    strategy file's folder, which the models root is found from) describe where it came from;
    they are not compared and not part of ``to_dict``.
    """

    name: str = field(default="strategy", metadata=_rule(nonempty=True))
    description: str = field(default="", metadata=_NO_RULE)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    analysts: AnalystsConfig = field(default_factory=AnalystsConfig)
    portfolio: PortfolioConfig = field(default_factory=PortfolioConfig)
    costs: CostsConfig = field(default_factory=CostsConfig)
    calendar: CalendarConfig = field(default_factory=CalendarConfig)
    data: DataConfig = field(default_factory=DataConfig)
    source: str = field(default=DICT_SOURCE, compare=False, metadata=_DERIVED_META)
    file_sha256: str = field(default="", compare=False, metadata=_DERIVED_META)
    base_dir: Path | None = field(default=None, compare=False, metadata=_DERIVED_META)

    @property
    def rl_enabled(self) -> bool:
        """Whether the RL analyst votes (``ensemble.rl_policy.enabled``)."""
        return self.ensemble.rl_policy.enabled

    def to_dict(self) -> dict[str, Any]:
        """Every setting as plain JSON-able data (``parse_strategy`` reads it back)."""
        out = _to_dict(self)
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
            problems: list[_Problem] = []
            rl = _resolve_rl(on, self.base_dir, problems)
            if problems:
                raise StrategyError(
                    _format(problems, self.source, {}),
                    [p.text(self.source, {}) for p in problems],
                )
        ensemble = dataclasses.replace(self.ensemble, rl_policy=rl)
        return dataclasses.replace(self, ensemble=ensemble)


# --- the converter -----------------------------------------------------------------------------

_CrossCheck = tuple[Callable[[Mapping[str, Any]], bool], str]

_CROSS_CHECKS: Final[dict[type, tuple[_CrossCheck, ...]]] = {
    # rules on a whole section: (passes(values of its fields), "what is wrong; what is expected")
    AnalystWeights: (
        (
            lambda v: v["tech"] + v["news"] + v["risk"] > 0,
            "tech, news and risk are all 0; expected at least one of them > 0 "
            "(the RL analyst cannot vote alone)",
        ),
    ),
    TechWeights: (
        (
            lambda v: v["trend"] + v["rsi"] + v["macd"] > 0,
            "trend, rsi and macd are all 0; expected weights with a sum > 0",
        ),
    ),
    NewsConfig: (
        (
            lambda v: v["news_weight"] + v["macro_weight"] > 0,
            "news_weight and macro_weight are both 0; expected a sum > 0",
        ),
    ),
}


@dataclass(frozen=True)
class _Field:
    name: str
    type: Any
    rule: _Rule
    default: Any


_FIELDS: dict[type, tuple[_Field, ...]] = {}  # filled on first use of each class


def _fields(cls: type) -> tuple[_Field, ...]:
    """The YAML fields of a config class (derived ones left out), types resolved."""
    if cls not in _FIELDS:
        hints = typing.get_type_hints(cls)
        out = []
        for f in dataclasses.fields(cls):
            if f.metadata.get(_DERIVED):
                continue
            factory: Any = f.default_factory
            default = factory() if f.default is dataclasses.MISSING else f.default
            out.append(_Field(f.name, hints[f.name], f.metadata.get(_RULE, _Rule()), default))
        _FIELDS[cls] = tuple(out)
    return _FIELDS[cls]


def _section_type(tp: object) -> type | None:
    """``tp`` when it is a nested config section (a dataclass), else None."""
    return tp if isinstance(tp, type) and dataclasses.is_dataclass(tp) else None


@dataclass(frozen=True)
class _Problem:
    path: str
    message: str

    def text(self, source: str, lines: Mapping[str, int]) -> str:
        line = _line_of(self.path, lines)
        where = f"{source}:{line}" if line else source
        parts = [part for part in (where, self.path, self.message) if part]
        return ": ".join(parts)


def _show(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"text {value!r}"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, numbers.Number):
        return _num(value)
    return f"{value!r} ({type(value).__name__})"


def _check_value(value: Any, tp: Any, rule: _Rule) -> tuple[Any, str | None]:
    """``(converted value, None)`` or ``(value, "received ..., expected ...")``."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(options) > 1:  # ``int | str``: the exact type must be one of them, the rule's
            # choices say which values (bool is not an int here)
            if type(value) in options and rule.allows(value):
                return value, None
            return value, f"received {_show(value)}, expected {rule.expected()}"
        if value is None:
            return None, None
        tp = options[0]
        what = {str: "text or null"}.get(tp, "a value or null")
    else:
        what = {bool: "true or false", int: "an integer", float: "a number", str: "text"}[tp]
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        if ok:
            value = int(value)
    elif tp is float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if ok:
            value = float(value)
            if not math.isfinite(value):
                return value, f"received {_show(value)}, expected a finite number"
    else:
        ok = isinstance(value, tp)
    if not ok:
        hint = ""
        if tp is float and isinstance(value, str) and _is_float_text(value):
            hint = " (YAML reads 1e-3 as text: write 1.0e-3)"
        return value, f"received {_show(value)}, expected {what}{hint}"
    if not rule.empty and not rule.allows(value):
        return value, f"received {_show(value)}, expected {rule.expected()}"
    return value, None


def _is_float_text(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _cross_problems(cls: type, values: Mapping[str, Any], path: str) -> list[_Problem]:
    return [
        _Problem(path, message)
        for passes, message in _CROSS_CHECKS.get(cls, ())
        if not passes(values)
    ]


def _convert(cls: type[_T], raw: object, path: str, problems: list[_Problem]) -> _T | None:
    """``cls`` built from ``raw`` (a mapping; None = all defaults), or None after adding every
    problem found to ``problems``."""
    spec = _fields(cls)
    names = [f.name for f in spec]
    if raw is None and path:  # an empty section: all defaults
        raw = {}
    if not isinstance(raw, Mapping):
        where = path or "the top level"
        problems.append(
            _Problem(path, f"received {_show(raw)}, expected a mapping (keys: {', '.join(names)})")
            if path
            else _Problem("", f"{where} is {_show(raw)}; expected a mapping")
        )
        return None
    ok = True
    for key in raw:
        if key not in names:
            ok = False
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(
                _Problem(
                    _join(path, key),
                    f"unknown key; expected one of {', '.join(names)}{hint}",
                )
            )
    values: dict[str, Any] = {}
    for f in spec:
        if f.name not in raw:
            values[f.name] = f.default
            continue
        sub = _join(path, f.name)
        section = _section_type(f.type)
        if section is not None:
            child = _convert(section, raw[f.name], sub, problems)
            ok = ok and child is not None
            values[f.name] = child
            continue
        converted, message = _check_value(raw[f.name], f.type, f.rule)
        if message is not None:
            ok = False
            problems.append(_Problem(sub, message))
        values[f.name] = converted
    if not ok:
        return None
    cross = _cross_problems(cls, values, path)
    if cross:
        problems.extend(cross)
        return None
    return cls(**values)


def _to_dict(obj: object) -> object:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _to_dict(getattr(obj, f.name)) for f in _fields(type(obj))}
    return obj


MODELS_ROOT_ENV: Final = "OTONOM_MODELS_ROOT"
"""The environment variable naming the models root (an absolute folder) for every strategy;
unset, the root is found from the strategy file (see ``models_root``)."""
_MODELS_DIR: Final = "models"
_MODEL_SUFFIX: Final = ".onnx"


def _world_writable(folder: Path) -> bool:
    try:
        return bool(folder.stat().st_mode & stat.S_IWOTH)
    except OSError:
        return True  # unknown: not trusted as a root either


def _root_from_env() -> Path | None:
    value = os.environ.get(MODELS_ROOT_ENV, "")
    if not value:
        return None
    given = Path(value).expanduser()
    if not given.is_absolute():
        raise StrategyError(
            f"{MODELS_ROOT_ENV}={value!r} is a relative path; expected the absolute path of "
            "the folder that holds the models (or unset it to use the project root found from "
            "the strategy file)"
        )
    if not given.is_dir():
        raise StrategyError(
            f"{MODELS_ROOT_ENV}={value!r} is not a folder; expected an existing folder that "
            "holds the models (or unset it)"
        )
    return given.resolve()


def models_root(base_dir: str | os.PathLike[str] | None) -> Path:
    """The folder a strategy's model paths resolve against and must stay inside (resolved,
    absolute).

    ``$OTONOM_MODELS_ROOT`` when set (an absolute folder); else the nearest of ``base_dir``
    (the strategy file's folder; the working directory for a mapping parsed without one) and
    its ancestors that holds a ``models/`` folder: the project root, so
    ``strategies/ensemble_rl_v1.yaml``'s ``models/rl_bc`` is the project's ``models/rl_bc``
    whatever the working directory. The climb stops below a folder anyone may write to (such
    as ``/tmp``), where anyone could plant a ``models/``. With no such ancestor the root is
    ``base_dir`` itself. Raises ``StrategyError`` for a relative or missing
    ``$OTONOM_MODELS_ROOT``.
    """
    return _find_root(base_dir)[0]


def _find_root(base_dir: str | os.PathLike[str] | None) -> tuple[Path, str]:
    """``models_root(base_dir)`` and how it was found (for messages)."""
    env = _root_from_env()
    if env is not None:
        return env, f"from {MODELS_ROOT_ENV}"
    start = (Path.cwd() if base_dir is None else Path(base_dir)).resolve()
    for folder in (start, *start.parents):
        if folder != start and _world_writable(folder):
            break
        if (folder / _MODELS_DIR).is_dir():
            return folder, f"the nearest folder holding {_MODELS_DIR}/, from {start}"
    what = "the working directory" if base_dir is None else "the strategy's folder"
    return start, f"{what}: no folder up from it holds {_MODELS_DIR}/"


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def resolve_strategy_model(
    model_path: str | os.PathLike[str], base_dir: str | os.PathLike[str] | None
) -> Path:
    """The ``.onnx`` file a strategy's ``ensemble.rl_policy.model_path`` stands for (absolute,
    symlinks resolved); nothing is read but pointer files.

    A relative ``model_path`` resolves against ``models_root(base_dir)``, never the working
    directory (unless that is ``base_dir``); an absolute one must be inside that root. It may
    name what ``otonom_runtime.policy.resolve_model_path`` accepts: a ``.onnx`` file, a model
    folder (its ``latest`` / ``default`` pointer), or a ``policy_best.pt`` path standing for
    the ``.onnx`` export beside it (or the promoted version's). After symlinks are resolved the
    model must still be inside the root (no ``..`` or symlink leads out of it) and be a regular
    ``*.onnx`` file. ``load_rl_policy(path)`` called directly keeps ordinary path rules.

    Raises ``StrategyError`` saying what was given, the root, and how to set another root
    (``$OTONOM_MODELS_ROOT``).
    """
    try:
        root, how = _find_root(base_dir)
    except StrategyError as exc:  # a bad $OTONOM_MODELS_ROOT
        message = f"received {str(model_path)!r}, which resolves to no model: {exc}"
        raise StrategyError(message, [message]) from None
    given = Path(model_path).expanduser()

    def refuse(problem: str) -> StrategyError:
        message = (
            f"received {str(model_path)!r}, which resolves to no model: {problem}; "
            "expected a .onnx file, a model folder or a policy_best.pt path with the .onnx "
            f"export beside it, inside the models root {root} ({how}), which a relative path "
            f"resolves against; to use another root set {MODELS_ROOT_ENV}=/absolute/folder"
        )
        return StrategyError(message, [message])

    candidate = given if given.is_absolute() else root / given
    try:
        lexical = candidate.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise refuse(f"{candidate} cannot be resolved ({exc})") from None
    if not _inside(lexical, root):  # before anything outside is looked at
        real_as = "" if lexical == candidate else f" (that is {lexical})"
        raise refuse(f"{candidate}{real_as} is outside the models root")
    try:
        found = resolve_model_path(candidate)
    except PolicyError as exc:
        raise refuse(str(exc)) from None
    except (OSError, ValueError) as exc:  # an unreadable or binary latest/default pointer
        raise refuse(f"{candidate}: its pointer file cannot be read ({exc})") from None
    try:
        real = found.resolve(strict=True)
        mode = real.stat().st_mode
    except (OSError, RuntimeError) as exc:  # a dangling or looping symlink
        raise refuse(f"{found} cannot be resolved ({exc})") from None
    if not _inside(real, root):
        real_as = "" if real == found else f" (that is {real})"
        raise refuse(f"{found}{real_as} is outside the models root")
    if not stat.S_ISREG(mode):
        raise refuse(f"{real} is not a regular file; expected a {_MODEL_SUFFIX} model file")
    if real.suffix != _MODEL_SUFFIX:
        raise refuse(f"{real} is not a {_MODEL_SUFFIX} file; expected an ONNX model")
    return real


def _resolve_rl(
    rl: RlPolicyConfig, base_dir: Path | None, problems: list[_Problem]
) -> RlPolicyConfig:
    """``rl`` with ``model_file`` set (when enabled), or ``rl`` after adding a problem."""
    key = "ensemble.rl_policy.model_path"
    if not rl.enabled:
        return rl
    if rl.model_path is None:
        problems.append(
            _Problem(
                key,
                "missing; a model path is required when ensemble.rl_policy.enabled is true "
                "(a .onnx file, a model folder or a policy_best.pt path)",
            )
        )
        return rl
    try:
        return dataclasses.replace(rl, model_file=resolve_strategy_model(rl.model_path, base_dir))
    except StrategyError as exc:
        problems.append(
            _Problem(
                key,
                f"{exc} (required while ensemble.rl_policy.enabled is true)",
            )
        )
    return rl


# --- YAML line numbers -------------------------------------------------------------------------


def _key_lines(text: str, problems: list[_Problem]) -> dict[str, int]:
    """The 1-based line of every key path in the YAML ``text``; duplicate keys are problems."""
    import yaml

    lines: dict[str, int] = {}

    def walk(node: yaml.Node, path: str) -> None:
        if not isinstance(node, yaml.MappingNode):
            return
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            sub = _join(path, key_node.value)
            line = key_node.start_mark.line + 1
            if sub in lines:
                problems.append(
                    _Problem(
                        sub,
                        f"duplicate key (also on line {lines[sub]}); expected each key once",
                    )
                )
            lines[sub] = line
            walk(value_node, sub)

    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is not None:
        walk(root, "")
    return lines


def _structure_problem(text: str) -> tuple[int, str] | None:
    """``(line, message)`` of the first structural limit ``text`` breaks, else None.

    Reads the YAML event stream (nothing is built or expanded): anchors and aliases are refused
    outright (so neither an alias bomb nor a recursive alias can be expressed), nesting deeper
    than ``_MAX_DEPTH`` and more than ``_MAX_NODES`` nodes are refused. YAML syntax errors are
    left to the caller (``yaml.YAMLError``).
    """
    import yaml

    depth = nodes = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        mark = event.start_mark
        line = mark.line + 1 if mark is not None else 0
        if isinstance(event, yaml.AliasEvent):
            return line, (
                f"YAML alias *{event.anchor} refused; expected a file without anchors (&) or "
                "aliases (*): write each value out"
            )
        if isinstance(event, yaml.NodeEvent):
            if event.anchor is not None:
                return line, (
                    f"YAML anchor &{event.anchor} refused; expected a file without anchors (&) "
                    "or aliases (*): write each value out"
                )
            nodes += 1
            if nodes > _MAX_NODES:
                return line, f"more than {_MAX_NODES} YAML nodes; expected a smaller file"
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > _MAX_DEPTH:
                return line, (
                    f"YAML nested {depth} levels deep; expected at most {_MAX_DEPTH} levels"
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    return None


def _line_of(path: str, lines: Mapping[str, int]) -> int | None:
    while path:
        if path in lines:
            return lines[path]
        path = path.rpartition(".")[0]
    return None


def _format(problems: list[_Problem], source: str, lines: Mapping[str, int]) -> str:
    n = len(problems)
    head = f"invalid strategy {source} ({n} problem{'s' if n != 1 else ''}):"
    return "\n  ".join([head, *(p.text(source, lines) for p in problems)])


# --- public entry points -----------------------------------------------------------------------


def _dig(data: object, *keys: str) -> object:
    """``data[k1][k2]...``, or None where a level is not a mapping or lacks the key."""
    for key in keys:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


def _parse(
    data: object,
    *,
    source: str,
    sha256: str,
    base_dir: Path | None,
    default_name: str,
    lines: Mapping[str, int],
    problems: list[_Problem],
) -> StrategyConfig:
    if isinstance(data, Mapping) and "name" not in data:
        data = {"name": default_name, **data}
    cfg = _convert(StrategyConfig, data, "", problems)
    # the model is looked for even when other sections are invalid: every problem at once
    rl = _convert(RlPolicyConfig, _dig(data, "ensemble", "rl_policy"), "rl_policy", [])
    if rl is not None:
        rl = _resolve_rl(rl, base_dir, problems)
    if cfg is not None and rl is not None and not problems:
        ensemble = dataclasses.replace(cfg.ensemble, rl_policy=rl)
        return dataclasses.replace(
            cfg, ensemble=ensemble, source=source, file_sha256=sha256, base_dir=base_dir
        )
    raise StrategyError(_format(problems, source, lines), [p.text(source, lines) for p in problems])


def parse_strategy(
    mapping: Mapping[str, Any],
    *,
    source: str = DICT_SOURCE,
    base_dir: str | os.PathLike[str] | None = None,
) -> StrategyConfig:
    """A ``StrategyConfig`` from a mapping shaped like the YAML file (e.g. ``to_dict()``).

    ``source`` names the mapping in messages; ``base_dir`` stands for the strategy file's
    folder: the models root is found from it (``models_root``; without it, from the working
    directory). ``file_sha256`` is the sha256 of the
    mapping's canonical JSON (sorted keys, no spaces). A missing ``name`` is ``"strategy"``.
    Raises ``StrategyError`` listing every problem.
    """
    try:
        canonical = json.dumps(
            mapping, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
        )
    except TypeError:  # keys of mixed types cannot be sorted: the mapping is invalid anyway
        canonical = repr(mapping)
    return _parse(
        mapping,
        source=source,
        sha256=hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
        base_dir=None if base_dir is None else Path(base_dir),
        default_name="strategy",
        lines={},
        problems=[],
    )


def load_strategy(path: str | os.PathLike[str]) -> StrategyConfig:
    """Load and check the strategy YAML file at ``path`` (``yaml.safe_load``, UTF-8).

    A missing ``name`` is the file's stem. The model path resolves inside the models root
    found from the file's folder (``resolve_strategy_model``), whatever the working directory.
    Raises ``StrategyError`` listing every problem (unreadable file, a file over 1 MiB (checked
    before reading), YAML anchors or aliases (refused), nesting deeper than 32 levels, YAML
    syntax error with its line, a top level that is not a mapping, duplicate/unknown keys, wrong
    types, values out of range, a missing model).
    """
    import yaml

    p = Path(path)
    source = str(p)
    try:
        size = p.stat().st_size
        if size > _MAX_FILE_BYTES:
            problem = _Problem(
                "",
                f"the file is {size} bytes; expected a strategy file of at most "
                f"{_MAX_FILE_BYTES} bytes (1 MiB)",
            )
            raise StrategyError(_format([problem], source, {}), [problem.text(source, {})])
        with p.open("rb") as f:  # bounded: a device or a growing file cannot be read whole
            raw = f.read(_MAX_FILE_BYTES + 1)
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        problem = _Problem("", f"cannot read the file ({reason}); expected a UTF-8 YAML file")
        raise StrategyError(_format([problem], source, {}), [problem.text(source, {})]) from None
    if len(raw) > _MAX_FILE_BYTES:  # grew between stat and read, or not a regular file
        problem = _Problem("", f"the file is over {_MAX_FILE_BYTES} bytes; expected at most that")
        raise StrategyError(_format([problem], source, {}), [problem.text(source, {})])
    problems: list[_Problem] = []
    try:
        refused = _structure_problem(text)
        if refused is not None:
            message = f"{source}:{refused[0]}: {refused[1]}"
            raise StrategyError(f"invalid strategy {source} (1 problem):\n  {message}", [message])
        data = yaml.safe_load(text)
        lines = _key_lines(text, problems)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        what = getattr(exc, "problem", None) or str(exc)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
        message = f"{where}: YAML syntax error: {what}; expected valid YAML"
        raise StrategyError(
            f"invalid strategy {source} (1 problem):\n  {message}", [message]
        ) from None
    return _parse(
        data,
        source=source,
        sha256=hashlib.sha256(raw).hexdigest(),
        base_dir=p.absolute().parent,  # fixed now: a later chdir changes nothing
        default_name=p.stem,
        lines=lines,
        problems=problems,
    )
