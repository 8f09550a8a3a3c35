"""The feature list: order, count, ranges, and the fingerprint's stability and sensitivity."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys

import pytest

import otonom_schema as s
from otonom_schema._spec import _compute_fingerprint

# One fingerprint per released schema version. Changing a feature definition changes the
# fingerprint; then SCHEMA_VERSION must get a MAJOR bump and a new line here (docs/schema.md).
RELEASED_FINGERPRINTS = {"1.0.0": "1351ae6759a1a59f"}

GUIDE_ORDER = (
    [f"ret_lag{k}" for k in range(19, -1, -1)]
    + ["rsi", "macd_signal", "bb_width", "volume_ratio"]
    + ["position", "leverage", "cash_fraction", "days_since_last_trade"]
    + ["regime_low_vol", "regime_normal", "regime_high_vol"]
    + ["dsi", "news_sentiment", "macro_sentiment"]
)


def test_count_and_order_follow_the_guide() -> None:
    assert s.STATE_DIM == 34
    assert len(s.FEATURES) == 34
    assert list(s.FEATURE_NAMES) == GUIDE_ORDER
    assert len(set(s.FEATURE_NAMES)) == 34
    assert [s.feature_index(n) for n in GUIDE_ORDER] == list(range(34))


def test_groups_follow_the_guide() -> None:
    sizes = {g: sum(f.group == g for f in s.FEATURES) for g in s.GROUPS}
    assert s.GROUPS == ("market", "technical", "portfolio", "regime", "data_quality", "sentiment")
    assert sizes == {
        "market": 20,
        "technical": 4,
        "portfolio": 4,
        "regime": 3,
        "data_quality": 1,
        "sentiment": 2,
    }


def test_every_feature_is_bounded_and_documented() -> None:
    for f in s.FEATURES:
        assert math.isfinite(f.low), f.name
        assert math.isfinite(f.high), f.name
        assert f.low < f.high, f.name
        assert f.low <= f.neutral <= f.high, f.name
        assert f.normalisation.strip(), f.name
        assert f.description.strip(), f.name
        assert 0 <= f.min_bars <= s.LOOKBACK, f.name
    assert max(f.min_bars for f in s.FEATURES) == s.LOOKBACK


def test_action_enum() -> None:
    assert [(a.name, a.value) for a in s.Action] == [("HOLD", 0), ("BUY", 1), ("SELL", 2)]


def test_unknown_feature_name_says_what_exists() -> None:
    with pytest.raises(KeyError, match="unknown feature 'rsx'"):
        s.feature_index("rsx")


def test_fingerprint_is_pinned_for_the_installed_version() -> None:
    fp = s.schema_fingerprint()
    assert len(fp) == 16
    assert int(fp, 16) >= 0
    assert RELEASED_FINGERPRINTS.get(s.SCHEMA_VERSION) == fp, (
        "the feature definitions changed: bump SCHEMA_VERSION (MAJOR) and pin the new fingerprint"
    )


def test_version_is_semver() -> None:
    parts = s.SCHEMA_VERSION.split(".")
    assert len(parts) == 3
    assert all(p.isdigit() for p in parts)


def test_fingerprint_is_stable_across_processes_and_hash_seeds() -> None:
    code = "import otonom_schema as s; print(s.schema_fingerprint())"
    seen = set()
    for seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        )
        seen.add(out.stdout.strip())
    assert seen == {s.schema_fingerprint()}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "rsi_14"),
        ("group", "market"),
        ("low", -0.5),
        ("high", 2.0),
        ("normalisation", "RSI / 100, Wilder smoothing"),
        ("neutral", 0.4),
        ("min_bars", 30),
    ],
)
def test_any_definition_change_changes_the_fingerprint(field: str, value: object) -> None:
    i = s.feature_index("rsi")
    changed = list(s.FEATURES)
    changed[i] = dataclasses.replace(changed[i], **{field: value})
    assert _compute_fingerprint(tuple(changed), dict(s.MATHS_PARAMS)) != s.schema_fingerprint()


def test_reordering_or_dropping_changes_the_fingerprint() -> None:
    f = list(s.FEATURES)
    swapped = f[:]
    swapped[20], swapped[21] = swapped[21], swapped[20]
    assert _compute_fingerprint(tuple(swapped), dict(s.MATHS_PARAMS)) != s.schema_fingerprint()
    assert _compute_fingerprint(tuple(f[:-1]), dict(s.MATHS_PARAMS)) != s.schema_fingerprint()


@pytest.mark.parametrize("param", sorted(s.MATHS_PARAMS))
def test_every_maths_constant_is_in_the_fingerprint(param: str) -> None:
    params = dict(s.MATHS_PARAMS)
    params[param] = params[param] * 2 + 1
    assert _compute_fingerprint(s.FEATURES, params) != s.schema_fingerprint()


def test_descriptions_are_prose_not_definition() -> None:
    reworded = tuple(dataclasses.replace(f, description=f.description + "!") for f in s.FEATURES)
    assert _compute_fingerprint(reworded, dict(s.MATHS_PARAMS)) == s.schema_fingerprint()
