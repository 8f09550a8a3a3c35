"""The comparison (``otonom-train compare``) at a tiny size with real parts (SQLite file,
synthetic market, real trainings, ONNX models and backtests), and the trials ledger."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from otonom_trainer import compare as cmp
from otonom_trainer.compare import CompareConfig, CompareError, run_compare
from otonom_trainer.trials import (
    LEDGER_ENV,
    TrialsError,
    count_trials,
    read_trials,
    record_trial,
)

ROOT = Path(__file__).resolve().parents[3]
STRATEGY = str(ROOT / "strategies" / "baseline_v1.yaml")
TINY = {
    "strategy_path": STRATEGY,
    "symbols": ("DEMO-A",),
    "train_years": 1,
    "test_months": 3,
    "epochs": 1,
    "hidden_dim": 8,
    "batch_size": 64,
    "samples": 200,
    "seed": 7,
    "quiet": True,
}


def _cfg(tmp_path: Path, **over: object) -> CompareConfig:
    import datetime as dt

    base: dict[str, object] = {
        **TINY,
        "database_url": f"sqlite:///{tmp_path / 'store.db'}",
        "start": dt.date(2020, 1, 1),
        "end": dt.date(2021, 12, 31),
        "out_dir": str(tmp_path / "report"),
    }
    base.update(over)
    return CompareConfig(**base)  # type: ignore[arg-type]


def _inside(d: dict[str, float] | None) -> None:
    assert d is not None
    assert d["low"] <= d["difference"] <= d["high"]


def test_tiny_comparison_writes_table_md_png_and_counts_its_trials(tmp_path: Path) -> None:
    result = run_compare(_cfg(tmp_path, oracle=True))
    out = tmp_path / "report"
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == [
        "compare.json",
        "compare.md",
        "compare.png",
    ]
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no staging left
    md = (out / "compare.md").read_text(encoding="utf-8")
    assert "**Verdict:** agent above teacher in" in md
    assert "| W01 |" in md
    assert "| W02 |" in md
    assert "hidden trend (synthetic market)" in md
    data = json.loads((out / "compare.json").read_text(encoding="utf-8"))
    assert len(data["windows"]) == 2
    for w in data["windows"]:
        assert set(w["arms"]) == {"teacher", "clone", "agent", "oracle", "oracle_state"}
        assert len(w["arms"]["agent"]["returns"]) == w["arms"]["agent"]["days"] - 1
        _inside(w["agent_vs_teacher"])
        _inside(w["clone_vs_teacher"])
        assert sum(d["days"] for d in w["departures"]) > 0
    # at 1 epoch and 8 units every model is degenerate: the window line, the verdict and the
    # json say so, as each model's own metadata.json does
    assert (
        "\n**warning: DEGENERATE models in 2 of 2 windows (W01 clone, agent; W02 clone, agent)"
        in md
    )
    assert "DEGENERATE models in 2 of 2 windows" in result.summary()
    assert all(w.line().endswith("; DEGENERATE clone, agent") for w in result.windows)
    for w in data["windows"]:
        for arm in ("clone", "agent"):
            meta = out / f"window_{w['window']:02d}" / arm / "metadata.json"
            mark = json.loads(meta.read_text(encoding="utf-8"))["degenerate"]
            assert w["arms"][arm]["degenerate"] == mark["reason"]
        assert w["arms"]["teacher"]["degenerate"] is None
    pooled = data["pooled"]
    for key in ("agent_vs_teacher", "clone_vs_teacher", "oracle_vs_agent", "oracle_state_vs_agent"):
        _inside(pooled[key])
    # 2 windows x (clone + agent), each recorded by the trainer itself
    ledger = read_trials()
    assert [t["kind"] for t in ledger] == ["train"] * 4
    assert [t["awr_beta"] is None for t in ledger] == [True, False, True, False]
    assert pooled["n_trials"] == 4 == result.n_trials
    assert 0.0 <= pooled["dsr_agent"] <= pooled["psr_agent"] <= 1.0  # deflating lowers it


def test_trials_override_and_more_trials_deflate_more(tmp_path: Path) -> None:
    result = run_compare(_cfg(tmp_path, trials=500))
    many = result.pooled()
    assert many["n_trials"] == 500
    assert "--trials" in result.trials_source
    result.n_trials = 1
    one = result.pooled()
    assert one["dsr_agent"] == pytest.approx(one["psr_agent"])
    assert many["dsr_agent"] < one["dsr_agent"]


def test_a_failed_comparison_leaves_no_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(cmp, "write_report", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        run_compare(_cfg(tmp_path))
    assert not (tmp_path / "report").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".report")]


def test_config_rules() -> None:
    with pytest.raises(CompareError, match="oracle"):
        CompareConfig(symbols=("BTC",), oracle=True)
    with pytest.raises(CompareError, match="awr_beta"):
        CompareConfig(awr_beta=-1.0)
    with pytest.raises(CompareError, match="rl_mode"):
        CompareConfig(rl_mode="veto")
    with pytest.raises(CompareError, match="confidence"):
        CompareConfig(confidence=1.5)


def test_real_cli_help_and_a_failure_that_writes_nothing(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(sys.path),
        LEDGER_ENV: str(tmp_path / "trials.jsonl"),
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "otonom_trainer", *args],
            cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env,
        )  # fmt: skip

    out = run("compare", "--help")
    assert out.returncode == 0, out.stderr
    assert "--oracle" in out.stdout
    assert "--trials" in out.stdout
    db = tmp_path / "store.db"
    out = run(
        "compare", "--strategy-path", STRATEGY, "--database-url", f"sqlite:///{db}",
        "--symbol", "NOPE", "--out", str(tmp_path / "rep"),
    )  # fmt: skip
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1
    assert "NOPE" in out.stderr
    assert not (tmp_path / "rep").exists()
    assert not (tmp_path / "trials.jsonl").exists()


# --- the trials ledger ---------------------------------------------------------------------------


def test_ledger_appends_one_line_per_run_and_counts(tmp_path: Path) -> None:
    assert count_trials() == 1  # nothing recorded yet: the run judged counts
    assert count_trials(at_least=0) == 0
    for k in range(3):
        record_trial("train", output=f"m{k}")
    assert count_trials() == 3
    lines = Path(os.environ[LEDGER_ENV]).read_text(encoding="utf-8").splitlines()
    assert [json.loads(x)["output"] for x in lines] == ["m0", "m1", "m2"]


def test_ledger_off_and_malformed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LEDGER_ENV, "off")
    assert record_trial("train") is None
    assert read_trials() == []
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"kind": "train"}\nnot json\n', encoding="utf-8")
    with pytest.raises(TrialsError, match=r"bad.jsonl:2"):
        read_trials(bad)


def test_a_failed_training_records_nothing(tmp_path: Path) -> None:
    from otonom_trainer.config import TrainingConfig
    from otonom_trainer.train import BehaviorCloningTrainer

    cfg = TrainingConfig(dataset_path=str(tmp_path / "missing.npz"), output_dir=str(tmp_path / "m"))
    with pytest.raises(Exception, match=r"missing\.npz"):
        BehaviorCloningTrainer(cfg).train()
    assert read_trials() == []


def test_ppo_arm_in_sole_mode_is_backtested_and_its_finetunes_are_counted(tmp_path: Path) -> None:
    pytest.importorskip("stable_baselines3")
    result = run_compare(_cfg(tmp_path, ppo_steps=512, rl_mode="sole"))
    for w in result.windows:
        assert "ppo" in w.arms
        assert w.ppo_vs_teacher is not None
        assert w.ppo_vs_teacher.low <= w.ppo_vs_teacher.difference <= w.ppo_vs_teacher.high
    assert [t["kind"] for t in read_trials()] == ["train", "train", "finetune"] * 2
    assert result.n_trials == 6
    md = (tmp_path / "report" / "compare.md").read_text(encoding="utf-8")
    assert "- ppo - teacher:" in md
    assert "ppo - teacher |" in md
    assert "RL mode sole" in md
    tuned = json.loads((tmp_path / "report" / "window_01" / "ppo" / "finetune.json").read_text())
    assert tuned["mode"] == "sole"  # fine-tuned in the mode it is judged in
