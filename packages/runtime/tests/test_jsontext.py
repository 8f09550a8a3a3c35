"""The store's JSON text (``store.jsontext.dumps``, every engine's ``json_serializer``): exactly
``json.dumps``' text, each distinct value of a ``SharedValues`` encoded once; the engines write
JSON columns through it, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from sqlalchemy import select, text

from otonom_runtime.store import BacktestRun, get_session
from otonom_runtime.store import jsontext as jsontext_module
from otonom_runtime.store.jsontext import SharedValues, dumps

NEWS = {"news": "feed", "macro": "macro \u00e9t\u00e9"}
SYNTH = {"news": "synthetic", "macro": "synthetic"}
ODD = ["plain", "\u00fcml\u00e4ut", 'quote " and \\ and \n', "\u65e5\u672c", "\U0001f600", ""]


def _params(n: int) -> dict[str, Any]:
    names = [f"{ODD[i % len(ODD)]}{i}" for i in range(n)]
    return {
        "strategy": {"name": "s", "weights": [1.0, 0.5, float("inf")], "nan": float("nan")},
        "rl_enabled": True,
        "sentiment_sources": SharedValues(
            (n, NEWS if i % 3 else SYNTH) for i, n in enumerate(names)
        ),
        "purpose": "live",
        "none": None,
    }


@pytest.mark.parametrize(
    "value",
    [
        _params(50),
        _params(0),
        {"only": SharedValues()},
        {"a": SharedValues({"k": [1, 2.5, None]}), "b": SharedValues({"k": {"x": -0.0}})},
        {"shared": SharedValues({"x": NEWS, "y": NEWS}), 1: "an int key"},  # json.dumps' way
        {"not shared": SharedValues({1: NEWS})},  # type: ignore[dict-item]  # json.dumps' way
        {"plain": {"x": NEWS}},
        [SharedValues({"x": NEWS})],
        "text",
        3.25,
        None,
    ],
)
def test_the_text_is_json_dumps_text(value: Any) -> None:
    assert dumps(value) == json.dumps(value)


def test_each_distinct_shared_value_is_encoded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    encoded: list[Any] = []
    real = json.dumps

    def counting(value: Any, *args: Any, **kwargs: Any) -> str:
        encoded.append(value)
        return real(value, *args, **kwargs)

    monkeypatch.setattr("otonom_runtime.store.jsontext.json.dumps", counting)
    params = _params(300)
    assert dumps(params) == real(params)
    # the four other values and the two shared dicts, once each
    assert sum(v is NEWS for v in encoded) == 1
    assert sum(v is SYNTH for v in encoded) == 1
    assert len(encoded) == 6


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest) -> str:
    found: str = request.getfixturevalue("db_url" if request.param == "sqlite" else "pg")
    return found


def test_the_store_writes_json_columns_through_it(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    joined: list[int] = []
    real = jsontext_module._joined

    def spy(items: Any, encode: Any) -> str:
        joined.append(1)
        return real(items, encode)

    monkeypatch.setattr(jsontext_module, "_joined", spy)
    params = _params(40)
    params["strategy"].pop("nan")  # PostgreSQL's json type refuses NaN
    params["strategy"]["weights"].pop()  # and Infinity
    with get_session(url) as session:
        run = BacktestRun(
            strategy_name="s",
            strategy_hash="h",
            params=params,
            start_date=dt.date(2024, 1, 1),
            end_date=dt.date(2024, 1, 2),
        )
        session.add(run)
        session.commit()
        run_id = run.id
    assert joined  # written by dumps' shared way
    with get_session(url) as session:
        stored = session.scalars(select(BacktestRun.params).where(BacktestRun.id == run_id)).one()
        assert stored == json.loads(json.dumps(params))
        if session.get_bind().dialect.name == "sqlite":  # JSON kept as the text written
            raw = session.execute(text("SELECT params FROM backtest_runs")).scalar_one()
            assert raw == json.dumps(params)
