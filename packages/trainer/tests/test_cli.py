"""The otonom-train entry point, run for real in a subprocess."""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import otonom_runtime
import otonom_schema
import otonom_trainer
from otonom_runtime.cli import _build_parser as runtime_parser
from otonom_runtime.testing.models import make_policy_model
from otonom_schema.testing import random_history
from otonom_trainer.cli import _build_parser as trainer_parser

pytestmark = pytest.mark.long  # minutes of subprocess runs: scheduled first (conftest.py)

ROOT = Path(__file__).resolve().parents[3]


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otonom_trainer.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def test_help_explains_itself() -> None:
    out = _run("--help")
    assert out.returncode == 0
    assert "behaviour-cloning policy" in out.stdout
    assert "pipeline" in out.stdout


def test_version_names_the_packages_and_the_schema() -> None:
    out = _run("--version")
    assert out.returncode == 0
    assert out.stdout == (
        f"otonom-train {otonom_trainer.__version__} (otonom-trainer {otonom_trainer.__version__}, "
        f"otonom-runtime {otonom_runtime.__version__}, otonom-schema {otonom_schema.__version__}, "
        f"state schema {otonom_schema.SCHEMA_VERSION}, fingerprint "
        f"{otonom_schema.schema_fingerprint()})\n"
    )


def test_pipeline_end_to_end_small(tmp_path: Path) -> None:
    """The main job at a small size: real CLI, real SQLite file, real ONNX model."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "otonom_trainer",
            "pipeline",
            "--strategy-path",
            str(ROOT / "strategies" / "baseline_v1.yaml"),
            "--symbol",
            "DEMO-BTC",
            "--start-date",
            "2020-01-01",
            "--end-date",
            "2021-12-31",
            "--epochs",
            "2",
            "--teacher-rows",
            "0",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    # two epochs on one symbol without teacher rows do not pass the production gate: exit 1
    # (documented)
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    assert "the production gate rejected" in out.stderr
    assert "failed: val accuracy" in out.stderr
    for stage in range(1, 8):
        assert f"[{stage}/7]" in out.stdout
    assert "| ensemble (no RL) | ensemble + RL |" in out.stdout
    # the gate's deliberate fallback run (model file removed) is reported in its table, not
    # as runtime warnings
    assert "RL analyst" not in out.stderr
    runs = tmp_path / "reports" / "pipeline"
    report = runs / (runs / "latest").read_text().strip()  # the run's own folder
    assert f"report: reports/pipeline/{report.name}/" in out.stdout
    table = json.loads((report / "table.json").read_text())
    assert set(table["rows"]) == {"ensemble (no RL)", "ensemble + RL"}
    assert 0.0 <= table["rows"]["ensemble + RL"]["policy accuracy (held-out)"] <= 1.0
    assert table["rows"]["ensemble + RL"]["RL fallbacks"] == 0
    for png in ("equity.png", "confusion_matrix.png"):
        assert (report / png).read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "data" / "otonom.db").is_file()
    model = Path(table["model"])  # relative to the run's folder
    assert model.name == "policy_best.onnx"
    assert (tmp_path / model).is_file()
    assert model.parent.parent == Path("models") / "rl_bc"  # a version folder
    # nothing is promoted
    assert "NOT promoted: failed val accuracy" in out.stdout
    assert table["gate"]["passed"] is False
    assert not (tmp_path / "models" / "rl_bc" / "latest").exists()
    assert (tmp_path / model.parent / "check.md").is_file()
    assert model.parent.name == report.name  # the run is named like the model version


def test_pipeline_help_documents_the_exit_status_and_run_folders() -> None:
    out = _run("pipeline", "--help")
    assert out.returncode == 0
    text = " ".join(out.stdout.split())
    assert "1 when it rejects the model" in text
    assert "--teacher-rows N add N rows labelled by the teacher ensemble" in text
    assert "--teacher-noise SD" in text
    assert "--run-name" in text
    assert "REPORT_DIR/RUN_NAME/" in text


def test_pipeline_refuses_unknown_symbols(tmp_path: Path) -> None:
    strategy = str(ROOT / "strategies" / "baseline_v1.yaml")
    out = _run("pipeline", "--strategy-path", strategy, "--symbol", "BTC-USD", cwd=tmp_path)
    assert out.returncode == 1
    assert "not in the store" in out.stderr
    assert "--import-csv" in out.stderr
    assert list(tmp_path.iterdir()) == []  # no empty store, no empty report folder


# --- the edges: one error line, nothing written, flags, help ------------------------------------


def _one_error(out: subprocess.CompletedProcess[str], message: str, code: int = 1) -> None:
    """Exit ``code``, exactly one `error:` line (the last line of stderr), no traceback."""
    assert out.returncode == code, out.stderr
    lines = out.stderr.splitlines()
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], out.stderr
    assert lines[-1].startswith(f"error: {message}"), lines[-1]
    assert "Traceback" not in out.stderr


def _dataset(path: Path, n: int = 300) -> Path:
    history = random_history(n, seed=3, vol=0.005)
    actions = np.random.default_rng(3).integers(0, 3, size=n)
    ds = otonom_schema.OfflineDataset(
        otonom_schema.compute_states(history),
        actions.astype(np.int64),
        np.where(actions > 0, 0.5, 0.0).astype(np.float32),
        np.repeat(["S"], n),
        history.dates,
        {"source": "test"},
    )
    otonom_schema.save_dataset(ds, path)
    return path


def test_flags_override_the_config_file_dataset_and_output_included(tmp_path: Path) -> None:
    _dataset(tmp_path / "flag.npz")
    (tmp_path / "cfg.yaml").write_text(
        "dataset_path: missing.npz\noutput_dir: from_file\nmax_epochs: 1\nhidden_dim: 8\n"
        "num_layers: 1\ndevice: cpu\nprogress: false\n"
    )
    args = ["train", "--config", "cfg.yaml", "--dataset", "flag.npz", "--output", "from_flag"]
    out = _run(*args, "--batch-size", "32", "--no-export", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert not (tmp_path / "from_file").exists()
    config = json.loads((tmp_path / "from_flag" / "metadata.json").read_text())["config"]
    assert config["dataset_path"] == "flag.npz"  # the flags win
    assert config["output_dir"] == "from_flag"
    assert config["batch_size"] == 32
    assert (config["max_epochs"], config["hidden_dim"], config["progress"]) == (1, 8, False)
    # the file alone (no dataset_path in it) needs --dataset: the flag completes it
    (tmp_path / "cfg.yaml").write_text("max_epochs: 1\nhidden_dim: 8\ndevice: cpu\n")
    again = _run(
        "train",
        "--config",
        "cfg.yaml",
        "--dataset",
        "flag.npz",
        "--no-export",
        "--output",
        "second",
        "--no-progress",
        cwd=tmp_path,
    )
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "second" / "policy_best.pt").is_file()


_BUG = (
    "import sys\n"
    "from otonom_trainer import cli\n"
    "def boom(args):\n"
    "    raise ZeroDivisionError('boom')\n"
    "cli._cmd_export = boom\n"
    "sys.exit(cli.main())\n"
)


def test_an_unexpected_exception_is_one_line_and_debug_shows_it(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", _BUG, *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )

    out = run("export", "--checkpoint", "x.pt")
    _one_error(out, "ZeroDivisionError: boom (unexpected; rerun with --debug for the traceback)")
    assert out.stderr.count("\n") == 1
    for args in (
        ["--debug", "export", "--checkpoint", "x.pt"],
        ["export", "--checkpoint", "x.pt", "--debug"],
    ):
        debug = run(*args)
        assert debug.returncode == 1
        assert debug.stderr.startswith("Traceback (most recent call last):")
        assert debug.stderr.rstrip().endswith("ZeroDivisionError: boom")


_STRATEGY = str(ROOT / "strategies" / "baseline_v1.yaml")
_DATES = ["--start-date", "2020-01-01", "--end-date", "2020-06-30"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["dataset", "--symbol", "X", *_DATES], "there is no store at "),
        (["train", "--dataset", "missing.npz"], "no dataset file at missing.npz"),
        (["train"], "no dataset: give --dataset FILE.npz"),  # a command-line error: exit 2
        (["export", "--checkpoint", "missing.pt"], "no checkpoint at missing.pt"),
        (["evaluate", "--model", "m", "--dataset", "d.npz"], "no dataset file at d.npz"),
        (["explain", "--model", "m", "--dataset", "d.npz"], "no dataset file at d.npz"),
        (["check", "m", "--symbol", "X", *_DATES], "there is no store at "),
        (
            [
                "pipeline",
                "--strategy-path",
                _STRATEGY,
                "--start-date",
                "2021-01-01",
                "--end-date",
                "2020-01-01",
            ],
            "start 2021-01-01 is not before end 2020-01-01",
        ),
        (
            [
                "walk-forward",
                "--strategy-path",
                _STRATEGY,
                "--start-date",
                "2023-06-01",
                "--end-date",
                "2023-12-31",
            ],
            "the history is too short for one window",
        ),
    ],
)
def test_every_command_fails_with_one_error_line_writing_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    make_policy_model(tmp_path / "m" / "policy_best.onnx")
    before = sorted(tmp_path.rglob("*"))
    _one_error(_run(*args, cwd=tmp_path), message, code=2 if args == ["train"] else 1)
    assert sorted(tmp_path.rglob("*")) == before


def test_pipeline_with_a_missing_csv_writes_nothing(tmp_path: Path) -> None:
    out = _run("pipeline", "--import-csv", "missing.csv", "--symbol", "X", cwd=tmp_path)
    _one_error(out, "cannot read missing.csv (--import-csv): no such file")
    assert list(tmp_path.iterdir()) == []  # no data/otonom.db, no reports/pipeline/


def _csv(path: Path, first: str, days: int) -> None:
    """A daily OHLCV file of ``days`` bars from ``first`` (ISO date)."""
    import datetime as dt

    start = dt.date.fromisoformat(first)
    prices = [(start + dt.timedelta(days=d), 100 + d % 7) for d in range(days)]
    rows = [f"{day},{p},{p + 2},{p - 1},{p + 1},1000" for day, p in prices]
    path.write_text("Date,Open,High,Low,Close,Volume\n" + "\n".join(rows) + "\n")


@pytest.mark.parametrize(
    ("files", "message"),
    [
        # two series that share no date: imported, then refused by the date ranges
        (
            [("a.csv", "2010-01-01", 300), ("b.csv", "2015-01-01", 300)],
            "the symbols' bars do not overlap: A has 300 bars (2010-01-01 .. 2010-10-27)",
        ),
        # a series too short for a pipeline
        ([("a.csv", "2010-01-01", 30)], "A has 30 bars (2010-01-01 .. 2010-01-30)"),
        # a second file refused by the importer after the first was imported
        ([("a.csv", "2010-01-01", 300), ("b.csv", "", 0)], "b.csv: 1 bad row in OHLCV file"),
    ],
)
def test_a_pipeline_that_fails_in_its_data_stage_leaves_no_store(
    tmp_path: Path, files: list[tuple[str, str, int]], message: str
) -> None:
    """The store this call created (data/otonom.db and its folder) is removed again when the
    data stage fails after creating it: the CSVs read, imported, then refused."""
    args = []
    for name, first, days in files:
        if days:
            _csv(tmp_path / name, first, days)
        else:
            (tmp_path / name).write_text("Date,Open,High,Low,Close,Volume\n2010-01-01,10,8,9,9,1\n")
        args += ["--import-csv", name, "--symbol", name[0].upper()]
    strategy = str(ROOT / "strategies" / "baseline_v1.yaml")
    out = _run("pipeline", "--strategy-path", strategy, *args, cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    assert out.stderr.startswith(f"error: {message}"), out.stderr  # (bad rows: listed below)
    assert "Traceback" not in out.stderr
    assert "[1/7] data" in out.stdout  # the store was created, then the stage failed
    assert "all symbols already in the store" not in out.stdout  # imported by this call
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(name for name, _, _ in files)


def test_a_pipeline_that_fails_in_its_data_stage_keeps_an_existing_store(tmp_path: Path) -> None:
    _csv(tmp_path / "a.csv", "2010-01-01", 30)
    subprocess.run(
        [sys.executable, "-m", "otonom_runtime", "data", "import-csv", "a.csv", "--symbol", "A"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    strategy = str(ROOT / "strategies" / "baseline_v1.yaml")
    out = _run("pipeline", "--strategy-path", strategy, "--symbol", "A", cwd=tmp_path)
    _one_error(out, "A has 30 bars")
    assert "  all symbols already in the store\n" in out.stdout  # nothing imported or made
    with sqlite3.connect(tmp_path / "data" / "otonom.db") as conn:  # the store and its bars
        assert conn.execute("SELECT count(*) FROM bars").fetchone() == (30,)


@pytest.mark.parametrize(
    ("command", "args", "error"),
    [
        ("pipeline", ["--end-date", "2018-02-01"], "DEMO-BTC has 32 bars"),
        ("walk-forward", ["--train-years", "9"], "the history is too short for one window"),
    ],
)
def test_a_demo_run_beside_real_data_says_the_real_symbols_go_by_name(
    tmp_path: Path, command: str, args: list[str], error: str
) -> None:
    """A store holding the user's own data: a run on the synthetic DEMO-* symbols (the
    default) says so and how to train on theirs (here before its data stage fails)."""
    for name in ("A", "B"):
        _csv(tmp_path / f"{name}.csv", "2010-01-01", 30)
        subprocess.run(
            [sys.executable, "-m", "otonom_runtime", "data", "import-csv", f"{name}.csv",
             "--symbol", name],
            cwd=tmp_path, check=True, capture_output=True,
        )  # fmt: skip
    strategy = str(ROOT / "strategies" / "baseline_v1.yaml")
    out = _run(command, "--strategy-path", strategy, "--symbol", "DEMO-BTC", *args, cwd=tmp_path)
    _one_error(out, error)
    note = (
        "  note: this run's symbols (DEMO-BTC) are the synthetic demo market; the store's own "
        "data (A, B) is trained on with --symbol NAME\n"
    )
    assert note in out.stdout


def test_a_walk_forward_that_fails_after_creating_its_store_leaves_none(tmp_path: Path) -> None:
    """No dates given: the synthetic symbol is generated into a new store (its default range),
    then nine years of training do not fit in it: the store goes again."""
    strategy = str(ROOT / "strategies" / "baseline_v1.yaml")
    args = ["--strategy-path", strategy, "--symbol", "DEMO-BTC", "--train-years", "9"]
    out = _run("walk-forward", *args, cwd=tmp_path)
    _one_error(out, "the history is too short for one window: decisions run 2018-06-30 .. 2023")
    assert list(tmp_path.iterdir()) == []


def test_pipeline_with_a_missing_strategy_writes_nothing(tmp_path: Path) -> None:
    """A strategy file that is not there: the strategy is checked before the CSV is
    imported, so no store and no report folder appear. (Without --strategy-path a folder
    without strategies/ gets the baseline shipped with otonom-runtime: the test below.)"""
    rows = [f"2020-01-{d:02d},{100 + d},{101 + d},{99 + d},{100 + d},1000" for d in range(1, 29)]
    (tmp_path / "x.csv").write_text("Date,Open,High,Low,Close,Volume\n" + "\n".join(rows) + "\n")
    missing = ["--strategy-path", "strategies/baseline_v1.yaml"]
    out = _run("pipeline", *missing, "--import-csv", "x.csv", "--symbol", "X", cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    assert "error: invalid strategy strategies/baseline_v1.yaml" in out.stderr
    assert "cannot read the file (No such file or directory)" in out.stderr
    assert "Traceback" not in out.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["x.csv"]  # no data/otonom.db, no reports/


def test_model_messages_name_the_real_next_step(tmp_path: Path) -> None:
    _dataset(tmp_path / "d.npz")
    out = _run("evaluate", "--model", "nope/policy_best.pt", "--dataset", "d.npz", cwd=tmp_path)
    _one_error(out, "there is no ONNX model for nope/policy_best.pt")
    assert "does not exist either: train a model first (otonom-train train" in out.stderr
    assert "export" not in out.stderr.replace("ONNX export", "")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "policy_best.pt").write_bytes(b"a checkpoint")
    out = _run("evaluate", "--model", "m/policy_best.pt", "--dataset", "d.npz", cwd=tmp_path)
    _one_error(out, "there is no ONNX model for m/policy_best.pt")
    assert "export it: otonom-train export --checkpoint m/policy_best.pt" in out.stderr
    out = _run("evaluate", "--model", "m", "--dataset", "d.npz", cwd=tmp_path)
    _one_error(out, "model folder m has no policy_best.onnx")
    assert "otonom-train export --checkpoint m/policy_best.pt" in out.stderr
    out = _run("export", "--checkpoint", "nope/policy_best.pt", cwd=tmp_path)
    _one_error(out, "no checkpoint at nope/policy_best.pt; `otonom-train train --dataset")


def test_a_missing_dataset_named_by_a_config_file_is_named_with_its_key(tmp_path: Path) -> None:
    (tmp_path / "cfg.yaml").write_text("dataset_path: gone.npz\nmax_epochs: 2\n")
    out = _run("train", "--config", "cfg.yaml", cwd=tmp_path)
    _one_error(out, "no dataset file at gone.npz (dataset_path in cfg.yaml)")
    out = _run("train", "--config", "cfg.yaml", "--dataset", "other.npz", cwd=tmp_path)
    _one_error(out, "no dataset file at other.npz (--dataset)")
    assert not (tmp_path / "models").exists()  # nothing written


def test_a_csv_named_npz_is_named(tmp_path: Path) -> None:
    make_policy_model(tmp_path / "policy_best.onnx")
    (tmp_path / "d.npz").write_text("Date,Open,High,Low,Close,Volume\n2020-01-01,1,1,1,1,1\n")
    out = _run("evaluate", "--model", "policy_best.onnx", "--dataset", "d.npz", cwd=tmp_path)
    _one_error(out, "d.npz is not an otonom dataset (.npz) file: it starts with the text 'Date,")
    assert "pickle" not in out.stderr


def test_the_guide_script_reports_errors_the_same_way(tmp_path: Path) -> None:
    script = ROOT / "scripts" / "train_rl_agent.py"
    out = subprocess.run(
        [sys.executable, str(script), "--dataset", "missing.npz"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    _one_error(out, "no dataset file at missing.npz")
    debug = subprocess.run(
        [sys.executable, str(script), "--dataset", "missing.npz", "--debug"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert debug.returncode == 1
    assert "Traceback (most recent call last):" in debug.stderr


# the commands with a date range, and their date flags' destinations
_DATED = [
    ("trainer", ["dataset", "--symbol", "S"], "start_date", "end_date"),
    ("trainer", ["check", "m", "--symbol", "S"], "start_date", "end_date"),
    ("trainer", ["pipeline"], "start", "end"),
    ("trainer", ["walk-forward"], "start_date", "end_date"),
    ("runtime", ["data", "synth", "--symbol", "S"], "start", "end"),
    (
        "runtime",
        ["backtest", "--strategy-path", "s.yaml", "--symbol", "S"],
        "start_date",
        "end_date",
    ),
]


@pytest.mark.parametrize(("cli", "command", "start", "end"), _DATED)
def test_date_flags_are_start_date_and_end_date_with_short_aliases(
    cli: str, command: list[str], start: str, end: str
) -> None:
    parser = trainer_parser() if cli == "trainer" else runtime_parser()
    for flags in (("--start-date", "--end-date"), ("--start", "--end")):
        args = parser.parse_args([*command, flags[0], "2001-02-03", flags[1], "2004-05-06"])
        assert str(getattr(args, start)) == "2001-02-03"
        assert str(getattr(args, end)) == "2004-05-06"


def test_help_shows_the_long_date_flags() -> None:
    for command in ("pipeline", "dataset", "check", "walk-forward"):
        out = _run(command, "--help")
        assert out.returncode == 0
        assert "--start-date" in out.stdout, command
        assert "--end-date" in out.stdout, command


def _without_help(parser: argparse.ArgumentParser, path: str) -> list[str]:
    """Every argument of ``parser`` and of its sub-commands (recursively) that has no help."""
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                if not choice.help:
                    missing.append(f"{path} {choice.dest} (the command itself)")
            for name, sub in action.choices.items():
                missing += _without_help(sub, f"{path} {name}")
        elif not action.help:
            missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    return missing


def test_every_argument_of_both_command_lines_has_help() -> None:
    assert _without_help(runtime_parser(), "otonom") == []
    assert _without_help(trainer_parser(), "otonom-train") == []


def _list_flags_that_keep_only_the_last(parser: argparse.ArgumentParser, path: str) -> list[str]:
    """Every flag taking several values (``nargs`` + or *) of ``parser`` and its sub-commands
    whose repeats replace each other (argparse's default ``store``) instead of adding up."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _list_flags_that_keep_only_the_last(sub, f"{path} {name}")
        elif (
            action.nargs in ("+", "*")
            and action.option_strings
            and not isinstance(action, (argparse._ExtendAction, argparse._AppendAction))
        ):
            found.append(f"{path} {'/'.join(action.option_strings)}")
    return found


def test_a_repeated_list_flag_adds_its_values_instead_of_replacing_them() -> None:
    """``otonom daemon --symbols A --symbols B`` decides A and B (it used to decide B only)."""
    assert _list_flags_that_keep_only_the_last(runtime_parser(), "otonom") == []
    assert _list_flags_that_keep_only_the_last(trainer_parser(), "otonom-train") == []
    args = runtime_parser().parse_args(
        ["daemon", "--strategy-path", "s.yaml", "--symbols", "A", "--symbols", "B", "C"]
    )
    assert args.symbols == ["A", "B", "C"]
    both = ["--dataset", "d.npz", "--out", "e.onnx", "--seeds", "1", "--seeds", "2", "3"]
    assert trainer_parser().parse_args(["ensemble", *both]).seeds == [1, 2, 3]
    files = ["--checkpoints", "a.pt", "--checkpoints", "b.pt", "--out", "e.onnx"]
    assert trainer_parser().parse_args(["ensemble", *files]).checkpoints == ["a.pt", "b.pt"]
    train = ["train", "--dataset", "d.npz", "--seeds", "4", "--seeds", "5"]
    assert trainer_parser().parse_args(train).seeds == [4, 5]


def test_pipeline_passes_replace_and_date_format_to_its_csv_import(tmp_path: Path) -> None:
    """The import's own refusals name --replace and --date-format: the pipeline has both. (The
    files are too short for a pipeline, so each run stops right after the import, cheaply.)"""
    strategy = str(ROOT / "strategies" / "baseline_v1.yaml")
    header = "Date,Open,High,Low,Close,Volume\n"
    rows = [f"2020-01-{d:02d},10,12,9,{10 + d / 10:.1f},100\n" for d in range(1, 11)]
    (tmp_path / "a.csv").write_text(header + "".join(rows))
    (tmp_path / "b.csv").write_text(header + "".join(rows).replace(",11.0,", ",11.5,"))
    (tmp_path / "us.csv").write_text(header + "1/2/2020,10,12,9,11,100\n2/1/2020,10,12,9,11,100\n")
    subprocess.run(
        [sys.executable, "-m", "otonom_runtime", "data", "import-csv", "a.csv", "--symbol", "X"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )

    def pipeline(*args: str) -> subprocess.CompletedProcess[str]:
        return _run("pipeline", "--strategy-path", strategy, *args, cwd=tmp_path)

    refused = pipeline("--import-csv", "b.csv", "--symbol", "X")
    _one_error(refused, "b.csv: 1 bar differs from the stored bars of 'X' (2020-01-10)")
    assert "add --replace" in refused.stderr
    replaced = pipeline("--import-csv", "b.csv", "--symbol", "X", "--replace")
    _one_error(replaced, "X has 10 bars")  # imported; then too short for a pipeline
    ambiguous = pipeline("--import-csv", "us.csv", "--symbol", "US")
    _one_error(ambiguous, "us.csv: cannot tell day from month")
    told = pipeline("--import-csv", "us.csv", "--symbol", "US", "--date-format", "%d/%m/%Y")
    _one_error(told, "US has 2 bars (2020-01-02 .. 2020-02-01)")


def test_walk_forward_refuses_unknown_symbols_writing_nothing(tmp_path: Path) -> None:
    strategy = str(ROOT / "strategies" / "baseline_v1.yaml")
    out = _run("walk-forward", "--strategy-path", strategy, "--symbol", "BTC-USD", cwd=tmp_path)
    _one_error(out, "symbols ['BTC-USD'] are not in the store (there is no store at")
    assert list(tmp_path.iterdir()) == []


def test_the_pipeline_runs_from_a_folder_without_strategies(tmp_path: Path) -> None:
    """No --strategy-path and no strategies/ in the working directory: the baseline shipped
    with otonom-runtime is used (the run goes on to the import and stops there: the file is
    too short for a pipeline), where it used to stop at once, unable to read the default."""
    header = "Date,Open,High,Low,Close,Volume\n"
    rows = [f"2020-01-{d:02d},10,12,9,{10 + d / 10:.1f},100\n" for d in range(1, 11)]
    (tmp_path / "a.csv").write_text(header + "".join(rows))
    out = _run("pipeline", "--import-csv", "a.csv", "--symbol", "X", cwd=tmp_path)
    _one_error(out, "X has 10 bars")
    assert "baseline_v1.yaml" not in out.stderr
    help_text = _run("pipeline", "--help", cwd=tmp_path).stdout
    assert "else the copy shipped with otonom-runtime" in " ".join(help_text.split())
