"""The guide's snippets, run as written (modulo the package names listed in the README)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from otonom_runtime.testing.models import make_policy_model

STEP3 = textwrap.dedent(
    """
    from otonom_runtime import load_rl_policy
    from otonom_runtime import RlStateBuilder
    from otonom_runtime import get_session
    from datetime import date

    # Load trained policy
    policy = load_rl_policy("models/rl_bc/policy_best.pt")

    # Build state from recent data
    with get_session() as session:
        state_builder = RlStateBuilder(session)
        state = state_builder.build_state(
            symbol="BTC-USD",
            current_date=date(2023, 6, 30),
            current_position=0.0,
            portfolio_equity=10000.0,
        )

    # Predict action
    action, strength, probs = policy.predict(state, return_probs=True)

    print(f"Predicted action: {action.name}")
    print(f"Position strength: {strength:.2f}")
    print(f"Action probabilities:")
    print(f"  HOLD: {probs[0]:.3f}")
    print(f"  BUY:  {probs[1]:.3f}")
    print(f"  SELL: {probs[2]:.3f}")
    metadata = policy.get_metadata()
    print(f'Val accuracy: {metadata["val_action_acc"]:.3f}')
    """
)


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "OTONOM_DATABASE_URL"}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_step3_load_build_predict(tmp_path: Path) -> None:
    synth = _run(
        [
            "-m",
            "otonom_runtime",
            "data",
            "synth",
            "--symbol",
            "BTC-USD",
            "--start",
            "2022-01-01",
            "--end",
            "2023-06-30",
            "--seed",
            "7",
        ],
        tmp_path,
    )
    assert synth.returncode == 0, synth.stderr
    assert (tmp_path / "data" / "otonom.db").is_file()  # the default store
    make_policy_model(tmp_path / "models" / "rl_bc" / "policy_best.onnx", hidden=128)

    out = _run(["-c", STEP3], tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split(": ")[1] in {"HOLD", "BUY", "SELL"}
    assert lines[1].startswith("Position strength: ")
    assert 0.0 <= float(lines[1].split(": ")[1]) <= 1.0
    probs = [float(line.split(":")[1]) for line in lines[3:6]]
    assert abs(sum(probs) - 1.0) < 2e-3
    best = ["HOLD", "BUY", "SELL"][probs.index(max(probs))]
    assert lines[0] == f"Predicted action: {best}"
    assert lines[6].startswith("Val accuracy: ")


def test_step3_without_an_onnx_export_says_so(tmp_path: Path) -> None:
    (tmp_path / "models" / "rl_bc").mkdir(parents=True)
    out = _run(["-c", STEP3], tmp_path)
    assert out.returncode != 0
    assert "policy_best.onnx" in out.stderr
