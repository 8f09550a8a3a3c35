"""``otonom data ...`` run for real: ``python -m otonom_runtime`` in a subprocess, SQLite files."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from otonom_runtime.cli import main
from otonom_runtime.synth import GENERATOR_VERSION, generate_market


def _otonom(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "OTONOM_DATABASE_URL"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "otonom_runtime", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _url(tmp_path: Path) -> str:
    return f"sqlite:///{(tmp_path / 'db' / 'otonom.db').as_posix()}"


def test_help_runs_as_a_module(tmp_path: Path) -> None:
    top = _otonom("--help", cwd=tmp_path)
    assert top.returncode == 0
    assert top.stdout.startswith("usage: otonom ")
    assert "--database-url" in top.stdout


def _help(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    with pytest.raises(SystemExit) as info:
        main([*args, "--help"])
    assert info.value.code == 0
    return capsys.readouterr().out


def test_help_explains_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    top = _help(capsys)
    assert "OTONOM_DATABASE_URL" in top
    assert "./data/otonom.db" in top
    data = _help(capsys, "data")
    for command in ("import-csv", "import-sentiment", "synth", "list"):
        assert command in data
    assert "Data Health Index" in data
    synth = _help(capsys, "data", "synth")
    assert "--seed" in synth
    assert "deterministic" in synth
    assert "Adj Close is ignored" in _help(capsys, "data", "import-csv")
    sentiment = _help(capsys, "data", "import-sentiment")
    assert "macro" in sentiment
    assert "--source NAME" in sentiment
    assert "real symbols read" in " ".join(sentiment.split())


def test_synth_then_list_in_the_default_database_of_the_cwd(tmp_path: Path) -> None:
    args = ["data", "synth", "--symbol", "DEMO-BTC", "--symbol", "DEMO-ETH"]
    args += ["--start", "2020-01-01", "--end", "2020-12-31", "--seed", "7"]
    first = _otonom(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "732 bars, 732 news and 366 macro scores written" in first.stdout
    assert (tmp_path / "data" / "otonom.db").is_file()
    again = _otonom(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "unchanged: DEMO-BTC, DEMO-ETH" in again.stdout
    listing = _otonom("data", "list", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].split() == ["symbol", "synthetic", "first", "last", "bars", "health"]
    assert lines[2].split() == ["DEMO-BTC", "yes", "2020-01-01", "2020-12-31", "366", "1.00"]
    assert lines[3].split() == ["DEMO-ETH", "yes", "2020-01-01", "2020-12-31", "366", "1.00"]
    assert len({line.index("first") if "first" in line else -1 for line in lines[:1]}) == 1
    assert lines[0].index("bars") + 4 == lines[2].index("366") + 3  # right-aligned counts


def test_import_csv_and_sentiment_with_database_url_and_env_var(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bars = tmp_path / "btc.csv"
    bars.write_text(
        "Date,Open,High,Low,Close,Adj Close,Volume\n"
        "2020-01-01,10,12,9,11,11,100\n"
        "2020-01-02,11,13,10,12,12,200\n"
    )
    macro = tmp_path / "macro.csv"
    macro.write_text("date,score\n2020-01-01,0.5\n")
    news = tmp_path / "news.csv"
    news.write_text("date,score\n2020-01-02,-0.5\n")
    url = _url(tmp_path)
    args = ["--database-url", url, "data", "import-csv", str(bars), "--symbol", "BTC"]
    out = _otonom(*args, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (
        "BTC: 2 bars 2020-01-01 .. 2020-01-02 from btc.csv (2 inserted, 0 updated, 0 unchanged)"
    )
    # the rest in-process (same main()), the URL from the environment
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OTONOM_DATABASE_URL", url)
    assert main(["data", "import-sentiment", str(macro)]) == 0
    assert capsys.readouterr().out.startswith("macro: 1 macro scores")
    assert main(["data", "import-sentiment", str(news), "--symbol", "BTC"]) == 0
    assert capsys.readouterr().out.startswith("BTC: 1 news scores")
    assert main(["data", "list"]) == 0
    row = capsys.readouterr().out.splitlines()[2].split()
    assert row == ["BTC", "no", "2020-01-01", "2020-01-02", "2", "0.01"]  # 2 of 140 bars
    assert not (tmp_path / "data").exists()  # the default database was never touched


def test_bad_rows_exit_1_with_an_error_line_and_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("date,open,high,low,close,volume\n2020-01-01,10,8,9,11,100\n")
    out = _otonom(
        "--database-url",
        _url(tmp_path),
        "data",
        "import-csv",
        str(bad),
        "--symbol",
        "X",
        cwd=tmp_path,
    )
    assert out.returncode == 1
    assert out.stdout == ""
    assert out.stderr.startswith("error: bad.csv: 1 bad row in OHLCV file")
    assert "  line 2: 2020-01-01: high 8.0 < low 9.0" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--database-url", "nosuchdb:///x", "data", "list"], "error: cannot open database"),
        (["data", "import-csv", "missing.csv", "--symbol", "X"], "error: cannot read missing.csv"),
        (
            ["data", "synth", "--symbol", "A", "--start", "2020-02-01", "--end", "2020-01-01"],
            "error: synthetic range",
        ),
        (["data", "synth", "--symbol", "A", "--seed", "-1"], "error: seed -1 is out of range"),
        (["data", "import-sentiment", "missing.csv", "--symbol", "NOPE"], "error: "),
    ],
)
def test_expected_errors_exit_1(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    fragment: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OTONOM_DATABASE_URL", raising=False)
    assert main(args) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith(fragment)
    assert len(captured.err.strip().splitlines()) == 1


def test_unreadable_arguments_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for args in (["data", "synth", "--symbol", "A", "--start", "01/02/2020"], ["data"], []):
        with pytest.raises(SystemExit) as info:
            main(args)
        assert info.value.code == 2
    assert "'01/02/2020' is not a date; expected YYYY-MM-DD" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def test_import_csv_date_format_flag(tmp_path: Path) -> None:
    bars = tmp_path / "eu.csv"
    bars.write_text("Date,Open,High,Low,Close,Volume\n01/02/2020,10,12,9,11,100\n")
    url = _url(tmp_path)
    base = ["--database-url", url, "data", "import-csv", str(bars), "--symbol", "EU"]
    refused = _otonom(*base, cwd=tmp_path)
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: eu.csv: cannot tell day from month")
    assert "Traceback" not in refused.stderr
    out = _otonom(*base, "--date-format", "%d/%m/%Y", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "EU: 1 bars 2020-02-01 .. 2020-02-01" in out.stdout


def _rows(url: str) -> list[list[tuple[object, ...]]]:
    """Every symbol, bar, news and macro row of a SQLite store (read with the sqlite3 module)."""
    path = url.removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(path)) as db:
        return [
            db.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
            for table in ("symbols", "bars", "news_sentiment", "macro_sentiment")
        ]


def test_synth_never_changes_a_stored_bar_unless_replace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "--replace" in _help(capsys, "data", "synth")
    url = _url(tmp_path)
    synth = ["--database-url", url, "data", "synth", "--symbol", "DEMO-BTC", "--start"]
    seed = ["--seed", "7"]
    first = _otonom(*synth, "2020-01-01", "--end", "2020-03-31", *seed, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    longer = _otonom(*synth, "2020-01-01", "--end", "2020-06-30", *seed, cwd=tmp_path)
    assert longer.returncode == 0, longer.stderr
    assert "91 bars, 91 news and 91 macro scores written" in longer.stdout  # April .. June
    before = _rows(url)

    refused = _otonom(*synth, "2020-01-01", "--end", "2020-06-30", "--seed", "8", cwd=tmp_path)
    assert refused.returncode == 1
    assert refused.stdout == ""
    assert refused.stderr.splitlines() == [
        f"error: symbol 'DEMO-BTC': 182 stored bars differ from generator version "
        f"{GENERATOR_VERSION} seed 8 (they were made by generator version {GENERATOR_VERSION} "
        "seed 7): 2020-01-01, 2020-01-02, 2020-01-03 and 179 more; nothing was written; add "
        "--replace to delete its stored bars and news sentiment and generate 2020-01-01 .. "
        "2020-06-30 anew"
    ]
    assert _rows(url) == before

    replaced = _otonom(
        *synth, "2020-01-01", "--end", "2020-06-30", "--seed", "8", "--replace", cwd=tmp_path
    )
    assert replaced.returncode == 0, replaced.stderr
    assert "182 bars, 182 news and 0 macro scores written" in replaced.stdout
    expected = generate_market("DEMO-BTC", dt.date(2020, 1, 1), dt.date(2020, 6, 30), 8)
    stored = _rows(url)[1]
    assert [row[6] for row in stored] == expected.history.close.tolist()  # id,sym,date,o,h,l,c


def test_import_csv_refuses_changed_bars_unless_replace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "--replace" in _help(capsys, "data", "import-csv")
    header = "Date,Open,High,Low,Close,Adj Close,Volume\n"
    old = header + "2020-01-01,10,12,9,11,11,100\n2020-01-02,11,13,10,12,12,200\n"
    new = header + "2020-01-01,10,12,9,11,11,100\n2020-01-02,11,13,10,12.5,12.5,200\n"
    new += "2020-01-03,12,14,11,13,13,300\n"
    (tmp_path / "old.csv").write_text(old)
    (tmp_path / "new.csv").write_text(new)
    url = _url(tmp_path)
    load = ["--database-url", url, "data", "import-csv", "--symbol", "BTC"]
    assert _otonom(*load, "old.csv", cwd=tmp_path).returncode == 0
    before = _rows(url)
    same = _otonom(*load, "old.csv", cwd=tmp_path)
    assert same.returncode == 0, same.stderr
    assert "(0 inserted, 0 updated, 2 unchanged)" in same.stdout
    assert _rows(url) == before

    refused = _otonom(*load, "new.csv", cwd=tmp_path)
    assert refused.returncode == 1
    assert refused.stdout == ""
    assert refused.stderr.splitlines() == [
        "error: new.csv: 1 bar differs from the stored bars of 'BTC' (2020-01-02); nothing was "
        "imported; add --replace to overwrite them"
    ]
    assert _rows(url) == before

    replaced = _otonom(*load, "new.csv", "--replace", cwd=tmp_path)
    assert replaced.returncode == 0, replaced.stderr
    assert "(1 inserted, 1 updated, 1 unchanged)" in replaced.stdout
    assert [row[6] for row in _rows(url)[1]] == [11.0, 12.5, 13.0]
