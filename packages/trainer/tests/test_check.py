"""The production gate (``otonom-train check``) and the pipeline around it: versioning,
promotion, ``--from-stage``. One real default-size pipeline run (SQLite file, synthetic market,
20 epochs, ONNX export) is shared by the tests of this module."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from otonom_runtime.policy import load_rl_policy
from otonom_runtime.synth import DEMO_SEED
from otonom_runtime.testing.models import make_policy_model
from otonom_schema import OfflineDataset, load_dataset, save_dataset
from otonom_trainer.check import (
    CheckConfig,
    CheckResult,
    _majority_regime,
    _sharpe_ok,
    regime_sharpe,
    sharpe_item,
)
from otonom_trainer.config import TrainingConfig
from otonom_trainer.pipeline import PipelineConfig, PipelineError, run_pipeline
from otonom_trainer.stats import equity_sharpe_test
from otonom_trainer.train import BehaviorCloningTrainer

pytestmark = pytest.mark.long  # minutes of subprocess runs: scheduled first (conftest.py)

ROOT = Path(__file__).resolve().parents[3]
STRATEGY = str(ROOT / "strategies" / "baseline_v1.yaml")
# The market and training seed of this module's pipeline run: the demo's (see DEMO_SEED for
# why that seed; these tests need a promoted model).
SEED = str(DEMO_SEED)
ITEMS = {
    "val accuracy",
    "loss gap",
    "accuracy gap",
    "not degenerate",
    "out-of-sample Sharpe",
    "regime low_vol",
    "regime normal",
    "regime high_vol",
    "predict latency",
    "metadata",
    "fallback",
}


def _cli(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otonom_trainer", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


REPLACED = "19990101T000000Z"  # a version in service before the pipeline runs


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``otonom-train pipeline`` at its defaults but ``--seed SEED`` and ``--teacher-rows
    20000`` (a third of the time: tests/test_clean_checkout.py runs the defaults themselves),
    run once in a fresh folder whose model folder has a version in service trained on another
    symbol (``REPLACED``, a test policy: the pipeline's promotion replaces it, and says so)."""
    cwd = tmp_path_factory.mktemp("pipeline")
    old = cwd / "models" / "rl_bc" / REPLACED
    make_policy_model(old / "policy_best.onnx", hidden=8)
    (old / "metadata.json").write_text(json.dumps({"dataset": {"metadata": {"symbols": ["X"]}}}))
    (old.parent / "latest").write_text(REPLACED + "\n")
    out = _cli(
        "pipeline", "--strategy-path", STRATEGY, "--seed", SEED, "--teacher-rows", "20000", cwd=cwd
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (cwd / "stdout.txt").write_text(out.stdout)
    (cwd / "stderr.txt").write_text(out.stderr)
    return cwd


def _run_dir(cwd: Path) -> Path:
    """The latest pipeline run's report folder (``reports/pipeline/latest`` names it)."""
    root = cwd / "reports" / "pipeline"
    return root / (root / "latest").read_text().strip()


def _table(cwd: Path, run: Path | None = None) -> dict[str, Any]:
    folder = run if run is not None else _run_dir(cwd)
    data: dict[str, Any] = json.loads((folder / "table.json").read_text())
    return data


def _check_args(cwd: Path, model: str) -> list[str]:
    table = _table(cwd)
    start, end = table["test_period"]
    args = ["check", model, "--strategy-path", STRATEGY, "--start-date", start, "--end-date", end]
    for symbol in ("DEMO-BTC", "DEMO-ETH", "DEMO-SOL"):
        args += ["--symbol", symbol]
    return args


def _rows(stdout: str) -> dict[str, str]:
    """check name -> PASS/FAIL/SKIP, parsed from the printed table."""
    out = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[1] in ("PASS", "FAIL", "SKIP"):
            out[cells[0]] = cells[1]
    return out


# --- the pipeline's model passes and is promoted ------------------------------------------------


def test_pipeline_runs_seven_stages_and_promotes_its_model(pipeline_dir: Path) -> None:
    stdout = (pipeline_dir / "stdout.txt").read_text()
    for n in range(1, 8):
        assert f"[{n}/7]" in stdout
    assert "all checks pass: promoted" in stdout
    table = _table(pipeline_dir)
    assert table["gate"] == {"passed": True, "promoted": True, "failed": []}
    root = pipeline_dir / "models" / "rl_bc"
    version = Path(table["model"]).parent.name
    assert (
        f"warning: {version} (trained on DEMO-BTC, DEMO-ETH, DEMO-SOL) replaces {REPLACED} "
        f"(trained on X) in service under models/rl_bc: a strategy whose model_path names "
        "that folder now serves it for the symbols it decides"
    ) in (pipeline_dir / "stderr.txt").read_text().splitlines()
    assert (root / "latest").read_text().strip() == version
    # the run's report folder is named like the model version it trained, and printed
    assert _run_dir(pipeline_dir).name == version
    assert f"report: reports/pipeline/{version}/" in stdout
    policy = load_rl_policy(root)  # the folder: follows latest
    assert policy.path.parent.name == version
    assert policy.get_metadata()["val_action_acc"] > 0.85
    gate = json.loads((root / version / "check.json").read_text())
    assert gate["passed"] is True
    assert {i["name"] for i in gate["items"]} == ITEMS
    # the Sharpe item's verdict at its level, its interval and the PSR reach the report
    test = gate["details"]["sharpe_test"]
    assert test["confidence"] == 0.9
    assert test["verdict"] != "significant harm"
    assert (
        test["difference"]["low"] <= test["difference"]["difference"] <= test["difference"]["high"]
    )
    sharpe = next(i for i in gate["items"] if i["name"] == "out-of-sample Sharpe")
    assert f"90% interval [{test['difference']['low']:+.2f}, " in sharpe["measured"]
    assert test["verdict"] in sharpe["measured"]
    assert "PSR" in sharpe["measured"]


def test_check_cli_passes_for_the_pipeline_model(pipeline_dir: Path) -> None:
    out = _cli(*_check_args(pipeline_dir, "models/rl_bc"), cwd=pipeline_dir)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = _rows(out.stdout)
    assert set(rows) == ITEMS
    assert "FAIL" not in rows.values()
    # every regime has enough held-out days to be judged, none skipped
    assert rows["regime normal"] == "PASS"
    assert "PASS (use --promote" in out.stdout


def test_check_promote_warns_when_it_replaces_a_model_of_other_symbols(pipeline_dir: Path) -> None:
    """``check VERSION --promote`` with a version of another symbol in service: promoted, and
    the warning on stderr names both (the folder's ``latest`` as the fixture left it after)."""
    root = pipeline_dir / "models" / "rl_bc"
    version = (root / "latest").read_text().strip()
    (root / "latest").write_text(REPLACED + "\n")
    try:
        model = f"models/rl_bc/{version}"
        out = _cli(*_check_args(pipeline_dir, model), "--promote", cwd=pipeline_dir)
    finally:
        (root / "latest").write_text(version + "\n")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"PASS: promoted {model}" in out.stdout
    assert (
        f"warning: {version} (trained on DEMO-BTC, DEMO-ETH, DEMO-SOL) replaces {REPLACED} "
        "(trained on X) in service under models/rl_bc: a strategy whose model_path names that "
        "folder now serves it for the symbols it decides"
    ) in out.stderr.splitlines()


def test_check_cli_fails_a_model_trained_one_epoch_on_shuffled_labels(
    pipeline_dir: Path, tmp_path: Path
) -> None:
    train = load_dataset(_run_dir(pipeline_dir) / "data" / "offline_dataset.npz")
    rng = np.random.default_rng(0)
    order = rng.permutation(len(train))
    shuffled = OfflineDataset(
        states=train.states,
        actions=train.actions[order],
        strengths=train.strengths[order],
        symbols=train.symbols,
        dates=train.dates,
        metadata=dict(train.metadata),
    )
    save_dataset(shuffled, tmp_path / "shuffled.npz")
    bad_dir = pipeline_dir / "models" / "rl_bc" / "20000101T000000Z"
    trainer = BehaviorCloningTrainer(
        TrainingConfig(
            dataset_path=str(tmp_path / "shuffled.npz"),
            output_dir=str(bad_dir),
            max_epochs=1,
            seed=0,
        )
    )
    trainer.train()  # exports policy_best.onnx
    latest = (pipeline_dir / "models" / "rl_bc" / "latest").read_text()

    out = _cli(*_check_args(pipeline_dir, str(bad_dir)), "--promote", cwd=pipeline_dir)
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    rows = _rows(out.stdout)
    assert rows["val accuracy"] == "FAIL"
    # one epoch on shuffled labels: no better than always answering the majority action
    assert trainer.metrics.degenerate is not None
    assert rows["not degenerate"] == "FAIL"
    assert f"DEGENERATE: {trainer.metrics.degenerate['reason']}" in out.stdout
    assert rows["metadata"] == "PASS"
    assert rows["fallback"] == "PASS"
    assert "FAIL: " in out.stdout
    assert "(not promoted)" in out.stdout
    # --promote did nothing: latest still names the pipeline's model
    assert (pipeline_dir / "models" / "rl_bc" / "latest").read_text() == latest
    # the checklist goes to reports/check/<version>/, not into the model's folder
    assert not (bad_dir / "check.json").exists()
    report = json.loads(
        (pipeline_dir / "reports" / "check" / bad_dir.name / "check.json").read_text()
    )
    assert report["passed"] is False
    assert report["promoted"] is None


def test_runs_list_marks_the_gates_and_evaluation_runs_internal(pipeline_dir: Path) -> None:
    """The pipeline's teacher is a "pipeline" run; its held-out pair (which the gate takes as
    its without/with-RL pair) and the gate's fallback run are internal, and never a dataset's
    teacher."""
    db = f"sqlite:///{pipeline_dir / 'data' / 'otonom.db'}"
    out = subprocess.run(
        [sys.executable, "-m", "otonom_runtime", "--database-url", db, "runs", "list"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    made_by = {}
    for line in out.stdout.splitlines()[2:]:
        cells = line.split()
        if cells and cells[0].isdigit():
            made_by[int(cells[0])] = next(c for c in cells if c.rstrip("*") in _PURPOSES)
    run_ids = _table(pipeline_dir)["run_ids"]
    assert made_by[run_ids["teacher"]] == "pipeline"
    assert made_by[run_ids["held-out no RL"]] == made_by[run_ids["held-out RL"]] == "evaluation*"
    model = pipeline_dir / _table(pipeline_dir)["model"]
    gate = json.loads((model.parent / "check.json").read_text())
    gate_runs = gate["details"]["run_ids"]
    # the gate judged the held-out pair stage 6 ran, and ran only the fallback itself
    assert gate_runs["without_rl"] == run_ids["held-out no RL"]
    assert gate_runs["with_rl"] == run_ids["held-out RL"]
    assert made_by[gate_runs["fallback"]] == "gate*"
    assert gate_runs["fallback"] == run_ids["held-out RL"] + 1  # no gate pair in between
    assert out.stdout.splitlines()[-1].startswith("* internal:")


_PURPOSES = {"user", "pipeline", "walk-forward", "gate", "evaluation"}


# --- resuming ------------------------------------------------------------------------------------


def test_from_stage_reuses_the_earlier_stages(pipeline_dir: Path) -> None:
    before = _table(pipeline_dir)
    versions = sorted(p.name for p in (pipeline_dir / "models" / "rl_bc").iterdir())
    out = _cli(
        "pipeline", "--strategy-path", STRATEGY, "--seed", SEED, "--from-stage", "5",
        "--no-promote",
        cwd=pipeline_dir,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "resuming from stage 5" in out.stdout
    for n in range(1, 5):
        assert f"[{n}/7]" not in out.stdout
    for n in range(5, 8):
        assert f"[{n}/7]" in out.stdout
    after = _table(pipeline_dir)
    assert after["model"] == before["model"]  # no new training
    assert after["run_ids"]["teacher"] == before["run_ids"]["teacher"]
    timed = ("predict p50 (us)", "predict p99 (us)")
    for column in ("ensemble (no RL)", "ensemble + RL"):  # deterministic held-out backtests
        same = {k: v for k, v in after["rows"][column].items() if k not in timed}
        assert same == {k: v for k, v in before["rows"][column].items() if k not in timed}
    assert sorted(p.name for p in (pipeline_dir / "models" / "rl_bc").iterdir()) == versions


def test_quiet_prints_nothing(pipeline_dir: Path) -> None:
    out = _cli(
        "pipeline", "--strategy-path", STRATEGY, "--seed", SEED, "--from-stage", "6",
        "--no-promote", "--quiet",
        cwd=pipeline_dir,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout == ""
    assert out.stderr == ""


def test_each_run_keeps_its_report_and_from_stage_resumes_the_latest_or_a_named_run(
    pipeline_dir: Path,
) -> None:
    """A second run gets its own folder (the first run's report stays as it was) and becomes
    the latest; a rejected model makes the pipeline exit 1; ``--from-stage`` resumes the
    latest run, or the one ``--run-name`` names."""
    root = pipeline_dir / "reports" / "pipeline"
    first = _run_dir(pipeline_dir)
    first_table = (first / "table.json").read_text()
    latest_model = (pipeline_dir / "models" / "rl_bc" / "latest").read_text()

    # one symbol, one epoch, no teacher rows: the gate rejects the model -> exit 1, nothing
    # promoted
    small = ("--strategy-path", STRATEGY, "--symbol", "DEMO-BTC", "--epochs", "1",
             "--teacher-rows", "0")  # fmt: skip
    out = _cli("pipeline", *small, "--run-name", "small", cwd=pipeline_dir)
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    assert "NOT promoted: failed" in out.stdout
    assert "the production gate rejected" in out.stderr
    assert "report: reports/pipeline/small/" in out.stdout
    assert (root / "latest").read_text().strip() == "small"
    assert _table(pipeline_dir)["gate"]["passed"] is False
    assert (first / "table.json").read_text() == first_table  # the first run's report kept
    assert (pipeline_dir / "models" / "rl_bc" / "latest").read_text() == latest_model

    # --from-stage resumes the latest run ("small": its options) ...
    out = _cli("pipeline", *small, "--from-stage", "7", cwd=pipeline_dir)
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    assert "resuming from stage 7 (production gate): run small" in out.stdout
    # ... or the named one, which becomes the latest again
    out = _cli(
        "pipeline", "--strategy-path", STRATEGY, "--from-stage", "7", "--no-promote",
        "--run-name", first.name, cwd=pipeline_dir,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"resuming from stage 7 (production gate): run {first.name}" in out.stdout
    assert "all checks pass (not promoted: --no-promote)" in out.stdout
    assert _run_dir(pipeline_dir) == first

    # a named run is not silently overwritten; a bad name or a missing run writes nothing
    before = sorted(p.name for p in root.iterdir())
    db = f"sqlite:///{pipeline_dir / 'data' / 'otonom.db'}"
    base = PipelineConfig(
        strategy_path=STRATEGY,
        database_url=db,
        report_dir=str(root),
        model_dir=str(pipeline_dir / "models" / "rl_bc"),
        quiet=True,
    )
    with pytest.raises(PipelineError, match="already holds a run named 'small'"):
        run_pipeline(dataclasses.replace(base, run_name="small"))
    with pytest.raises(PipelineError, match="cannot resume run 'nope' from stage 3"):
        run_pipeline(dataclasses.replace(base, run_name="nope", from_stage=3))
    for name, message in (("../x", "run_name: got '../x'; expected"), ("latest", "not 'latest'")):
        with pytest.raises(PipelineError, match=re.escape(message)):
            dataclasses.replace(base, run_name=name)
    assert sorted(p.name for p in root.iterdir()) == before
    assert _run_dir(pipeline_dir) == first


def test_from_stage_refuses_without_a_state_file_or_with_other_options(
    pipeline_dir: Path, tmp_path: Path
) -> None:
    db = f"sqlite:///{pipeline_dir / 'data' / 'otonom.db'}"
    fresh = PipelineConfig(
        strategy_path=STRATEGY,
        database_url=db,
        report_dir=str(tmp_path / "elsewhere"),
        model_dir=str(tmp_path / "models"),
        from_stage=3,
        quiet=True,
    )
    with pytest.raises(PipelineError, match=r"elsewhere/latest does not exist"):
        run_pipeline(fresh)
    assert not (tmp_path / "elsewhere").exists()
    other = PipelineConfig(
        strategy_path=STRATEGY,
        database_url=db,
        symbols=("DEMO-BTC",),
        seed=int(SEED),
        report_dir=str(pipeline_dir / "reports" / "pipeline"),
        model_dir=str(pipeline_dir / "models" / "rl_bc"),
        from_stage=4,
        quiet=True,
    )
    with pytest.raises(PipelineError, match="symbols differ"):
        run_pipeline(other)
    with pytest.raises(ValueError, match=r"from_stage: got 8; expected 1 \.\. 7"):
        PipelineConfig(from_stage=8)


# --- the pieces ----------------------------------------------------------------------------------


def test_regime_sharpe_by_hand() -> None:
    equity = np.array([100.0, 101.0, 99.99, 100.9899, 100.0, 102.0])
    mask = np.array([True, True, True, False, True, True])
    # returns on days 1, 2, 4, 5 (day 3 is another regime): +1 %, -1 %, r4, +2 %
    r = np.array([0.01, -0.01, 100.0 / 100.9899 - 1.0, 0.02])
    expected = r.mean() / r.std(ddof=1) * math.sqrt(252)
    assert regime_sharpe(equity, mask, 252) == pytest.approx(expected, rel=1e-12)
    assert regime_sharpe(equity, np.array([True, True, False, False, False, False]), 252) is None
    flat = np.full(6, 100.0)
    assert regime_sharpe(flat, np.ones(6, dtype=bool), 252) is None
    with pytest.raises(ValueError, match="expected the same"):
        regime_sharpe(equity, mask[:3], 252)


def test_majority_regime_per_day() -> None:
    days = np.array(["2024-01-01", "2024-01-02", "2024-01-03"], dtype="datetime64[D]")
    dates = np.array(
        ["2024-01-01", "2024-01-01", "2024-01-01", "2024-01-02", "2024-01-09"],
        dtype="datetime64[D]",
    )
    regimes = np.array([2, 2, 0, 1, 0])
    assert _majority_regime(dates, regimes, days).tolist() == [2, 1, -1]


def test_sharpe_tolerance_rule() -> None:
    assert _sharpe_ok(0.9, 1.0, 0.25)
    assert not _sharpe_ok(0.7, 1.0, 0.25)
    assert _sharpe_ok(1.5, 1.0, 0.0)
    assert _sharpe_ok(None, 0.1, 0.25)  # no variance counts as 0
    assert not _sharpe_ok(None, 0.5, 0.25)


def _curve(returns: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    return 1e4 * np.cumprod(np.r_[1.0, 1.0 + returns])


@pytest.mark.parametrize(
    ("shift", "mean_on", "days", "tolerance", "status", "verdict"),
    [
        (0.002, None, 500, 0.25, "pass", "significant improvement"),
        (-0.002, None, 500, 100.0, "fail", "significant harm"),  # fails within any tolerance
        # cannot tell: two independent noisy series of 60 days pass ...
        (None, 0.001, 60, 0.25, "pass", "no evidence either way"),
        # ... unless the Sharpe drops by more than the tolerance (-0.56 here)
        (None, 0.0005, 60, 0.25, "fail", "no evidence either way"),
    ],
)
def test_the_sharpe_items_verdict_reaches_the_report(
    shift: float | None, mean_on: float, days: int, tolerance: float, status: str, verdict: str
) -> None:
    """The gate's item on constructed equity curves (with RL: the without-RL returns plus
    ``shift``, or an independent noisy series of mean ``mean_on``) and the check's report."""
    rng = np.random.default_rng(3)
    r = rng.normal(0.0005, 0.01, days)
    on_r = rng.normal(mean_on, 0.01, days) if shift is None else r + shift
    off, on = _curve(r), _curve(on_r)
    cfg = CheckConfig(model="m", symbols=("A",), sharpe_tolerance=tolerance)
    test = equity_sharpe_test(on, off, 252, cfg.sharpe_confidence)
    s_on, s_off = (regime_sharpe(e, np.ones(e.size, dtype=bool), 252) for e in (on, off))
    item = sharpe_item(cfg, s_on, s_off, test)
    assert (item.status, test.verdict) == (status, verdict)
    assert "not significant harm at 90%" in item.required
    result = CheckResult(Path("m.onnx"), Path(), [item], {"sharpe_test": test.to_dict()})
    assert f"| out-of-sample Sharpe | {status.upper()} |" in result.table()
    assert "90% interval [" in result.table()
    assert f": {verdict}; PSR" in result.table()
    report = json.loads(json.dumps(result.to_dict()))
    assert report["details"]["sharpe_test"]["verdict"] == verdict
    assert report["passed"] is (status == "pass")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"symbols": ()}, r"symbols: got \(\); expected one or more"),
        ({"end": dt.date(2019, 1, 1)}, "is not before end"),
        ({"min_val_accuracy": 70.0}, "min_val_accuracy: got 70.0; expected a fraction"),
        ({"sharpe_tolerance": -0.1}, "sharpe_tolerance: got -0.1; expected a finite number >= 0"),
        ({"sharpe_confidence": 1.0}, r"sharpe_confidence: got 1.0; expected a level in \(0, 1\)"),
        ({"max_p99_latency_ms": float("nan")}, "max_p99_latency_ms: got nan"),
        ({"min_regime_days": 1}, "min_regime_days: got 1; expected an integer >= 2"),
        ({"latency_samples": 10}, "latency_samples: got 10; expected an integer >= 100"),
    ],
)
def test_check_config_validation(changes: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {
        "model": "m",
        "symbols": ("A",),
        "start": dt.date(2020, 1, 1),
        "end": dt.date(2020, 12, 31),
    }
    with pytest.raises(ValueError, match=message):
        CheckConfig(**(base | changes))


def test_the_gate_refuses_runs_of_another_period(pipeline_dir: Path) -> None:
    """``run_check(cfg, runs=pair)`` judges only a pair of the period and symbols checked."""
    from otonom_runtime.policy import load_rl_policy
    from otonom_runtime.store import get_session
    from otonom_runtime.strategy import load_strategy
    from otonom_trainer.check import CheckError, run_check
    from otonom_trainer.stages import backtest_pair

    db = f"sqlite:///{pipeline_dir / 'data' / 'otonom.db'}"
    table = _table(pipeline_dir)
    start, end = (dt.date.fromisoformat(d) for d in table["test_period"])
    model = pipeline_dir / table["model"]
    symbols = ("DEMO-BTC", "DEMO-ETH", "DEMO-SOL")
    strategy = load_strategy(STRATEGY).with_rl(False)
    with get_session(db) as session:
        pair = backtest_pair(
            session, strategy, symbols, start, start + dt.timedelta(days=40),
            load_rl_policy(model), purpose="evaluation",
        )  # fmt: skip
    assert pair.covers(symbols, start, start + dt.timedelta(days=40))
    assert not pair.covers(symbols, start, end)
    cfg = CheckConfig(
        model=str(model), symbols=symbols, start=start, end=end, strategy_path=STRATEGY,
        database_url=db, out_dir=str(pipeline_dir / "refused"), quiet=True,
    )  # fmt: skip
    with pytest.raises(CheckError, match=r"the runs given \(\d+, \d+\) are of .*expected"):
        run_check(cfg, runs=pair)
    assert not (pipeline_dir / "refused").exists()  # refused before anything was written
