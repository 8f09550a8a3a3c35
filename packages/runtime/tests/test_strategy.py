"""Strategy files: the shipped baseline, defaults, every validation error, model lookup, CLI."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from otonom_runtime import OtonomRuntimeError
from otonom_runtime._errors import StrategyError
from otonom_runtime.strategy import (
    AnalystWeights,
    DataConfig,
    RlPolicyConfig,
    StrategyConfig,
    TechConfig,
    load_strategy,
    parse_strategy,
)
from otonom_runtime.testing.models import make_policy_model

REPO = Path(__file__).resolve().parents[3]
BASELINE = REPO / "strategies" / "baseline_v1.yaml"

DEFAULTS: dict[str, Any] = {
    "description": "",
    "ensemble": {
        "enabled": True,
        "analyst_weights": {"tech": 1.0, "news": 1.0, "risk": 1.0, "rl": 1.0},
        "min_score": 0.5,
        "rl_policy": {
            "enabled": False,
            "model_path": None,
            "device": "cpu",
            "mode": "voter",
            "filter_veto": "opposite",
            "filter_size": False,
        },
    },
    "analysts": {
        "tech": {
            "trend_window": 10,
            "trend_threshold": 0.10,
            "rsi_oversold": 0.30,
            "rsi_overbought": 0.70,
            "macd_threshold": 0.10,
            "weights": {"trend": 1.0, "rsi": 0.5, "macd": 1.0},
            "entry_threshold": 0.30,
        },
        "news": {"news_weight": 0.6, "macro_weight": 0.4, "threshold": 0.20},
        "risk": {
            "drawdown_window": 20,
            "max_drawdown": 0.15,
            "high_vol_exposure": 0.5,
            "exit_in_high_vol": True,
        },
    },
    "portfolio": {"initial_capital": 10000.0, "max_leverage": 1.0, "allow_short": True},
    "costs": {"commission_bps": 10.0, "slippage_bps": 5.0},
    "calendar": {"periods_per_year": "auto"},
    "data": {"news_source": None, "macro_source": None},
    "monitoring": {
        "psi_warn": 0.10,
        "psi_alert": 0.25,
        "chi2_p_value": 0.001,
        "min_hit_rate": 0.45,
        "horizon": 1,
        "min_rows": 50,
        "max_fallback_rate": 0.05,
        "max_latency_ms": 250.0,
        "max_rl_sharpe_loss": 0.5,
    },
}
"""The documented defaults, written out independently of the dataclasses."""


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _problems(mapping: Any) -> tuple[str, ...]:
    with pytest.raises(StrategyError) as info:
        parse_strategy(mapping)
    return info.value.problems


def _rl_on(model_path: str | None) -> dict[str, Any]:
    return {"ensemble": {"rl_policy": {"enabled": True, "model_path": model_path}}}


def _keys(tree: Any, prefix: str = "") -> set[str]:
    if not isinstance(tree, dict):
        return set()
    out = set()
    for key, value in tree.items():
        out.add(prefix + key)
        out |= _keys(value, prefix + key + ".")
    return out


# --- the shipped baseline and the defaults -----------------------------------------------------


def test_the_shipped_baseline_spells_out_every_key_with_its_default() -> None:
    cfg = load_strategy(BASELINE)
    assert cfg.name == "baseline_v1"
    assert cfg.source == str(BASELINE)
    assert not cfg.rl_enabled
    assert cfg.ensemble.rl_policy.model_path == "models/rl_bc/policy_best.pt"
    assert cfg.ensemble.rl_policy.model_file is None
    raw = yaml.safe_load(BASELINE.read_text(encoding="utf-8"))
    assert _keys(raw) == _keys(cfg.to_dict())
    expected = json.loads(json.dumps(DEFAULTS))
    expected["ensemble"]["rl_policy"]["model_path"] = "models/rl_bc/policy_best.pt"
    got = cfg.to_dict()
    assert got.pop("name") == "baseline_v1"
    got["description"] = ""
    assert got == expected


def test_a_minimal_file_gets_every_default_and_its_stem_as_name(tmp_path: Path) -> None:
    cfg = load_strategy(_write(tmp_path / "tiny_v2.yaml", "costs:\n  slippage_bps: 2\n"))
    assert cfg.name == "tiny_v2"
    expected = json.loads(json.dumps(DEFAULTS))
    expected["costs"]["slippage_bps"] = 2.0
    assert {k: v for k, v in cfg.to_dict().items() if k != "name"} == expected
    assert isinstance(cfg.costs.slippage_bps, float)  # an int is fine where a number is expected
    assert isinstance(cfg.analysts.tech.trend_window, int)


def test_an_empty_section_means_all_defaults(tmp_path: Path) -> None:
    cfg = load_strategy(_write(tmp_path / "s.yaml", "name: s\nanalysts:\n  # tech: ...\n"))
    assert cfg.analysts == parse_strategy({}).analysts
    assert cfg.analysts.tech.trend_window == 10


def test_a_missing_analyst_weight_is_one() -> None:
    w = parse_strategy({"ensemble": {"analyst_weights": {"news": 0.5}}}).ensemble.analyst_weights
    assert w.as_tuple() == (1.0, 0.5, 1.0, 1.0)


def test_parse_strategy_names_a_dict_source_and_a_default_name() -> None:
    cfg = parse_strategy({})
    assert (cfg.source, cfg.name) == ("<dict>", "strategy")
    assert parse_strategy({}, source="run-42").source == "run-42"


# --- validation errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mapping", "expected"),
    [
        pytest.param(
            {"ensemble": {"analyst_weights": {"tehc": 1.0}}},
            "ensemble.analyst_weights.tehc: unknown key; expected one of tech, news, risk, rl; "
            "did you mean 'tech'?",
            id="unknown-key",
        ),
        pytest.param(
            {"calendr": {}},
            "calendr: unknown key; expected one of name, description, ensemble, analysts, "
            "portfolio, costs, calendar, data, monitoring; did you mean 'calendar'?",
            id="unknown-top-level-key",
        ),
        pytest.param(
            {"analysts": {"tech": {"trend_threshold": True}}},
            "analysts.tech.trend_threshold: received true, expected a number",
            id="bool-is-not-a-number",
        ),
        pytest.param(
            {"analysts": {"tech": {"trend_window": 2.5}}},
            "analysts.tech.trend_window: received 2.5, expected an integer",
            id="fraction-is-not-an-integer",
        ),
        pytest.param(
            {"analysts": {"risk": {"drawdown_window": False}}},
            "analysts.risk.drawdown_window: received false, expected an integer",
            id="bool-is-not-an-integer",
        ),
        pytest.param(
            {"ensemble": {"enabled": "yes please"}},
            "ensemble.enabled: received text 'yes please', expected true or false",
            id="text-is-not-a-bool",
        ),
        pytest.param(
            {"description": 3},
            "description: received 3, expected text",
            id="number-is-not-text",
        ),
        pytest.param(
            {"costs": {"commission_bps": "1e-3"}},
            "costs.commission_bps: received text '1e-3', expected a number "
            "(YAML reads 1e-3 as text: write 1.0e-3)",
            id="yaml-1.1-exponent",
        ),
        pytest.param(
            {"costs": {"slippage_bps": None}},
            "costs.slippage_bps: received null, expected a number",
            id="null-is-not-a-number",
        ),
        pytest.param(
            {"portfolio": {"initial_capital": float("inf")}},
            "portfolio.initial_capital: received inf, expected a finite number",
            id="not-finite",
        ),
        pytest.param(
            {"analysts": {"tech": {"rsi_oversold": 0.5}}},
            "analysts.tech.rsi_oversold: received 0.5, expected a value in (0, 0.5)",
            id="out-of-range-open",
        ),
        pytest.param(
            {"analysts": {"tech": {"trend_window": 21}}},
            "analysts.tech.trend_window: received 21, expected a value in [2, 20]",
            id="out-of-range-closed",
        ),
        pytest.param(
            {"ensemble": {"min_score": 1.5}},
            "ensemble.min_score: received 1.5, expected a value in [0, 1]",
            id="min-score",
        ),
        pytest.param(
            {"portfolio": {"max_leverage": 5}},
            "portfolio.max_leverage: received 5, expected a value in (0, 4]",
            id="leverage-above-schema-max",
        ),
        pytest.param(
            {"portfolio": {"initial_capital": 0}},
            "portfolio.initial_capital: received 0, expected a value in (0, 1e+15]",
            id="capital-zero",
        ),
        pytest.param(
            {"ensemble": {"analyst_weights": {"news": -1}}},
            "ensemble.analyst_weights.news: received -1, expected a value in [0, 1000]",
            id="negative-weight",
        ),
        pytest.param(
            {"analysts": {"tech": {"weights": {"macd": -0.5}}}},
            "analysts.tech.weights.macd: received -0.5, expected a value in [0, 1000]",
            id="negative-tech-weight",
        ),
        pytest.param(
            {"ensemble": {"analyst_weights": {"tech": 0, "news": 0, "risk": 0, "rl": 3}}},
            "ensemble.analyst_weights: tech, news and risk are all 0; expected at least one of "
            "them > 0",
            id="only-rl-votes",
        ),
        pytest.param(
            {"analysts": {"tech": {"weights": {"trend": 0, "rsi": 0, "macd": 0}}}},
            "analysts.tech.weights: trend, rsi and macd are all 0; expected weights with a sum > 0",
            id="tech-weights-zero",
        ),
        pytest.param(
            {"analysts": {"news": {"news_weight": 0, "macro_weight": 0.0}}},
            "analysts.news: news_weight and macro_weight are both 0; expected a sum > 0",
            id="news-weights-zero",
        ),
        pytest.param(
            {"calendar": {"periods_per_year": 360}},
            "calendar.periods_per_year: received 360, expected one of 252, 365, auto",
            id="periods-per-year",
        ),
        pytest.param(
            {"calendar": {"periods_per_year": "weekly"}},
            "calendar.periods_per_year: received text 'weekly', expected one of 252, 365, auto",
            id="periods-per-year-text",
        ),
        pytest.param(
            {"calendar": {"periods_per_year": True}},
            "calendar.periods_per_year: received true, expected one of 252, 365, auto",
            id="periods-per-year-bool",
        ),
        pytest.param(
            {"ensemble": {"rl_policy": {"device": "gpu"}}},
            "ensemble.rl_policy.device: received text 'gpu', expected one of cpu, cuda, auto",
            id="device",
        ),
        pytest.param(
            {"name": "  "},
            "name: received text '  ', expected non-empty text",
            id="blank-name",
        ),
        pytest.param(
            {"analysts": {"risk": "strict"}},
            "analysts.risk: received text 'strict', expected a mapping (keys: drawdown_window, "
            "max_drawdown, high_vol_exposure, exit_in_high_vol)",
            id="section-not-a-mapping",
        ),
        pytest.param(
            _rl_on(None),
            "ensemble.rl_policy.model_path: missing; a model path is required when "
            "ensemble.rl_policy.enabled is true",
            id="model-path-missing",
        ),
    ],
)
def test_each_kind_of_problem_names_the_key_path(mapping: Any, expected: str) -> None:
    problems = _problems(mapping)
    assert len(problems) == 1, problems
    assert problems[0].startswith("<dict>: ")
    assert expected in problems[0]


def test_a_key_that_is_not_text_is_unknown() -> None:
    problems = _problems({1: 2, "name": "x"})
    assert problems == (
        "<dict>: 1: unknown key; expected one of name, description, ensemble, "
        "analysts, portfolio, costs, calendar, data, monitoring",
    )


def test_the_error_is_a_value_error_of_the_runtime_tree() -> None:
    with pytest.raises(StrategyError) as info:
        parse_strategy({"costs": {"commission_bps": -1}})
    assert isinstance(info.value, OtonomRuntimeError)
    assert isinstance(info.value, ValueError)
    assert str(info.value).startswith("invalid strategy <dict> (1 problem):\n  <dict>: costs.")


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = (
        "name: many\n"  # line 1
        "ensemble:\n"
        "  analyst_weights:\n"
        "    tehc: 1.0\n"  # line 4
        "    news: -2\n"  # line 5
        "  rl_policy:\n"  # line 6: no model_path
        "    enabled: true\n"
        "analysts:\n"
        "  tech:\n"
        "    rsi_oversold: 0.6\n"  # line 10
        "calendar:\n"
        "  periods_per_year: 360\n"  # line 12
        "extra: 1\n"  # line 13
    )
    path = _write(tmp_path / "many.yaml", text)
    with pytest.raises(StrategyError) as info:
        load_strategy(path)
    problems = info.value.problems
    expected = [
        f"{path}:13: extra: unknown key",
        f"{path}:4: ensemble.analyst_weights.tehc: unknown key",
        f"{path}:5: ensemble.analyst_weights.news: received -2",
        f"{path}:10: analysts.tech.rsi_oversold: received 0.6",
        f"{path}:12: calendar.periods_per_year: received 360",
        f"{path}:6: ensemble.rl_policy.model_path: missing",  # the line of rl_policy
    ]
    assert len(problems) == len(expected), problems
    for want in expected:
        assert any(p.startswith(want) for p in problems), (want, problems)
    message = str(info.value)
    assert message.startswith(f"invalid strategy {path} (6 problems):\n")
    assert all(p in message.splitlines()[1 + i] for i, p in enumerate(problems))


def test_the_data_section_names_sentiment_sources(tmp_path: Path) -> None:
    cfg = load_strategy(_write(tmp_path / "s.yaml", "data:\n  macro_source: vendor.v1\n"))
    assert (cfg.data.news_source, cfg.data.macro_source) == (None, "vendor.v1")
    assert parse_strategy(cfg.to_dict()) == cfg
    assert load_strategy(BASELINE).data == DataConfig()  # null: by the symbol's kind


def test_bad_sentiment_sources_are_reported_with_file_and_line(tmp_path: Path) -> None:
    text = (
        "name: sources\n"  # line 1
        "data:\n"
        "  macro_source: my source\n"  # line 3: a blank
        "  news_source: 5\n"  # line 4: not text
        "  news_sourse: user\n"  # line 5: a typo
    )
    path = _write(tmp_path / "sources.yaml", text)
    with pytest.raises(StrategyError) as info:
        load_strategy(path)
    rule = "1-64 letters, digits, '_', '.' or '-' (e.g. user, synthetic)"
    assert sorted(info.value.problems) == sorted(
        [
            f"{path}:3: data.macro_source: received text 'my source', expected null or a "
            f"sentiment source name: {rule}",
            f"{path}:4: data.news_source: received 5, expected text or null",
            f"{path}:5: data.news_sourse: unknown key; expected one of news_source, "
            "macro_source; did you mean 'news_source'?",
        ]
    )
    with pytest.raises(StrategyError, match=r"DataConfig.macro_source: received text 'x{65}'"):
        DataConfig(macro_source="x" * 65)


def test_the_rl_mode_is_read_and_a_bad_one_is_reported_with_file_and_line(
    tmp_path: Path,
) -> None:
    assert load_strategy(BASELINE).ensemble.rl_policy.mode == "voter"  # the default
    good = _write(
        tmp_path / "filter.yaml",
        "ensemble:\n  rl_policy: {mode: filter, filter_veto: differs, filter_size: true}\n",
    )
    rl = load_strategy(good).ensemble.rl_policy
    assert (rl.mode, rl.filter_veto, rl.filter_size) == ("filter", "differs", True)
    text = (
        "name: modes\n"  # line 1
        "ensemble:\n"
        "  rl_policy:\n"
        "    mode: boss\n"  # line 4
        "    filter_veto: never\n"  # line 5
    )
    path = _write(tmp_path / "modes.yaml", text)
    with pytest.raises(StrategyError) as info:
        load_strategy(path)
    assert sorted(info.value.problems) == [
        f"{path}:4: ensemble.rl_policy.mode: received text 'boss', expected one of voter, "
        "sole, filter",
        f"{path}:5: ensemble.rl_policy.filter_veto: received text 'never', expected one of "
        "opposite, differs, off",
    ]
    assert all("\n" not in p for p in info.value.problems)  # one line each


def test_a_missing_file_is_a_strategy_error(tmp_path: Path) -> None:
    with pytest.raises(StrategyError, match=r"nope\.yaml: cannot read the file"):
        load_strategy(tmp_path / "nope.yaml")


def test_a_folder_is_not_a_strategy_file(tmp_path: Path) -> None:
    with pytest.raises(StrategyError, match="cannot read the file"):
        load_strategy(tmp_path)


def test_a_file_that_is_not_utf8_is_a_strategy_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("description: caf\xe9\n".encode("latin-1"))
    with pytest.raises(StrategyError, match="expected a UTF-8 YAML file"):
        load_strategy(path)


def test_a_yaml_syntax_error_names_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.yaml", "name: x\nensemble:\n  enabled: [true\n")
    with pytest.raises(StrategyError) as info:
        load_strategy(path)
    (problem,) = info.value.problems
    assert problem.startswith(f"{path}:4:")
    assert "YAML syntax error" in problem


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- a\n- b\n", "the top level is a list; expected a mapping"),
        ("just text\n", "the top level is text 'just text'; expected a mapping"),
        ("# only a comment\n", "the top level is null; expected a mapping"),
    ],
)
def test_the_top_level_must_be_a_mapping(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path / "s.yaml", text)
    with pytest.raises(StrategyError) as info:
        load_strategy(path)
    assert info.value.problems == (f"{path}: {expected}",)


def test_a_duplicate_key_is_reported_with_both_lines(tmp_path: Path) -> None:
    path = _write(tmp_path / "dup.yaml", "costs:\n  commission_bps: 1\n  commission_bps: 2\n")
    with pytest.raises(StrategyError) as info:
        load_strategy(path)
    assert info.value.problems == (
        f"{path}:3: costs.commission_bps: duplicate key (also on line 2); expected each key once",
    )


def test_configs_built_directly_obey_the_same_rules() -> None:
    with pytest.raises(StrategyError, match=r"TechConfig\.trend_window: received 1, expected"):
        TechConfig(trend_window=1)
    with pytest.raises(StrategyError, match="tech, news and risk are all 0"):
        AnalystWeights(tech=0, news=0, risk=0)
    cfg = parse_strategy({})
    with pytest.raises(StrategyError, match=r"StrategyConfig\.costs: received 3, expected"):
        dataclasses.replace(cfg, costs=3)
    weights = AnalystWeights(tech=2)
    assert isinstance(weights.tech, float)
    assert weights.tech == 2.0


def test_configs_are_frozen() -> None:
    cfg = parse_strategy({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.costs.commission_bps = 0.0  # type: ignore[misc]


# --- to_dict, sha256 ---------------------------------------------------------------------------


def test_to_dict_is_json_and_round_trips() -> None:
    cfg = parse_strategy(
        {
            "name": "custom",
            "description": "every section changed",
            "ensemble": {"enabled": False, "analyst_weights": {"rl": 0.0}, "min_score": 0},
            "analysts": {
                "tech": {"trend_window": 5, "weights": {"rsi": 0}},
                "news": {"threshold": 1},
                "risk": {"exit_in_high_vol": False},
            },
            "portfolio": {"allow_short": False, "max_leverage": 4},
            "costs": {"commission_bps": 0},
            "calendar": {"periods_per_year": 252},
        }
    )
    data = cfg.to_dict()
    assert json.loads(json.dumps(data)) == data
    again = parse_strategy(data)
    assert again == cfg
    assert again.to_dict() == data
    assert data["analysts"]["tech"]["weights"] == {"trend": 1.0, "rsi": 0.0, "macd": 1.0}
    assert set(data) == set(DEFAULTS) | {"name"}  # no source / sha256 / base_dir


def test_the_baseline_round_trips() -> None:
    cfg = load_strategy(BASELINE)
    assert parse_strategy(cfg.to_dict()) == cfg


def test_file_sha256_is_the_file_bytes_and_changes_with_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "s.yaml", "costs:\n  commission_bps: 1\n")
    first = load_strategy(path)
    assert first.file_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    _write(path, "costs:\n  commission_bps: 1  # the same value, a new comment\n")
    second = load_strategy(path)
    assert second.file_sha256 != first.file_sha256
    assert second == first  # sha256 and source are not compared


def test_dict_sha256_is_that_of_the_canonical_json() -> None:
    a = parse_strategy({"name": "x", "costs": {"slippage_bps": 1, "commission_bps": 2}})
    b = parse_strategy({"costs": {"commission_bps": 2, "slippage_bps": 1}, "name": "x"})
    canonical = '{"costs":{"commission_bps":2,"slippage_bps":1},"name":"x"}'
    assert a.file_sha256 == b.file_sha256 == hashlib.sha256(canonical.encode()).hexdigest()
    assert parse_strategy({"name": "y"}).file_sha256 != a.file_sha256


# --- weights_array, with_rl --------------------------------------------------------------------


def test_weights_array_zeroes_rl_while_the_rl_analyst_is_off() -> None:
    cfg = parse_strategy(
        {"ensemble": {"analyst_weights": {"tech": 2, "news": 0.5, "risk": 0, "rl": 3}}}
    )
    arr = cfg.weights_array()
    assert arr.dtype == np.float64
    np.testing.assert_array_equal(arr, [2.0, 0.5, 0.0, 0.0])
    arr[0] = 99.0  # a fresh array each call
    np.testing.assert_array_equal(cfg.weights_array(), [2.0, 0.5, 0.0, 0.0])


def test_with_rl_switches_the_rl_analyst(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    model = tmp_path / "models" / "rl_bc" / "policy_best.onnx"
    make_policy_model(model)
    weights = {"tech": 1, "news": 2, "risk": 3, "rl": 4}
    off = parse_strategy(
        {
            "ensemble": {
                "analyst_weights": weights,
                "rl_policy": {"model_path": "models/rl_bc/policy_best.pt"},
            }
        }
    )
    np.testing.assert_array_equal(off.weights_array(), [1, 2, 3, 0])
    on = off.with_rl(True)
    assert on.rl_enabled
    assert on.ensemble.rl_policy.model_file == model
    np.testing.assert_array_equal(on.weights_array(), [1, 2, 3, 4])
    assert not off.rl_enabled  # the original is unchanged
    back = on.with_rl(False)
    assert not back.rl_enabled
    assert back.ensemble.rl_policy.model_file is None
    assert back == off
    assert on.with_rl(True) == on


def test_with_rl_true_without_a_model_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = load_strategy(BASELINE)
    monkeypatch.chdir(tmp_path)  # not the repository root, which ships a default model
    with pytest.raises(StrategyError) as info:
        dataclasses.replace(cfg, base_dir=tmp_path).with_rl(True)
    (problem,) = info.value.problems
    assert problem.startswith(f"{BASELINE}: ensemble.rl_policy.model_path: received ")
    with pytest.raises(StrategyError, match="model_path: missing"):
        parse_strategy({}).with_rl(True)


# --- model_path resolution ---------------------------------------------------------------------


def test_a_relative_model_path_is_found_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_policy_model(tmp_path / "work" / "m" / "policy_best.onnx")
    monkeypatch.chdir(tmp_path / "work")
    cfg = parse_strategy(_rl_on("m"))  # a model folder
    assert cfg.ensemble.rl_policy.model_file == tmp_path / "work" / "m" / "policy_best.onnx"
    assert cfg.ensemble.rl_policy.model_path == "m"
    assert cfg.to_dict()["ensemble"]["rl_policy"]["model_path"] == "m"


def test_a_relative_model_path_is_found_beside_the_yaml_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_policy_model(tmp_path / "strategies" / "models" / "policy_best.onnx")
    path = _write(
        tmp_path / "strategies" / "s.yaml",
        "ensemble:\n  rl_policy:\n    enabled: true\n    model_path: models/policy_best.pt\n",
    )
    monkeypatch.chdir(tmp_path)  # models/policy_best.pt is not here
    cfg = load_strategy(path)
    assert cfg.ensemble.rl_policy.model_file == path.parent / "models" / "policy_best.onnx"
    assert cfg.base_dir == path.parent
    with pytest.raises(StrategyError, match="resolves to no model"):
        parse_strategy(cfg.to_dict())  # a dict has no folder to look in ...
    assert parse_strategy(cfg.to_dict(), base_dir=cfg.base_dir) == cfg  # ... unless given one


def test_the_working_directory_is_not_looked_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model of the same name in the working directory is not served (it used to be looked
    up there first): the path resolves against the models root found from the file."""
    make_policy_model(tmp_path / "model.onnx")
    make_policy_model(tmp_path / "strategies" / "model.onnx", seed=1)
    path = _write(
        tmp_path / "strategies" / "s.yaml",
        "ensemble:\n  rl_policy:\n    enabled: true\n    model_path: model.onnx\n",
    )
    monkeypatch.chdir(tmp_path)
    assert load_strategy(path).ensemble.rl_policy.model_file == path.parent / "model.onnx"


def test_an_absolute_model_path_inside_the_root(tmp_path: Path) -> None:
    model = tmp_path / "abs" / "policy_best.onnx"
    make_policy_model(model)
    cfg = parse_strategy(_rl_on(str(model)), base_dir=tmp_path)
    assert cfg.ensemble.rl_policy.model_file == model


def test_an_absolute_model_path_outside_the_root_is_refused(tmp_path: Path) -> None:
    model = tmp_path / "elsewhere" / "policy_best.onnx"
    make_policy_model(model)
    (tmp_path / "project" / "models").mkdir(parents=True)
    with pytest.raises(StrategyError) as info:
        parse_strategy(_rl_on(str(model)), base_dir=tmp_path / "project")
    (problem,) = info.value.problems
    assert f"{model} is outside the models root" in problem
    assert f"models root {tmp_path / 'project'} " in problem
    assert "OTONOM_MODELS_ROOT=" in problem


def test_a_missing_model_names_the_models_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = _write(
        tmp_path / "strategies" / "s.yaml",
        "ensemble:\n  rl_policy:\n    enabled: true\n    model_path: models/policy_best.pt\n",
    )
    with pytest.raises(StrategyError) as info:
        load_strategy(path)
    (problem,) = info.value.problems
    assert problem.startswith(f"{path}:4: ensemble.rl_policy.model_path: received ")
    assert f"there is no ONNX model for {path.parent / 'models' / 'policy_best.pt'}" in problem
    assert f"models root {path.parent} (the strategy's folder: " in problem
    assert f"{tmp_path / 'models'}" not in problem  # the working directory is not looked in


def test_a_checkpoint_without_its_onnx_export_says_so(tmp_path: Path) -> None:
    checkpoint = _write(tmp_path / "policy_best.pt", "not really torch")
    with pytest.raises(StrategyError) as info:
        parse_strategy(_rl_on(str(checkpoint)), base_dir=tmp_path)
    assert "never loads PyTorch checkpoints" in info.value.problems[0]


def test_a_disabled_rl_policy_needs_no_model(tmp_path: Path) -> None:
    cfg = parse_strategy({"ensemble": {"rl_policy": {"model_path": str(tmp_path / "none.pt")}}})
    assert cfg.ensemble.rl_policy == RlPolicyConfig(model_path=str(tmp_path / "none.pt"))


def test_a_missing_model_is_reported_beside_other_problems() -> None:
    mapping = _rl_on(None)
    mapping["costs"] = {"commission_bps": -1}
    problems = _problems(mapping)
    assert len(problems) == 2
    assert any("ensemble.rl_policy.model_path: missing" in p for p in problems)


def test_strategy_config_is_hashable_and_comparable() -> None:
    assert hash(parse_strategy({})) == hash(StrategyConfig())
    assert parse_strategy({}) != parse_strategy({"costs": {"slippage_bps": 0}})


# --- the command line --------------------------------------------------------------------------


def _check(path: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otonom_runtime", "strategy", "check", str(path)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_check_summarises_a_good_file(tmp_path: Path) -> None:
    out = _check(BASELINE, tmp_path)
    assert out.returncode == 0, out.stderr
    sha = hashlib.sha256(BASELINE.read_bytes()).hexdigest()
    lines = out.stdout.splitlines()
    assert lines[0] == f"strategy baseline_v1: {BASELINE} (sha256 {sha[:12]})"
    assert "weights:   tech 1, news 1, risk 1, rl 1" in out.stdout
    assert "rl policy: off (model_path 'models/rl_bc/policy_best.pt' not checked)" in out.stdout
    assert "costs:     commission 10 bps, slippage 5 bps" in out.stdout
    assert "calendar:  auto periods per year (252 or 365, from the bars' dates)" in out.stdout
    assert lines[-1] == "ok"


def test_cli_check_shows_the_rl_model(tmp_path: Path) -> None:
    make_policy_model(tmp_path / "m" / "policy_best.onnx")
    path = _write(
        tmp_path / "rl.yaml",
        "ensemble:\n  rl_policy:\n    enabled: true\n    model_path: m\n    device: auto\n",
    )
    out = _check(path, tmp_path)
    assert out.returncode == 0, out.stderr
    want = f"rl policy: on, model {tmp_path / 'm' / 'policy_best.onnx'} (model_path 'm')"
    assert want in out.stdout
    assert "device auto, mode voter (the 4th analyst's vote)" in out.stdout
    path.write_text(
        "ensemble:\n  rl_policy: {enabled: true, model_path: m, mode: filter}\n",
        encoding="utf-8",
    )
    out = _check(path, tmp_path)
    assert "mode filter (the three analysts decide; veto opposite, size off)" in out.stdout


def test_cli_check_warns_about_a_degenerate_or_unloadable_model(tmp_path: Path) -> None:
    metrics = {
        "val_action_acc": 0.596,
        "train_action_acc": 0.6,
        "best_val_loss": 0.9,
        "best_epoch": 1,
        "degenerate": {"reason": "always HOLD", "rules": ["one action"]},
    }
    model = tmp_path / "m" / "policy_best.onnx"
    make_policy_model(model, metadata_overrides={"otonom.metrics": json.dumps(metrics)})
    path = _write(
        tmp_path / "rl.yaml", "ensemble:\n  rl_policy:\n    enabled: true\n    model_path: m\n"
    )
    out = _check(path, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "ok"
    assert out.stderr.splitlines() == [
        f"warning: RL model {model} is marked degenerate at training: always HOLD"
    ]
    model.write_bytes(b"not an onnx model")  # found, but it does not load
    out = _check(path, tmp_path)
    assert out.returncode == 0, out.stderr
    (line,) = out.stderr.splitlines()
    assert line.startswith(f"warning: RL model {model} does not load, a backtest runs without it")


def test_cli_check_lists_every_problem_of_a_bad_file(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "bad.yaml",
        "ensemble:\n  analyst_weights:\n    tehc: 1\ncosts:\n  slippage_bps: -1\n",
    )
    out = _check(path, tmp_path)
    assert out.returncode == 1
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert lines[0] == f"error: invalid strategy {path} (2 problems):"
    assert lines[1].startswith(f"  {path}:3: ensemble.analyst_weights.tehc: unknown key")
    assert lines[2] == (
        f"  {path}:5: costs.slippage_bps: received -1, expected a value in [0, 10000]"
    )
    assert len(lines) == 3
    assert "Traceback" not in out.stderr


def test_a_missing_model_is_refused_saying_what_was_expected_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The message names the missing path, what a model path may name (once: the policy
    loader's words, not the loader's and the strategy's both) and the models root."""
    monkeypatch.delenv("OTONOM_MODELS_ROOT", raising=False)
    (tmp_path / "models").mkdir()
    path = _write(
        tmp_path / "s.yaml",
        "ensemble:\n  rl_policy:\n    enabled: true\n    model_path: models/x\n",
    )
    with pytest.raises(StrategyError) as caught:
        load_strategy(path)
    message = str(caught.value)
    assert f"{tmp_path / 'models' / 'x'} does not exist" in message
    assert message.count("expected a .onnx file") == 1, message
    assert f"expected it inside the models root {tmp_path}" in message


def test_the_default_strategy_is_the_checkout_s_file_or_the_same_bytes_shipped_in_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An installed ``otonom-train pipeline`` run from a folder of one's own has a default
    strategy (it used to stop: cannot read strategies/baseline_v1.yaml): the copy inside
    ``otonom_runtime``, byte for byte the checkout's file, so it loads to the same strategy
    with the same hash."""
    from otonom_runtime.strategy import BASELINE_STRATEGY, default_strategy_path

    monkeypatch.chdir(REPO)
    assert default_strategy_path() == BASELINE_STRATEGY
    monkeypatch.chdir(tmp_path)  # no strategies/ here
    shipped = Path(default_strategy_path())
    assert shipped.is_absolute(), shipped
    assert shipped.parent.name == "strategy", shipped
    assert shipped.read_bytes() == BASELINE.read_bytes()
    ours, theirs = load_strategy(shipped), load_strategy(BASELINE)
    assert ours == theirs
    assert ours.file_sha256 == theirs.file_sha256
    (tmp_path / "strategies").mkdir()
    (tmp_path / "strategies" / "baseline_v1.yaml").write_text("name: mine\n")
    assert load_strategy(default_strategy_path()).name == "mine"  # a user's own file wins
