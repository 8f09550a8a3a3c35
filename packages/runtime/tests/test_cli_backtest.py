"""`otonom backtest`, `otonom runs list/show`: real CLI runs in a subprocess on a SQLite file."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _otonom(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otonom_runtime", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_backtest_then_runs(tmp_path: Path) -> None:
    synth = _otonom(
        "data",
        "synth",
        "--symbol",
        "DEMO-BTC",
        "--symbol",
        "DEMO-ETH",
        "--start",
        "2020-01-01",
        "--end",
        "2021-12-31",
        cwd=tmp_path,
    )
    assert synth.returncode == 0, synth.stderr
    out = _otonom(
        "backtest",
        "--strategy-path",
        str(ROOT / "strategies" / "baseline_v1.yaml"),
        "--symbol",
        "DEMO-BTC",
        "--symbol",
        "DEMO-ETH",
        "--start-date",
        "2020-06-01",
        "--end-date",
        "2021-12-31",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "Action distribution:" in out.stdout
    assert "Sharpe" in out.stdout
    assert "run id: 1" in out.stdout
    png = tmp_path / "reports" / "backtest_run_1.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "backtest: 100%" in out.stderr  # the progress bar

    listed = _otonom("runs", "list", cwd=tmp_path)
    assert listed.returncode == 0
    assert "baseline_v1" in listed.stdout
    assert "complete" in listed.stdout
    header, _, row = listed.stdout.splitlines()
    assert "made by" in header
    assert (
        row.split()[8] == "user"
    )  # (the dates take 3 cells) a run of `otonom backtest`: not internal, no footnote
    shown = _otonom("runs", "show", "1", cwd=tmp_path)
    assert shown.returncode == 0
    assert "made by     user\n" in shown.stdout
    assert "{" not in shown.stdout  # tables, not JSON
    lines = shown.stdout.splitlines()
    assert lines[0].split() == ["run", "1"]
    for key in ("strategy", "status", "dates", "symbols", "created", "finished"):
        assert any(line.startswith(key) for line in lines), key
    assert any(line.split() == ["status", "complete"] for line in lines)
    assert any(line.split()[:3] == ["metric", "portfolio", "DEMO-BTC"] for line in lines)
    assert any(line.startswith("Sharpe") for line in lines)
    record = json.loads(_otonom("runs", "show", "1", "--json", cwd=tmp_path).stdout)
    assert (record["id"], record["status"]) == (1, "complete")
    counts = record["metrics"]["action_counts"]
    for symbol in ("DEMO-BTC", "DEMO-ETH", "all"):
        c = counts[symbol]
        row = next(line.split() for line in lines if line.startswith(symbol + " "))
        assert row[1::2] == [str(c["HOLD"]), str(c["BUY"]), str(c["SELL"]), str(sum(c.values()))]
    missing = _otonom("runs", "show", "99", cwd=tmp_path)
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: no backtest run with id 99"


def test_backtest_errors_are_one_line(tmp_path: Path) -> None:
    out = _otonom(
        "backtest",
        "--strategy-path",
        str(ROOT / "strategies" / "baseline_v1.yaml"),
        "--symbol",
        "NOPE",
        "--start-date",
        "2020-01-01",
        "--end-date",
        "2020-02-01",
        "--plot",
        "none",
        cwd=tmp_path,
    )
    assert out.returncode == 1
    assert out.stderr.startswith("error: unknown symbol 'NOPE'")
    assert "Traceback" not in out.stderr


def test_no_rl_runs_a_strategy_whose_model_is_missing(tmp_path: Path) -> None:
    """A strategy with the RL analyst on and no model where it points is refused (the strategy
    error, naming the model path); ``--no-rl`` switches the analyst off for the run, so the model is
    not looked for: the backtest runs, and its run records the RL analyst off."""
    synth = _otonom("data", "synth", "--symbol", "DEMO-BTC", "--start", "2020-01-01",
                    "--end", "2020-12-31", cwd=tmp_path)  # fmt: skip
    assert synth.returncode == 0, synth.stderr
    strategy = tmp_path / "rl.yaml"
    strategy.write_text(
        "name: rl\nensemble:\n  analyst_weights: {tech: 1.0, news: 1.0, risk: 1.0, rl: 2.0}\n"
        "  rl_policy: {enabled: true, model_path: models/gone/policy_best.onnx}\n",
        encoding="utf-8",
    )
    args = ["backtest", "--strategy-path", str(strategy), "--symbol", "DEMO-BTC", "--plot", "none"]
    refused = _otonom(*args, cwd=tmp_path)
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: "), refused.stderr
    assert "models/gone/policy_best.onnx" in refused.stderr
    assert "Traceback" not in refused.stderr
    ran = _otonom(*args, "--no-rl", "--quiet", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert "run id: 1" in ran.stdout
    record = json.loads(_otonom("runs", "show", "1", "--json", cwd=tmp_path).stdout)
    assert record["params"]["rl_enabled"] is False


def _decided(store: Path) -> list[tuple[int, str, str, int]]:
    """Per run: (run id, first decision day, last decision day, decisions) from the store."""
    with contextlib.closing(sqlite3.connect(store)) as db:
        return db.execute(
            "SELECT run_id, MIN(date), MAX(date), COUNT(*) FROM decisions GROUP BY run_id"
        ).fetchall()


def test_backtest_without_dates_or_strategy_runs_from_the_warmup_to_the_last_bar(
    tmp_path: Path,
) -> None:
    """Two synthetic symbols of a few hundred daily bars, the second shorter at both ends: the
    common range is the second's, the first decision 180 days after its first bar."""
    for symbol, start, end in (
        ("DEMO-BTC", "2020-01-01", "2020-12-31"),
        ("DEMO-ETH", "2020-02-01", "2020-11-30"),
    ):
        synth = _otonom(
            "data", "synth", "--symbol", symbol, "--start", start, "--end", end, cwd=tmp_path
        )
        assert synth.returncode == 0, synth.stderr
    symbols = ("--symbol", "DEMO-BTC", "--symbol", "DEMO-ETH")
    out = _otonom("backtest", *symbols, "--plot", "none", "--quiet", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    first, last = dt.date(2020, 2, 1) + dt.timedelta(days=180), dt.date(2020, 11, 30)
    assert first == dt.date(2020, 7, 30)
    days = (last - first).days + 1
    lines = out.stdout.splitlines()
    assert lines[:4] == [
        "dates (from the bars in the store):",
        "  warm-up:  2020-02-01 .. 2020-07-29 (180 bars before the first decision; needs >= "
        "140 bars and >= 180 days)",
        f"  decisions: 2020-07-30 .. 2020-11-30 ({days} days)",
        "  calendar: 365 bars a year (inferred: bars on (almost) every day)",
    ]
    assert lines[4].startswith("run 1: baseline_v1 on DEMO-BTC, DEMO-ETH 2020-07-30 .. 2020-11-30")
    store = tmp_path / "data" / "otonom.db"
    assert _decided(store) == [(1, "2020-07-30", "2020-11-30", 2 * days)]

    # --end alone: the start from the bars up to it; --start alone: the end is the last bar
    out = _otonom("backtest", *symbols, "--end", "2020-09-30", "--plot", "none", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "dates (end given, the start from the bars in the store):" in out.stdout
    assert "  decisions: 2020-07-30 .. 2020-09-30 (63 days)" in out.stdout
    out = _otonom("backtest", *symbols, "--start", "2020-03-01", "--plot", "none", cwd=tmp_path)
    assert out.returncode == 0, out.stderr  # inside the warm-up: run as given, and said
    assert "2020-03-01 .. 2020-11-30" in out.stdout
    assert out.stderr.splitlines()[:1] == [  # (the progress bar below it)
        "warning: --start-date 2020-03-01 falls in the warm-up of DEMO-BTC (60 bar(s) before, "
        "the first 2020-01-01; it ends 2020-06-29); DEMO-ETH (29 bar(s) before, the first "
        "2020-02-01; it ends 2020-07-30): until then a decision sees less than 140 bars and "
        "180 days of history (the missing features neutral, the DSI feature low); without "
        "--start-date a backtest starts after the warm-up"
    ]
    decided = _decided(store)
    assert decided[1][1:3] == ("2020-07-30", "2020-09-30")
    assert decided[2][1:3] == ("2020-03-01", "2020-11-30")
    # both dates given, the start after both warm-ups (DEMO-ETH's ends 2020-07-30): no warning
    dates = ("--start", "2020-07-30", "--end", "2020-08-31")
    out = _otonom("backtest", *symbols, *dates, "--plot", "none", "--quiet", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    out = _otonom("backtest", *symbols, "--start", "2020-07-29", "--end", "2020-08-31",
                  "--plot", "none", "--quiet", cwd=tmp_path)  # fmt: skip
    assert out.stderr.startswith("warning: --start-date 2020-07-29 falls in the warm-up of ")
    assert "DEMO-ETH (179 bar(s) before" in out.stderr
    assert "DEMO-BTC" not in out.stderr


def test_backtest_without_dates_refuses_too_few_bars_in_one_line(tmp_path: Path) -> None:
    synth = _otonom(
        "data",
        "synth",
        "--symbol",
        "SHORT",
        "--start",
        "2020-01-01",
        "--end",
        "2020-06-01",
        cwd=tmp_path,
    )
    assert synth.returncode == 0, synth.stderr
    out = _otonom("backtest", "--symbol", "SHORT", cwd=tmp_path)
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith("error: SHORT has 153 bars (2020-01-01 .. 2020-06-01)")
    assert "the backtest needs at least 182 bars" in out.stderr
    assert out.stdout == ""
    assert _decided(tmp_path / "data" / "otonom.db") == []
    with contextlib.closing(sqlite3.connect(tmp_path / "data" / "otonom.db")) as db:
        assert db.execute("SELECT COUNT(*) FROM backtest_runs").fetchone() == (0,)
    assert not (tmp_path / "reports").exists()


def test_the_command_line_is_built_without_the_strategy_package() -> None:
    """``otonom``'s parser (every subcommand's flags, the backtest's default strategy and its
    help included) loads neither the strategy package nor the ensemble or the serving code:
    ``otonom --help`` and ``otonom data list`` do not pay for them (~70 ms)."""
    code = (
        "import sys; from otonom_runtime.cli import _build_parser; _build_parser(); "
        "print(sorted(m for m in sys.modules if m.startswith(('otonom_runtime.strategy', "
        "'otonom_runtime.ensemble', 'otonom_runtime.serving', 'onnxruntime'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
