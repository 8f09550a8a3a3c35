"""The 34 features, their order, ranges and normalisation: the one definition of the state.

Versioning rule
---------------
``SCHEMA_VERSION`` is semver and moves with ``schema_fingerprint()``:

* MAJOR: any change to the fingerprint (a feature added, removed, renamed, reordered, its range,
  neutral value, warm-up or normalisation changed, or any constant of the feature maths in
  ``MATHS_PARAMS`` changed). Models and datasets made under another fingerprint are refused.
* MINOR: new API that leaves every feature value unchanged (same fingerprint).
* PATCH: documentation or bug fixes that leave every feature value unchanged (same fingerprint).

A consumer (the runtime loading a model, the trainer loading a dataset) compares the artefact's
fingerprint with ``schema_fingerprint()``; on mismatch it refuses with ``SchemaMismatchError``
naming both versions, and the artefact must be regenerated under the installed schema (see
``docs/schema.md``). The test suite pins the fingerprint of each released version, so a
definition change cannot ship without a version bump.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
from dataclasses import asdict, dataclass
from typing import Final

from otonom_schema._errors import SchemaMismatchError

__all__ = [
    "ANALYSTS",
    "FEATURES",
    "FEATURE_NAMES",
    "GROUPS",
    "LOOKBACK",
    "MATHS_PARAMS",
    "SCHEMA_VERSION",
    "STATE_DIM",
    "Action",
    "FeatureSpec",
    "feature_index",
    "feature_table_markdown",
    "require_schema",
    "schema_fingerprint",
]

SCHEMA_VERSION: Final = "1.0.0"

# --- constants of the feature maths (all part of the fingerprint) ----------------------------

N_RETURNS: Final = 20
RETURN_SCALE: Final = 0.05  # ret feature = tanh(log_return / RETURN_SCALE)
RSI_PERIOD: Final = 14
MACD_FAST: Final = 12
MACD_SLOW: Final = 26
MACD_SIGNAL: Final = 9
EMA_TRUNCATION: Final = 1e-3  # EMA kernels are cut where the remaining weight < 0.1 %
MACD_SCALE: Final = 0.02  # macd feature = tanh((macd - signal) / close / MACD_SCALE)
BB_PERIOD: Final = 20
BB_STDS: Final = 2.0
BB_SCALE: Final = 0.25  # bb feature = tanh(width / BB_SCALE)
VOLUME_PERIOD: Final = 20
VOLUME_FLOOR: Final = 1e-3  # volume below 0.1 % of its mean counts as 0.1 % (log stays finite)
VOLUME_SCALE: Final = 2.0  # volume feature = tanh(log(v / mean) / VOLUME_SCALE)
VOL_WINDOW: Final = 20  # realised volatility window (returns)
REGIME_WINDOW: Final = 120  # realised vol is ranked against its own last REGIME_WINDOW values
REGIME_LOW_PCT: Final = 0.25
REGIME_HIGH_PCT: Final = 0.75
DSI_WINDOW: Final = 20
MAX_GAP_DAYS: Final = 4  # a bar interval longer than this is a gap (weekends + a holiday are not)
STALE_GRACE_DAYS: Final = 1  # the last bar may be this many days old without penalty
STALE_HALF_LIFE_DAYS: Final = 5.0
FLAT_BAR_WEIGHT: Final = 0.5
SENTIMENT_MAX_AGE_DAYS: Final = 3
MAX_LEVERAGE: Final = 4.0
DAYS_SCALE: Final = 10.0  # days feature = tanh(days_since_last_trade / DAYS_SCALE)


def _ema_length(span: int) -> int:
    """Number of bars of a span-``span`` EMA kernel holding >= 99.9 % of its weight."""
    alpha = 2.0 / (span + 1.0)
    return math.ceil(math.log(EMA_TRUNCATION) / math.log(1.0 - alpha))


EMA_FAST_LEN: Final = _ema_length(MACD_FAST)
EMA_SLOW_LEN: Final = _ema_length(MACD_SLOW)
EMA_SIGNAL_LEN: Final = _ema_length(MACD_SIGNAL)

# Bars (including bar t) that the features at t need. Fewer bars: the feature takes its neutral
# value (the one warm-up rule), and DSI is scaled down by the coverage.
_RET_BARS: Final = N_RETURNS + 1
_RSI_BARS: Final = RSI_PERIOD + 1
_MACD_BARS: Final = EMA_SLOW_LEN + EMA_SIGNAL_LEN - 1
_BB_BARS: Final = BB_PERIOD
_VOLUME_BARS: Final = VOLUME_PERIOD
_REGIME_BARS: Final = VOL_WINDOW + REGIME_WINDOW
_DSI_BARS: Final = 1

MATHS_PARAMS: Final[dict[str, float | int]] = {
    "N_RETURNS": N_RETURNS,
    "RETURN_SCALE": RETURN_SCALE,
    "RSI_PERIOD": RSI_PERIOD,
    "MACD_FAST": MACD_FAST,
    "MACD_SLOW": MACD_SLOW,
    "MACD_SIGNAL": MACD_SIGNAL,
    "EMA_TRUNCATION": EMA_TRUNCATION,
    "MACD_SCALE": MACD_SCALE,
    "BB_PERIOD": BB_PERIOD,
    "BB_STDS": BB_STDS,
    "BB_SCALE": BB_SCALE,
    "VOLUME_PERIOD": VOLUME_PERIOD,
    "VOLUME_FLOOR": VOLUME_FLOOR,
    "VOLUME_SCALE": VOLUME_SCALE,
    "VOL_WINDOW": VOL_WINDOW,
    "REGIME_WINDOW": REGIME_WINDOW,
    "REGIME_LOW_PCT": REGIME_LOW_PCT,
    "REGIME_HIGH_PCT": REGIME_HIGH_PCT,
    "DSI_WINDOW": DSI_WINDOW,
    "MAX_GAP_DAYS": MAX_GAP_DAYS,
    "STALE_GRACE_DAYS": STALE_GRACE_DAYS,
    "STALE_HALF_LIFE_DAYS": STALE_HALF_LIFE_DAYS,
    "FLAT_BAR_WEIGHT": FLAT_BAR_WEIGHT,
    "SENTIMENT_MAX_AGE_DAYS": SENTIMENT_MAX_AGE_DAYS,
    "MAX_LEVERAGE": MAX_LEVERAGE,
    "DAYS_SCALE": DAYS_SCALE,
}


class Action(enum.IntEnum):
    """The policy's discrete action. The integer value is the class index everywhere."""

    HOLD = 0
    BUY = 1
    SELL = 2


ANALYSTS: Final = ("tech", "news", "risk", "rl")
"""The ensemble's analyst names, in the order of weights everywhere (strategy files, the
ensemble's vote, the decision rows' signal columns). Not part of the state (no fingerprint)."""


@dataclass(frozen=True)
class FeatureSpec:
    """One feature of the state vector.

    ``low``/``high`` is the documented range every value lies in (validation allows a 1e-6
    tolerance). ``neutral`` is the value used when history is too short (``min_bars``) or an
    optional input (sentiment) is missing. ``min_bars`` is the number of daily bars, bar t
    included, the feature needs; 0 for features that do not come from the bar history.
    """

    name: str
    group: str
    low: float
    high: float
    normalisation: str
    neutral: float
    min_bars: int
    description: str


def _returns() -> tuple[FeatureSpec, ...]:
    specs = []
    for lag in range(N_RETURNS - 1, -1, -1):
        specs.append(
            FeatureSpec(
                name=f"ret_lag{lag}",
                group="market",
                low=-1.0,
                high=1.0,
                normalisation=f"tanh(log(close[t-{lag}] / close[t-{lag + 1}]) / {RETURN_SCALE})",
                neutral=0.0,
                min_bars=lag + 2,
                description=(
                    f"Daily log return {lag} bars before t, tanh-scaled"
                    if lag
                    else "Daily log return of bar t (the newest), tanh-scaled"
                ),
            )
        )
    return tuple(specs)


FEATURES: Final[tuple[FeatureSpec, ...]] = (
    *_returns(),
    FeatureSpec(
        "rsi",
        "technical",
        0.0,
        1.0,
        f"RSI({RSI_PERIOD}) with simple averages of gains and losses / 100; 0.5 if no move",
        0.5,
        _RSI_BARS,
        "Relative strength index, 0 = only losses, 1 = only gains",
    ),
    FeatureSpec(
        "macd_signal",
        "technical",
        -1.0,
        1.0,
        f"tanh((EMA{MACD_FAST} - EMA{MACD_SLOW} - signal EMA{MACD_SIGNAL}) / close / {MACD_SCALE});"
        f" EMA kernels truncated at {EMA_TRUNCATION} remaining weight",
        0.0,
        _MACD_BARS,
        "MACD histogram (MACD line minus its signal line) as a fraction of price",
    ),
    FeatureSpec(
        "bb_width",
        "technical",
        0.0,
        1.0,
        f"tanh(2 * {BB_STDS} * std{BB_PERIOD}(close) / sma{BB_PERIOD}(close) / {BB_SCALE})",
        0.0,
        _BB_BARS,
        "Bollinger Band width relative to the middle band",
    ),
    FeatureSpec(
        "volume_ratio",
        "technical",
        -1.0,
        1.0,
        f"tanh(log(max(v, {VOLUME_FLOOR} * m) / m) / {VOLUME_SCALE}), m = mean{VOLUME_PERIOD}(v);"
        " 0 if m == 0",
        0.0,
        _VOLUME_BARS,
        "Today's volume against its recent mean, log scale",
    ),
    FeatureSpec(
        "position",
        "portfolio",
        -1.0,
        1.0,
        "raw: signed holding as a fraction of the allowed size, -1 full short .. +1 full long",
        0.0,
        0,
        "Current position",
    ),
    FeatureSpec(
        "leverage",
        "portfolio",
        0.0,
        MAX_LEVERAGE,
        f"raw: gross exposure / equity, at most {MAX_LEVERAGE}",
        0.0,
        0,
        "Leverage in use",
    ),
    FeatureSpec(
        "cash_fraction",
        "portfolio",
        0.0,
        1.0,
        "raw: free cash / equity",
        1.0,
        0,
        "Cash percentage of equity, as a fraction",
    ),
    FeatureSpec(
        "days_since_last_trade",
        "portfolio",
        0.0,
        1.0,
        f"tanh(days / {DAYS_SCALE}); never traded = 1",
        1.0,
        0,
        "Days since the last trade, tanh-normalised",
    ),
    FeatureSpec(
        "regime_low_vol",
        "regime",
        0.0,
        1.0,
        f"1 if the {VOL_WINDOW}-bar realised vol ranks below {REGIME_LOW_PCT} of its last"
        f" {REGIME_WINDOW} values",
        0.0,
        _REGIME_BARS,
        "Regime one-hot: low volatility",
    ),
    FeatureSpec(
        "regime_normal",
        "regime",
        0.0,
        1.0,
        "1 unless low_vol or high_vol",
        1.0,
        _REGIME_BARS,
        "Regime one-hot: normal volatility",
    ),
    FeatureSpec(
        "regime_high_vol",
        "regime",
        0.0,
        1.0,
        f"1 if the {VOL_WINDOW}-bar realised vol ranks above {REGIME_HIGH_PCT} of its last"
        f" {REGIME_WINDOW} values",
        0.0,
        _REGIME_BARS,
        "Regime one-hot: high volatility",
    ),
    FeatureSpec(
        "dsi",
        "data_quality",
        0.0,
        1.0,
        "coverage * (1 - gap share) * (1 - zero-volume share) * (1 - 0.5 flat-bar share)"
        f" * staleness; shares over the last {DSI_WINDOW} bars; see docs/schema.md",
        1.0,
        _DSI_BARS,
        "Data Health Index: 1 = complete, fresh, plausible history",
    ),
    FeatureSpec(
        "news_sentiment",
        "sentiment",
        -1.0,
        1.0,
        f"raw: latest score dated <= t and at most {SENTIMENT_MAX_AGE_DAYS} days old, else 0",
        0.0,
        0,
        "News sentiment for the symbol",
    ),
    FeatureSpec(
        "macro_sentiment",
        "sentiment",
        -1.0,
        1.0,
        f"raw: latest score dated <= t and at most {SENTIMENT_MAX_AGE_DAYS} days old, else 0",
        0.0,
        0,
        "Macro sentiment (market-wide)",
    ),
)

STATE_DIM: Final = len(FEATURES)
FEATURE_NAMES: Final[tuple[str, ...]] = tuple(f.name for f in FEATURES)
GROUPS: Final[tuple[str, ...]] = tuple(dict.fromkeys(f.group for f in FEATURES))
LOOKBACK: Final = max(f.min_bars for f in FEATURES)

_INDEX: Final[dict[str, int]] = {name: i for i, name in enumerate(FEATURE_NAMES)}


def feature_index(name: str) -> int:
    """Position of feature ``name`` in the state vector."""
    try:
        return _INDEX[name]
    except KeyError:
        raise KeyError(f"unknown feature {name!r}; expected one of {FEATURE_NAMES}") from None


def _compute_fingerprint(features: tuple[FeatureSpec, ...], maths: dict[str, float | int]) -> str:
    """sha256 of the canonical JSON of the feature definitions (descriptions left out: prose,
    not definition) and the maths constants, cut to 16 hex digits."""
    entries = []
    for spec in features:
        entry = asdict(spec)
        del entry["description"]
        entries.append(entry)
    payload = {"state_dim": len(features), "features": entries, "maths": maths}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


_FINGERPRINT: Final = _compute_fingerprint(FEATURES, MATHS_PARAMS)


def schema_fingerprint() -> str:
    """A stable 16-hex-digit hash of the ordered feature definitions and the maths constants.

    Independent of Python's hash seed, the platform and the feature descriptions.
    """
    return _FINGERPRINT


def require_schema(source: object, fingerprint: object, version: object, remedy: str) -> None:
    """Refuse an artefact (``source``: its path or name) made under another state schema:
    ``SchemaMismatchError`` naming both schemas and ``remedy`` (the next step, a sentence)
    unless ``fingerprint`` (the artefact's, with its ``version``) is the installed one. The
    one spelling of the rule for datasets and checkpoints."""
    if fingerprint != _FINGERPRINT:
        raise SchemaMismatchError(
            f"{source} was made under state schema {version} (fingerprint {fingerprint}); "
            f"the installed schema is {SCHEMA_VERSION} (fingerprint {_FINGERPRINT}). {remedy}"
        )


def feature_table_markdown() -> str:
    """The feature table as Markdown (``docs/schema.md`` embeds it; a test keeps them equal)."""
    rows = [
        "| # | name | group | range | neutral | min bars | normalisation | description |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, f in enumerate(FEATURES):
        norm = f.normalisation.replace("|", "\\|")
        rows.append(
            f"| {i} | `{f.name}` | {f.group} | [{f.low:g}, {f.high:g}] | {f.neutral:g} | "
            f"{f.min_bars} | {norm} | {f.description} |"
        )
    return "\n".join(rows)
