"""Walk-forward validation: the window plan (pure), the configuration's rules, and one real run
at a small size (real SQLite file, synthetic market, real trainings and ONNX models)."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import itertools
import json
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from otonom_trainer import walkforward as wf
from otonom_trainer.walkforward import (
    WalkForwardConfig,
    WalkForwardError,
    add_months,
    plan_windows,
)

ROOT = Path(__file__).resolve().parents[3]
STRATEGY = str(ROOT / "strategies" / "baseline_v1.yaml")
D = dt.date
DAY = dt.timedelta(days=1)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otonom-train")
    sub = parser.add_subparsers(dest="command")
    wf.add_parser(sub)
    return parser


def _call(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    result: int = args.handler(args)
    return result


# --- add_months ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "months", "expected"),
    [
        (D(2024, 1, 1), 6, D(2024, 7, 1)),
        (D(2024, 1, 1), -6, D(2023, 7, 1)),
        (D(2024, 3, 31), -1, D(2024, 2, 29)),
        (D(2023, 3, 31), -1, D(2023, 2, 28)),
        (D(2023, 12, 15), 1, D(2024, 1, 15)),
        (D(2024, 1, 31), -36, D(2021, 1, 31)),
        (D(2020, 2, 29), 12, D(2021, 2, 28)),
        (D(2020, 5, 17), 0, D(2020, 5, 17)),
    ],
)
def test_add_months(day: dt.date, months: int, expected: dt.date) -> None:
    assert add_months(day, months) == expected


# --- the window plan -----------------------------------------------------------------------------


def test_default_plan_on_the_pipeline_history() -> None:
    """DEMO 2018-2023 (what the defaults generate), no sizes given: 3 years + 6 months, five
    calendar-aligned windows ending on 2023-12-31."""
    cfg = WalkForwardConfig(start=D(2018, 1, 1), end=D(2023, 12, 31))
    assert cfg.first_decision == D(2018, 6, 30)
    windows = cfg.windows()
    assert [(w.test_start, w.test_end) for w in windows] == [
        (D(2021, 7, 1), D(2021, 12, 31)),
        (D(2022, 1, 1), D(2022, 6, 30)),
        (D(2022, 7, 1), D(2022, 12, 31)),
        (D(2023, 1, 1), D(2023, 6, 30)),
        (D(2023, 7, 1), D(2023, 12, 31)),
    ]
    assert windows[0].train_start == D(2018, 7, 1)
    assert windows[0].train_end == D(2021, 6, 30)
    assert [w.index for w in windows] == [1, 2, 3, 4, 5]
    assert [w.label for w in windows] == ["W01", "W02", "W03", "W04", "W05"]


@pytest.mark.parametrize(
    ("first", "end", "train_years", "test_months"),
    [
        (D(2018, 6, 30), D(2023, 12, 31), 3, 6),
        (D(2020, 6, 29), D(2022, 6, 30), 1, 3),
        (D(2015, 2, 14), D(2024, 5, 17), 2, 5),
        (D(2016, 1, 1), D(2023, 3, 30), 1, 1),
        (D(2018, 8, 31), D(2024, 2, 29), 4, 12),
    ],
)
def test_windows_tile_the_history(
    first: dt.date, end: dt.date, train_years: int, test_months: int
) -> None:
    windows = plan_windows(first, end, train_years=train_years, test_months=test_months)
    assert windows
    assert windows[-1].test_end == end  # the last window stops at the end
    assert windows[0].train_start >= first
    for w in windows:
        assert w.train_start <= w.train_end < w.test_start <= w.test_end
        assert w.test_start == w.train_end + DAY  # train ends the day before the test starts
        assert w.train_start == add_months(w.test_start, -12 * train_years)
    for back, w in enumerate(reversed(windows)):  # full test periods, counted from the end
        assert w.test_end + DAY == add_months(end + DAY, -back * test_months)
        assert w.test_start == add_months(end + DAY, -(back + 1) * test_months)
    for a, b in itertools.pairwise(windows):
        assert b.test_start == a.test_end + DAY  # adjacent and not overlapping
        assert b.index == a.index + 1
    # as many windows as fit: one more would start its training before the first decision
    earlier = add_months(windows[0].test_start, -test_months)
    assert add_months(earlier, -12 * train_years) < first


def test_step_months_spaces_the_windows() -> None:
    first, end = D(2018, 6, 30), D(2023, 12, 31)
    default = plan_windows(first, end, train_years=3, test_months=6)
    assert plan_windows(first, end, train_years=3, test_months=6, step_months=6) == default
    overlapping = plan_windows(first, end, train_years=3, test_months=6, step_months=3)
    assert len(overlapping) == 9
    for a, b in itertools.pairwise(overlapping):
        assert b.test_start == add_months(a.test_start, 3)
        assert b.test_start < a.test_end  # overlapping test periods
    gapped = plan_windows(first, end, train_years=1, test_months=1, step_months=12)
    assert [w.test_start for w in gapped] == [D(y, 12, 1) for y in range(2019, 2024)]
    assert all(w.test_end == D(w.test_start.year, 12, 31) for w in gapped)


def test_too_short_history_names_what_it_needs() -> None:
    with pytest.raises(WalkForwardError, match="too short for one window") as err:
        plan_windows(D(2020, 6, 29), D(2022, 6, 30), train_years=2, test_months=6)
    text = str(err.value)
    assert "2020-06-29 .. 2022-06-30" in text  # what was given
    assert "need decisions from 2020-01-01" in text  # what was expected
    assert "--train-years" in text
    # exactly long enough: one window
    (only,) = plan_windows(D(2019, 7, 1), D(2022, 6, 30), train_years=2, test_months=12)
    assert (only.train_start, only.test_end) == (D(2019, 7, 1), D(2022, 6, 30))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"train_years": 0}, r"train_years: got 0; expected an integer >= 1"),
        ({"test_months": -1}, r"test_months: got -1; expected an integer >= 1"),
        ({"step_months": 0}, r"step_months: got 0; expected an integer >= 1"),
        ({"train_years": True}, r"train_years: got True"),
        ({"train_years": 1.5}, r"train_years: got 1.5"),
    ],
)
def test_plan_rejects_bad_sizes(kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"train_years": 1, "test_months": 3, **kwargs}
    with pytest.raises(WalkForwardError, match=match):
        plan_windows(D(2018, 1, 1), D(2023, 1, 1), **args)


# --- the configuration ---------------------------------------------------------------------------


def test_config_defaults() -> None:
    cfg = WalkForwardConfig(test_months=4)
    assert cfg.step_months == 4  # default: adjacent test periods
    assert cfg.symbols == ("DEMO-BTC", "DEMO-ETH", "DEMO-SOL")
    assert cfg.out_dir == "reports/walk-forward"
    assert WalkForwardConfig(symbols=["DEMO-X"]).symbols == ("DEMO-X",)  # type: ignore[arg-type]
    assert json.loads(json.dumps(cfg.to_dict()))["start"] is None  # from the stored bars
    assert cfg.train_years is None  # 3, shrunk to fit (otonom_trainer.ranges.fit_windows)
    dated = WalkForwardConfig(start=D(2018, 1, 1), end=D(2023, 12, 31))
    assert json.loads(json.dumps(dated.to_dict()))["start"] == "2018-01-01"
    with pytest.raises(AttributeError):
        cfg.epochs = 3  # type: ignore[misc]


def test_each_window_trains_with_the_pipeline_s_recipe_by_default() -> None:
    """The windows judge what ``otonom-train pipeline`` ships: its epochs and teacher rows (they
    used to train 20 epochs on the window's rows alone, a weaker clone than the shipped one)."""
    from otonom_trainer.pipeline import PipelineConfig

    wf, pipeline = WalkForwardConfig(), PipelineConfig()
    for name in ("epochs", "batch_size", "hidden_dim", "teacher_rows", "teacher_noise"):
        assert getattr(wf, name) == getattr(pipeline, name), name
    assert wf.teacher_rows > 0
    args = _parser().parse_args(["walk-forward"])
    assert (args.epochs, args.teacher_rows, args.teacher_noise) == (
        wf.epochs,
        wf.teacher_rows,
        wf.teacher_noise,
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"train_years": 0}, r"train_years: got 0; expected an integer >= 1"),
        ({"test_months": 0}, r"test_months: got 0"),
        ({"step_months": -2}, r"step_months: got -2"),
        ({"epochs": 0}, r"epochs: got 0; expected an integer >= 1"),
        ({"batch_size": "256"}, r"batch_size: got '256'"),
        ({"hidden_dim": 0}, r"hidden_dim: got 0"),
        ({"seed": -1}, r"seed: got -1; expected an integer >= 0"),
        ({"symbols": ()}, r"symbols: got \(\); expected one or more non-empty symbol names"),
        ({"symbols": ("DEMO-A", "DEMO-A")}, r"got \('DEMO-A', 'DEMO-A'\); expected .* each once"),
        ({"symbols": ("DEMO-A", "")}, r"expected one or more non-empty symbol names"),
        ({"start": D(2023, 1, 1), "end": D(2023, 1, 1)}, r"start 2023-01-01 is not before end"),
        ({"start": "2018-01-01"}, r"start: got '2018-01-01'; expected a datetime.date"),
        ({"strategy_path": ""}, r"strategy_path: got ''"),
        ({"database_url": " "}, r"database_url: got ' '"),
        ({"out_dir": ""}, r"out_dir: got ''"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(WalkForwardError, match=match) as err:
        WalkForwardConfig(**kwargs)
    assert isinstance(err.value, ValueError)


def test_too_short_history_fails_before_any_work(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    out = tmp_path / "wf"
    argv = [
        "walk-forward",
        "--strategy-path",
        STRATEGY,
        "--symbol",
        "DEMO-BTC",
        "--start-date",
        "2021-01-01",
        "--end-date",
        "2022-06-30",
        "--train-years",
        "2",
        "--test-months",
        "6",
        "--database-url",
        f"sqlite:///{db}",
        "--out",
        str(out),
    ]
    with pytest.raises(WalkForwardError, match="history is too short") as err:
        _call(argv)
    assert "2021-06-30 .. 2022-06-30" in str(err.value)
    assert not db.exists()
    assert not out.exists()


def test_unknown_symbol_is_refused(tmp_path: Path) -> None:
    argv = [
        "walk-forward",
        "--strategy-path",
        STRATEGY,
        "--symbol",
        "BTC-USD",
        "--database-url",
        f"sqlite:///{tmp_path / 'store.db'}",
        "--out",
        str(tmp_path / "wf"),
        "--quiet",
    ]
    with pytest.raises(WalkForwardError, match=r"\['BTC-USD'\] are not in the store"):
        _call(argv)
    assert not (tmp_path / "wf").exists()


def test_help_explains_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        _parser().parse_args(["walk-forward", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for flag in (
        "--strategy-path",
        "--symbol",
        "--start-date",
        "--end-date",
        "--train-years",
        "--test-months",
        "--step-months",
        "--epochs",
        "--seed",
        "--out",
        "--database-url",
        "--quiet",
    ):
        assert flag in text
    assert "Walk-forward validation" in text
    assert "walk_forward.json" in text


def test_bad_flag_values_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        _parser().parse_args(["walk-forward", "--start-date", "2018-13-01"])
    assert exit_.value.code == 2
    assert "'2018-13-01' is not a date; expected YYYY-MM-DD" in capsys.readouterr().err
    args = _parser().parse_args(["walk-forward", "--test-months", "0", "--quiet"])
    with pytest.raises(WalkForwardError, match="test_months: got 0"):
        args.handler(args)


# --- one real run --------------------------------------------------------------------------------


@dataclass
class Run:
    code: int
    stdout: str
    out: Path
    db: Path
    report: dict[str, Any]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """2 DEMO symbols, 2.5 years of data, 1 year train + 3 months test, 2 epochs, hidden 16."""
    root = tmp_path_factory.mktemp("walk_forward")
    db, out = root / "store.db", root / "wf"
    argv = [
        "walk-forward",
        "--strategy-path",
        STRATEGY,
        "--symbol",
        "DEMO-BTC",
        "--symbol",
        "DEMO-ETH",
        "--start-date",
        "2020-01-01",
        "--end-date",
        "2022-06-30",
        "--train-years",
        "1",
        "--test-months",
        "3",
        "--epochs",
        "2",
        "--hidden-dim",
        "16",
        "--teacher-rows",
        "300",
        "--database-url",
        f"sqlite:///{db}",
        "--out",
        str(out),
    ]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = _call(argv)
    report = json.loads((out / "walk_forward.json").read_text(encoding="utf-8"))
    return Run(code, buf.getvalue(), out, db, report)


def test_run_windows_match_the_plan(small_run: Run) -> None:
    assert small_run.code == 0
    plan = plan_windows(D(2020, 6, 29), D(2022, 6, 30), train_years=1, test_months=3)
    assert len(plan) == 4
    rows = small_run.report["windows"]
    assert [
        (r["window"], r["train_start"], r["train_end"], r["test_start"], r["test_end"])
        for r in rows
    ] == [
        (w.index, str(w.train_start), str(w.train_end), str(w.test_start), str(w.test_end))
        for w in plan
    ]
    assert rows[-1]["test_end"] == "2022-06-30"
    # progress: a line as each window starts and as it finishes, in order
    lines = small_run.stdout.splitlines()
    for w in plan:
        started = f"[window {w.index}/4] train {w.train_start} .. {w.train_end}"
        done = f"[window {w.index}/4] done"
        i = next(n for n, line in enumerate(lines) if line.startswith(started))
        j = next(n for n, line in enumerate(lines) if line.startswith(done))
        assert i < j
    assert "Training Complete" not in small_run.stdout  # the trainer's log went to train.log


def test_run_numbers_are_consistent(small_run: Run) -> None:
    rows = small_run.report["windows"]
    agg = small_run.report["aggregate"]
    for r in rows:
        assert 0.0 <= r["accuracy"] <= 1.0
        assert 0.0 <= r["macro_f1"] <= 1.0
        assert r["train_rows"] > 0
        assert r["test_rows"] > 0
        assert r["rl_fallbacks"] == 0
        for key in ("sharpe_no_rl", "sharpe_rl", "return_no_rl", "return_rl"):
            assert r[key] is not None
            assert math.isfinite(r[key])
        assert r["sharpe_delta"] == pytest.approx(r["sharpe_rl"] - r["sharpe_no_rl"])
        assert r["run_ids"]["no_rl"] != r["run_ids"]["rl"]
        # 2 symbols, one decision per calendar day of the test period
        days = (D.fromisoformat(r["test_end"]) - D.fromisoformat(r["test_start"])).days + 1
        assert r["test_rows"] == 2 * days

    def mean(key: str) -> float:
        return sum(r[key] for r in rows) / len(rows)

    assert agg["windows"] == len(rows) == 4
    for key in ("accuracy", "macro_f1", "sharpe_no_rl", "sharpe_rl", "sharpe_delta"):
        assert agg[f"mean_{key}"] == pytest.approx(mean(key))
    assert agg["mean_return_no_rl"] == pytest.approx(mean("return_no_rl"))
    assert agg["mean_return_rl"] == pytest.approx(mean("return_rl"))
    assert agg["mean_train_rows"] == pytest.approx(mean("train_rows"))
    assert agg["test_rows"] == sum(r["test_rows"] for r in rows)
    assert agg["compared"] == 4
    assert agg["rl_at_least_no_rl"] == sum(r["sharpe_rl"] >= r["sharpe_no_rl"] for r in rows)
    assert agg["rl_fallbacks"] == 0
    assert small_run.report["config"]["train_years"] == 1
    assert small_run.report["config"]["step_months"] == 3


def test_run_writes_the_report(small_run: Run) -> None:
    out = small_run.out
    assert (out / "walk_forward.png").read_bytes()[:4] == b"\x89PNG"
    table = (out / "walk_forward.md").read_text(encoding="utf-8")
    lines = [line for line in table.splitlines() if line.startswith("|")]
    assert len(lines) == 2 + 4 + 1  # header, rule, a row per window, the mean
    assert "| W01 | 2020-07-01 .. 2021-06-30 | 2021-07-01 .. 2021-09-30 |" in table
    assert lines[-1].startswith("| **mean of 4** |")
    agg = small_run.report["aggregate"]
    assert f"| {agg['mean_accuracy']:.3f} |" in lines[-1]
    assert f"in {agg['rl_at_least_no_rl']} of 4 windows" in table
    assert table.strip() in small_run.stdout  # the same table on the console
    for k in range(1, 5):
        wdir = out / f"window_{k:02d}"
        for name in ("train.npz", "test.npz", "train.log", "model/policy_best.onnx"):
            assert (wdir / name).is_file(), wdir / name
        assert small_run.report["windows"][k - 1]["model"] == str(
            wdir / "model" / "policy_best.onnx"
        )
        log = (wdir / "train.log").read_text(encoding="utf-8")
        assert "Training Complete" in log
        # the teacher rows (--teacher-rows 300), dated inside the window's training period
        window = small_run.report["windows"][k - 1]
        line = next(x for x in log.splitlines() if x.startswith("Teacher rows: 300 "))
        first, last = line.rsplit("dated ", 1)[1].split(" .. ")
        assert window["train_start"] <= first <= last <= window["train_end"], line
    assert small_run.db.is_file()


# --- the real command line (once cli.py wires add_parser in) -------------------------------------


def test_real_cli_help_and_error_exit(tmp_path: Path) -> None:
    from otonom_trainer import cli

    if "walk-forward" not in Path(cli.__file__).read_text(encoding="utf-8"):
        pytest.skip("otonom_trainer.cli does not wire walkforward.add_parser in yet")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "otonom_trainer", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )

    out = run("walk-forward", "--help")
    assert out.returncode == 0, out.stderr
    assert "Walk-forward validation" in out.stdout
    out = run(
        "walk-forward",
        "--strategy-path",
        STRATEGY,
        "--start-date",
        "2022-01-01",
        "--end-date",  # both dates given: the window plan is checked before any work
        "2023-12-31",
        "--train-years",
        "3",
    )
    assert out.returncode == 1
    assert out.stderr.startswith("error: the history is too short for one window")
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "data").exists()
