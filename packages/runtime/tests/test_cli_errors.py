"""The `otonom` command's edges: one `error:` line and nothing written when a command fails,
`--debug`, `--version`, the date flags. Real CLI runs in a subprocess on SQLite files."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import otonom_runtime
import otonom_schema

ROOT = Path(__file__).resolve().parents[3]
STRATEGY = str(ROOT / "strategies" / "baseline_v1.yaml")


def _run(
    args: list[str], cwd: Path, *, code: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m otonom_runtime ARGS`` in ``cwd`` (the store: ./data/otonom.db), or ``code``
    run with ``sys.argv[1:] = ARGS``."""
    env = {k: v for k, v in os.environ.items() if k != "OTONOM_DATABASE_URL"}
    head = ["-c", code, *args] if code else ["-m", "otonom_runtime", *args]
    return subprocess.run(
        [sys.executable, *head], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def _one_error(out: subprocess.CompletedProcess[str], message: str) -> None:
    """Exit 1, nothing on stdout, exactly one `error:` line (the first), no traceback."""
    assert out.returncode == 1, out.stderr
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert [line for line in lines if line.startswith("error:")] == lines[:1]
    assert lines[0].startswith(f"error: {message}"), lines[0]
    assert "Traceback" not in out.stderr


def _runs(db: Path) -> int:
    with sqlite3.connect(db) as con:
        (n,) = con.execute("SELECT count(*) FROM backtest_runs").fetchone()
    return int(n)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder whose ./data/otonom.db holds DEMO-BTC for 2020 (read only by the tests)."""
    cwd = tmp_path_factory.mktemp("store")
    args = ["data", "synth", "--symbol", "DEMO-BTC", "--start-date", "2020-01-01"]
    out = _run([*args, "--end-date", "2020-12-31"], cwd)
    assert out.returncode == 0, out.stderr
    return cwd


def test_version_names_the_packages(tmp_path: Path) -> None:
    out = _run(["--version"], tmp_path)
    assert out.returncode == 0
    assert out.stdout == (
        f"otonom {otonom_runtime.__version__} (otonom-runtime {otonom_runtime.__version__}, "
        f"otonom-schema {otonom_schema.__version__}, state schema {otonom_schema.SCHEMA_VERSION})\n"
    )
    assert list(tmp_path.iterdir()) == []


_BUG = (
    "import sys\n"
    "from otonom_runtime import cli\n"
    "from otonom_runtime.cli import data\n"
    "def boom(args):\n"
    "    raise ZeroDivisionError('boom')\n"
    "data._cmd_data_list = boom\n"
    "sys.exit(cli.main())\n"
)


def test_an_unexpected_exception_is_one_line(tmp_path: Path) -> None:
    out = _run(["data", "list"], tmp_path, code=_BUG)
    _one_error(out, "ZeroDivisionError: boom (unexpected; rerun with --debug for the traceback)")
    assert out.stderr.count("\n") == 1


_LONG = (
    "import sys\n"
    "from otonom_runtime import cli\n"
    "from otonom_runtime.cli import data\n"
    "def long(args):\n"
    "    for i in range(1_000_000):\n"
    "        print(f'row {i}')\n"
    "    return 0\n"
    "data._cmd_data_list = long\n"
    "sys.exit(cli.main())\n"
)


def test_a_reader_that_goes_away_is_no_error(tmp_path: Path) -> None:
    """``otonom ... | head -1``: the command's output cut short by its reader ends it quietly
    (exit 1, nothing on stderr), not with ``error: [Errno 32] Broken pipe``."""
    env = {k: v for k, v in os.environ.items() if k != "OTONOM_DATABASE_URL"}
    with subprocess.Popen(
        [sys.executable, "-c", _LONG, "data", "list"], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as proc:  # fmt: skip
        assert proc.stdout is not None
        assert proc.stdout.readline() == "row 0\n"
        proc.stdout.close()
        _, err = proc.communicate(timeout=300)
    assert (proc.returncode, err) == (1, "")


@pytest.mark.parametrize("args", [["--debug", "data", "list"], ["data", "list", "--debug"]])
def test_debug_shows_the_traceback(tmp_path: Path, args: list[str]) -> None:
    out = _run(args, tmp_path, code=_BUG)
    assert out.returncode == 1
    assert out.stderr.startswith("Traceback (most recent call last):")
    assert out.stderr.rstrip().endswith("ZeroDivisionError: boom")
    assert "error:" not in out.stderr


def test_debug_shows_the_traceback_of_an_expected_error(tmp_path: Path) -> None:
    out = _run(["data", "import-csv", "missing.csv", "--symbol", "X", "--debug"], tmp_path)
    assert out.returncode == 1
    assert "Traceback (most recent call last):" in out.stderr
    assert "DataImportError: cannot read missing.csv" in out.stderr


def test_backtest_start_after_end_writes_nothing(store: Path, tmp_path: Path) -> None:
    args = ["backtest", "--strategy-path", STRATEGY, "--symbol", "DEMO-BTC", "--plot", "none"]
    dates = ["--start-date", "2020-06-01", "--end-date", "2020-05-01"]
    message = "--start-date 2020-06-01 is after --end-date 2020-05-01"
    _one_error(_run([*args, *dates], store), message)
    assert _runs(store / "data" / "otonom.db") == 0
    _one_error(_run([*args, *dates], tmp_path), message)  # no store: none is created
    assert list(tmp_path.iterdir()) == []


def test_backtest_without_bars_in_the_period_stores_no_run(store: Path) -> None:
    args = ["backtest", "--strategy-path", STRATEGY, "--symbol", "DEMO-BTC", "--plot", "none"]
    out = _run([*args, "--start-date", "2022-06-01", "--end-date", "2022-07-01"], store)
    _one_error(
        out, "'DEMO-BTC' has no bar in 2022-06-01 .. 2022-07-01; its bars run 2020-01-01 .. "
    )
    assert "backtest:" not in out.stderr  # checked before the run started
    assert _runs(store / "data" / "otonom.db") == 0
    assert not (store / "reports").exists()


def test_backtest_of_an_unknown_symbol_creates_no_store(tmp_path: Path) -> None:
    args = ["backtest", "--strategy-path", STRATEGY, "--symbol", "NOPE"]
    out = _run([*args, "--start-date", "2020-01-01", "--end-date", "2020-02-01"], tmp_path)
    _one_error(out, "unknown symbol 'NOPE'")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["import-csv", "import-sentiment"])
def test_a_missing_csv_creates_no_store(tmp_path: Path, command: str) -> None:
    out = _run(["data", command, "missing.csv", "--symbol", "X"], tmp_path)
    _one_error(out, "cannot read missing.csv: No such file or directory")
    assert list(tmp_path.iterdir()) == []


def test_a_bad_csv_creates_no_store(tmp_path: Path) -> None:
    """The file is read after the store was opened: the store this call created goes again."""
    bad = tmp_path / "bad.csv"
    bad.write_text("Date,Open,High,Low,Close,Volume\n2020-01-01,10,8,9,9.5,100\n")
    out = _run(["data", "import-csv", "bad.csv", "--symbol", "X"], tmp_path)
    _one_error(out, "bad.csv: 1 bad row in OHLCV file")
    assert "  line 2: 2020-01-01: high 8.0 < low 9.0" in out.stderr.splitlines()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv"]


def test_a_failure_keeps_an_existing_store(store: Path) -> None:
    out = _run(["runs", "show", "99"], store)
    _one_error(out, "no backtest run with id 99")
    assert (store / "data" / "otonom.db").is_file()


def test_date_flags_long_and_short(tmp_path: Path) -> None:
    """`--start-date/--end-date` everywhere; `--start/--end` accepted as their alias."""
    long = ["--start-date", "2020-01-01", "--end-date", "2020-03-31"]
    short = ["--start", "2020-01-01", "--end", "2020-03-31"]
    for name, dates in (("long", long), ("short", short)):
        db = f"sqlite:///{(tmp_path / name / 'otonom.db').as_posix()}"
        out = _run(["--database-url", db, "data", "synth", "--symbol", "DEMO-X", *dates], tmp_path)
        assert out.returncode == 0, out.stderr
        assert "2020-01-01 .. 2020-03-31" in out.stdout
    helps = [_run([*cmd, "--help"], tmp_path).stdout for cmd in (["data", "synth"], ["backtest"])]
    for text in helps:
        assert "--start-date START" in text
        assert "--end-date END" in text
