"""The otonom-train entry point, run for real in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import otonom_schema

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


def test_version_names_the_schema() -> None:
    out = _run("--version")
    assert out.returncode == 0
    assert otonom_schema.schema_fingerprint() in out.stdout


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
            "--start",
            "2020-01-01",
            "--end",
            "2021-12-31",
            "--epochs",
            "2",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    # two epochs on one symbol do not pass the production gate: exit 1 (documented)
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
    assert "--run-name" in text
    assert "REPORT_DIR/RUN_NAME/" in text


def test_pipeline_refuses_unknown_symbols(tmp_path: Path) -> None:
    strategy = str(ROOT / "strategies" / "baseline_v1.yaml")
    out = _run("pipeline", "--strategy-path", strategy, "--symbol", "BTC-USD", cwd=tmp_path)
    assert out.returncode == 1
    assert "not in the store" in out.stderr
    assert "--import-csv" in out.stderr
    assert not (tmp_path / "reports").exists()  # no empty report folder left behind
