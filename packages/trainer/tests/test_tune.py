"""``otonom-train tune`` (``otonom_trainer.tune``): the guide's size-based defaults as trial 0, a
planted better setting found, one study shared by two processes through a journal file (and a
PostgreSQL database), the outputs, and bad options as one-line errors that write nothing."""

from __future__ import annotations

import csv
import importlib.util
import io
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from otonom_schema import OfflineDataset, compute_states, feature_index, save_dataset
from otonom_schema.testing import random_history
from otonom_trainer.config import TrainingConfig
from otonom_trainer.tune import SearchSpace, TuneError, TuneOptions, tune
from otonom_trainer.tune_space import SIZE_TABLE, size_row

ROOT = Path(__file__).resolve().parents[3]
# every knob off but the learning rate: trials are cheap and the planted winner is clear
LR_ONLY: dict[str, Any] = dict.fromkeys(SearchSpace().to_dict()) | {"lr": (1e-5, 1e-1)}


def _dataset(path: Path, n: int = 300) -> Path:
    """Two symbols; BUY when rsi < 0.4, SELL when rsi > 0.6, else HOLD: a rule a small net
    learns in three epochs at lr 1e-2, and not at all at lr 1e-5."""
    histories = [random_history(n, seed=k, vol=0.005) for k in range(2)]
    states = np.concatenate([compute_states(h) for h in histories])
    rsi = states[:, feature_index("rsi")]
    actions = np.where(rsi < 0.4, 1, np.where(rsi > 0.6, 2, 0)).astype(np.int64)
    ds = OfflineDataset(
        states=states,
        actions=actions,
        strengths=np.where(actions > 0, 0.5, 0.0).astype(np.float32),
        symbols=np.repeat(["A", "B"], n),
        dates=np.concatenate([h.dates for h in histories]),
        metadata={},
    )
    return save_dataset(ds, path)


@pytest.fixture
def optuna() -> Any:
    """optuna (the tune extra): skip without it, fail instead under ``CI=true`` (the
    development environment, which CI runs, installs the extra)."""
    if importlib.util.find_spec("optuna") is None:
        why = 'optuna missing: pip install "otonom-trainer[tune]"'
        if os.environ.get("CI", "").strip().lower() == "true":
            pytest.fail(f"CI=true needs the tune extra: {why}")
        pytest.skip(why)
    import optuna

    return optuna


def _base(tmp_path: Path, **changes: Any) -> TrainingConfig:
    """A small, slow-learning base: lr 1e-5 for three epochs learns nothing."""
    fields: dict[str, Any] = {
        "dataset_path": str(_dataset(tmp_path / "d.npz")),
        "output_dir": "models/tuned",
        "hidden_dim": 16,
        "num_layers": 1,
        "batch_size": 32,
        "max_epochs": 3,
        "lr": 1e-5,
        "progress": False,
    }
    return TrainingConfig.from_dict(fields, changes)


# --- the space and its size-based defaults ---------------------------------------------------


@pytest.mark.parametrize(("rows", "row"), [(1_000, 0), (4_999, 0), (5_000, 1), (50_000, 2)])
def test_trial_0_is_the_guides_size_based_default(rows: int, row: int) -> None:
    table = SIZE_TABLE[row]
    assert size_row(rows) == table
    space = SearchSpace.for_rows(rows)
    assert space.batch_size == table.batch_choices
    assert space.hidden_dim == table.width_choices
    base = TrainingConfig(dataset_path="d.npz")
    first = space.first_params(base, rows)
    assert first["batch_size"] == table.batch_size
    assert first["hidden_dim"] == table.hidden_dim
    # the base configuration's value of every other knob (the guide's: lr 1e-3, 2 layers, ...)
    assert {k: first[k] for k in ("lr", "num_layers", "dropout", "weight_decay")} == {
        "lr": 1e-3,
        "num_layers": 2,
        "dropout": 0.1,
        "weight_decay": 1e-5,
    }
    assert (first["max_epochs"], first["patience"]) == (20, 5)
    assert (first["class_balance"], first["optimizer"]) == ("none", "adam")


def test_trial_0_is_moved_into_a_narrower_space() -> None:
    space = SearchSpace(lr=(1e-2, 1e-1), hidden_dim=(16, 32), max_epochs=(2, 4))
    first = space.first_params(TrainingConfig(dataset_path="d.npz"), 100)
    assert (first["lr"], first["hidden_dim"], first["max_epochs"]) == (1e-2, 32, 4)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lr": (1e-2, 1e-3)}, "lr: got (0.01, 0.001); expected [low, high]"),
        ({"lr": (0.0, 1e-3)}, "expected [low, high] (numbers, log scale) with 0 < low"),
        ({"hidden_dim": ()}, "hidden_dim: got (); expected a non-empty list of distinct"),
        ({"batch_size": (64, 64)}, "batch_size: got (64, 64); expected a non-empty list"),
        ({"class_balance": ("none", "smote")}, "class_balance: got ('none', 'smote')"),
        ({"num_layers": "2"}, "num_layers: got '2'; expected a list or null"),
        ({"num_layers": (1, 2.5)}, "num_layers: got (1, 2.5); expected a list of an integer"),
    ],
)
def test_a_bad_space_names_the_knob(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(TuneError, match=re.escape(message)):
        SearchSpace(**changes)


def test_a_space_end_the_trainer_refuses_is_named() -> None:
    base = TrainingConfig(dataset_path="d.npz")
    with pytest.raises(TuneError, match=r"search space dropout: dropout: got 1.0; expected"):
        SearchSpace(dropout=(0.0, 1.0)).check_against(base)


def test_a_space_file_changes_some_knobs(tmp_path: Path) -> None:
    f = tmp_path / "space.yaml"
    f.write_text("lr: [1e-4, 3e-2]\nhidden_dim: [16, 32]\nclass_balance: null\n")
    space = SearchSpace.from_yaml(f, SearchSpace.for_rows(100))
    assert space.lr == (1e-4, 3e-2)  # YAML 1.1 text "1e-4" read as a number
    assert space.hidden_dim == (16, 32)
    assert space.class_balance is None
    assert space.batch_size == SIZE_TABLE[0].batch_choices  # untouched: the size default
    f.write_text("lr: [1e-4, 3e-2]\nlearning_rate: [1, 2]\n")
    with pytest.raises(TuneError, match=r"space.yaml:2: learning_rate: not a knob; expected"):
        SearchSpace.from_yaml(f, SearchSpace())
    f.write_text("lr: [1e-4, 3e-2]\ndropout: [0.5, 0.1]\n")
    with pytest.raises(TuneError, match=r"space.yaml:2: dropout: got \[0.5, 0.1\]; expected"):
        SearchSpace.from_yaml(f, SearchSpace())


# --- a study ---------------------------------------------------------------------------------


def test_a_tiny_study_finds_the_planted_learning_rate(tmp_path: Path, optuna: Any) -> None:
    """The base lr (1e-5) learns nothing in three epochs; a much larger one learns the rule.
    Six trials of a journal study find it; trial 0 is the base; the outputs are written."""
    base = _base(tmp_path)
    log = io.StringIO()
    result = tune(
        base, space=SearchSpace(**LR_ONLY), n_trials=6, seed=3, out_dir=tmp_path / "t", out=log
    )
    trials = {t.number: t for t in result.trials}
    assert sorted(trials) == list(range(6))
    assert trials[0].params == {"lr": 1e-5}
    assert result.best.params["lr"] >= 1e-3
    assert result.best.value is not None
    assert trials[0].value is not None
    assert result.best.value >= trials[0].value + 0.25
    assert result.best_config == base.replace(lr=result.best.params["lr"])
    assert result.n_tried == 6
    assert result.n_this_worker == 6
    # the trained value is the time split's validation accuracy of the best epoch
    assert result.best.attrs["val_acc"] == result.best.value
    text = log.getvalue()
    assert "Configurations tried: 6" in text
    assert f"Best: trial {result.best.number}, accuracy {result.best.value:.4f}" in text
    assert text.count("| complete |") == 6
    out = tmp_path / "t"
    assert sorted(p.name for p in out.iterdir()) == [
        "best_config.yaml",
        "study.journal",
        "trials.csv",
    ]
    # best_config.yaml is what `otonom-train train --config` reads
    assert TrainingConfig.from_yaml(out / "best_config.yaml") == result.best_config
    assert "6 configurations tried" in (out / "best_config.yaml").read_text()
    with (out / "trials.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["number"]) for r in rows] == list(range(6))
    assert {r["state"] for r in rows} == {"COMPLETE"}
    assert float(rows[result.best.number]["accuracy"]) == result.best.value


def test_macro_f1_objective_and_a_failed_trial_is_counted(tmp_path: Path, optuna: Any) -> None:
    """A trial whose training diverges (trial 0 here: lr 1e20) fails and is counted; the study
    goes on. The objective is the macro F1 of the validation split."""
    base = _base(tmp_path, grad_clip=0.0, lr=1e20)
    space = SearchSpace(**{**LR_ONLY, "lr": (1e-2, 1e20)})
    log = io.StringIO()
    result = tune(base, space=space, n_trials=3, seed=0, objective="macro-f1", out=log)
    assert result.trials[0].state == "FAIL"
    assert result.counts()["COMPLETE"] >= 1
    assert result.n_tried == 3
    assert "training diverged" in result.trials[0].attrs["error"]
    assert "trial 0: failed (" in log.getvalue()
    assert "| 0 | fail | - |" in log.getvalue()
    assert result.best.value == pytest.approx(result.best.attrs["macro_f1"])


def test_no_completed_trial_writes_nothing(tmp_path: Path, optuna: Any) -> None:
    base = _base(tmp_path, grad_clip=0.0)
    space = SearchSpace(**{**LR_ONLY, "lr": (1e20, 1e21)})
    with pytest.raises(TuneError, match="no trial of study 'otonom-tune' completed"):
        tune(base, space=space, n_trials=2, out=io.StringIO())


def test_a_worker_with_another_dataset_or_objective_is_refused(tmp_path: Path, optuna: Any) -> None:
    base = _base(tmp_path)
    store = f"journal:{tmp_path / 'j.journal'}"
    space = SearchSpace(**LR_ONLY)
    tune(base, space=space, n_trials=1, storage=store, out=io.StringIO())
    with pytest.raises(TuneError, match="was made for another objective"):
        tune(base, space=space, n_trials=1, storage=store, objective="macro-f1", out=io.StringIO())
    with pytest.raises(TuneError, match=r"another base configuration \(differing: hidden_dim\)"):
        tune(base.replace(hidden_dim=8), space=space, n_trials=1, storage=store, out=io.StringIO())


def test_the_random_split_is_refused(tmp_path: Path) -> None:
    """Refused before optuna is needed."""
    with pytest.raises(TuneError, match="split: got 'random'; tune expected 'time'"):
        tune(_base(tmp_path, split="random"), n_trials=1, out=io.StringIO())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_trials": 0}, "n_trials: got 0; expected an integer >= 1 (--trials N)"),
        ({"n_trials": None}, "n_trials and timeout: both None"),
        ({"timeout": -1.0}, "timeout: got -1.0; expected a number of seconds > 0"),
        ({"storage": "tune.db"}, "storage: got 'tune.db'; expected journal:PATH or a database"),
        ({"storage": "journal:"}, "storage: got 'journal:'"),
        ({"objective": "f1"}, "objective: got 'f1'; expected one of accuracy, macro-f1"),
        ({"study_name": " "}, "study_name: got ' '"),
    ],
)
def test_bad_options_name_the_option(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(TuneError) as err:
        TuneOptions(**kwargs)
    assert str(err.value).startswith(message)


# --- workers sharing a study: two processes, one journal file ---------------------------------


def _cli(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "otonom_trainer", "tune", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_processes_add_trials_to_one_journal_study(tmp_path: Path, optuna: Any) -> None:
    """Two `otonom-train tune` workers at once on one journal file: one study of 2 x 3 trials,
    numbered 0..5, each worker's trials its own; trial 0 (the default) enqueued once."""
    _base(tmp_path)
    (tmp_path / "space.yaml").write_text(
        "".join(f"{k}: null\n" for k in LR_ONLY if k != "lr") + "lr: [1.0e-5, 1.0e-1]\n"
    )
    (tmp_path / "base.yaml").write_text(
        "dataset_path: d.npz\nhidden_dim: 16\nnum_layers: 1\nbatch_size: 32\nmax_epochs: 3\n"
        "lr: 1.0e-5\nprogress: false\n"
    )
    common = ["--config", "base.yaml", "--space", "space.yaml", "--trials", "3"]
    common += ["--storage", "journal:shared/study.journal", "--study-name", "shared"]
    workers = [_cli(*common, "--seed", str(k), "--out", f"w{k}", cwd=tmp_path) for k in (1, 2)]
    outs = [w.communicate(timeout=300) for w in workers]
    for w, (stdout, stderr) in zip(workers, outs, strict=True):
        assert w.returncode == 0, stderr
        assert "Configurations tried: " in stdout
        assert "[I " not in stderr  # optuna's own INFO lines are off in the CLI
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "shared" / "study.journal"))
    )
    study = optuna.load_study(study_name="shared", storage=storage)
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == list(range(6))
    assert {t.state.name for t in trials} == {"COMPLETE"}
    assert len({t.user_attrs["worker"] for t in trials}) == 2
    assert [t.number for t in trials if t.params == {"lr": 1e-5}] == [0]
    assert study.user_attrs["objective"] == "accuracy"
    # the worker that finished last saw the whole study
    tried = [int(o.split("Configurations tried: ")[1].split()[0]) for o, _ in outs]
    assert max(tried) == 6
    for k in (1, 2):
        with (tmp_path / f"w{k}" / "trials.csv").open() as fh:
            assert len(list(csv.DictReader(fh))) >= 3


def test_a_study_in_postgresql_is_shared(tmp_path: Path, optuna: Any) -> None:
    """The RDB storage: two workers (here one after the other) on one PostgreSQL study."""
    from otonom_runtime.testing.postgres import postgres_for_tests

    base = _base(tmp_path)
    space = SearchSpace(**LR_ONLY)
    with postgres_for_tests() as url:
        first = tune(base, space=space, n_trials=2, storage=url, seed=1, out=io.StringIO())
        second = tune(base, space=space, n_trials=2, storage=url, seed=2, out=io.StringIO())
    assert (first.n_tried, second.n_tried) == (2, 4)
    assert [t.number for t in second.trials] == [0, 1, 2, 3]
    assert second.n_this_worker == 2


# --- the command line: one-line errors, nothing written ---------------------------------------


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otonom_trainer", "tune", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--trials", "0"], "n_trials: got 0; expected an integer >= 1 (--trials N)"),
        (["--timeout", "-5"], "timeout: got -5.0; expected a number of seconds > 0"),
        (["--storage", "tune.db"], "storage: got 'tune.db'; expected journal:PATH or a database"),
        (["--storage", "nosuchdriver://x/y"], "storage: cannot open nosuchdriver://x/y"),
        (["--space", "missing.yaml"], "no search space file at missing.yaml"),
        (["--space", "bad.yaml"], "bad.yaml:1: lr: got [0.1]; expected a list of 2 or null"),
        (["--config", "random.yaml"], "split: got 'random'; tune expected 'time'"),
        (["--dataset", "missing.npz"], "no dataset file at missing.npz"),
        ([], "no dataset: give --dataset FILE.npz"),
    ],
)
def test_bad_flags_are_one_line_errors_that_write_nothing(
    tmp_path: Path, args: list[str], message: str, optuna: Any
) -> None:
    _dataset(tmp_path / "d.npz")
    (tmp_path / "bad.yaml").write_text("lr: [0.1]\n")
    (tmp_path / "random.yaml").write_text("dataset_path: d.npz\nsplit: random\n")
    if args and args[0] != "--dataset" and args[0] != "--config":
        args = ["--dataset", "d.npz", *args]
    before = sorted(tmp_path.rglob("*"))
    out = _run(*args, cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    lines = out.stderr.splitlines()
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], out.stderr
    assert lines[-1].startswith(f"error: {message}"), lines[-1]
    assert "Traceback" not in out.stderr
    assert sorted(tmp_path.rglob("*")) == before  # no reports/tune/, no journal


def test_help_documents_every_flag() -> None:
    out = _run("--help", cwd=ROOT)
    text = " ".join(out.stdout.split())
    for flag in (
        "--dataset",
        "--config",
        "--space",
        "--objective",
        "--trials",
        "--timeout",
        "--storage",
        "--study-name",
        "--seed",
        "--out",
    ):
        assert flag in text
    assert "best_config.yaml" in text
    assert "journal:PATH" in text


def test_without_optuna_tune_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` raises ImportError
    with pytest.raises(
        TuneError, match=re.escape('needs optuna: pip install "otonom-trainer[tune]"')
    ):
        tune(_base(tmp_path), n_trials=1, out=io.StringIO())


def test_the_tune_extra_is_declared_and_in_the_dev_environment() -> None:
    """optuna comes with the trainer's tune extra, which the development environment (what
    `dev.py test` runs in) installs, so the studies above run there."""
    tomllib = pytest.importorskip("tomllib")
    trainer = tomllib.loads((ROOT / "packages/trainer/pyproject.toml").read_text("utf-8"))
    assert trainer["project"]["optional-dependencies"]["tune"] == ["optuna>=4.0"]
    assert not any("optuna" in d for d in trainer["project"]["dependencies"])
    root = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    members = root["tool"]["hatch"]["envs"]["default"]["workspace"]["members"]
    (member,) = [m for m in members if isinstance(m, dict) and m["path"] == "packages/trainer"]
    assert "tune" in member["features"]
