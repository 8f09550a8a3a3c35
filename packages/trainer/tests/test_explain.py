"""Feature importance (``otonom_trainer.explain``, ``otonom-train explain``) on real ONNX
policies whose dependence on the features is known, loaded through the runtime."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from otonom_runtime import PolicyError, load_rl_policy
from otonom_runtime.integrity import seal_model
from otonom_runtime.policy import EXTRA_OUTPUTS_KEY, write_sha256_sidecar
from otonom_runtime.testing.models import (
    MlpWeights,
    golden_states,
    make_policy_model,
    numpy_forward,
)
from otonom_schema import (
    FEATURE_NAMES,
    GROUPS,
    STATE_DIM,
    OfflineDataset,
    SchemaError,
    compute_states,
    feature_index,
    save_dataset,
    validate_states,
)
from otonom_schema.testing import random_history
from otonom_trainer.cli import main
from otonom_trainer.explain import (
    ATTENTION_OUTPUT,
    COLUMNS,
    REGIME_UNIT,
    AttentionSummary,
    ExplainError,
    FeatureImportance,
    feature_units,
    group_units,
    permutation_importance,
)
from otonom_trainer.explain_report import ExplainConfig, format_table, markdown, write_report

RSI = feature_index("rsi")


def _rsi_weights(noise: float = 0.0) -> MlpWeights:
    """A policy that decides on ``rsi`` alone: BUY below 0.3, SELL above 0.7, HOLD between
    (first layer: one unit per threshold; every other feature's weights are ``noise`` times
    random numbers, exactly 0 by default)."""
    w1 = (noise * np.random.default_rng(5).normal(size=(STATE_DIM, 2))).astype(np.float32)
    w1[RSI] = [20.0, -20.0]
    b1 = np.array([-14.0, 6.0], dtype=np.float32)  # unit 0 > 0 above 0.7, unit 1 below 0.3
    wa = np.zeros((2, 3), dtype=np.float32)
    wa[0, 2] = wa[1, 1] = 5.0  # SELL, BUY logits
    ba = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    zeros = (np.zeros((2, 1), dtype=np.float32), np.zeros(1, dtype=np.float32))
    return MlpWeights(((w1, b1),), (wa, ba), zeros)


def _dataset(states: np.ndarray, actions: np.ndarray) -> OfflineDataset:
    n = len(actions)
    return OfflineDataset(
        states=states,
        actions=actions,
        strengths=np.zeros(n, dtype=np.float32),
        symbols=np.full(n, "TEST"),
        dates=np.datetime64("2024-01-01", "D") + np.arange(n),
        metadata={"source": "test_explain"},
    )


@pytest.fixture(scope="module")
def states() -> np.ndarray:
    return compute_states(random_history(700, seed=3))[-600:].astype(np.float32)


@pytest.fixture(scope="module")
def rsi_case(tmp_path_factory: pytest.TempPathFactory, states: np.ndarray) -> tuple[Path, Path]:
    """The rsi-only policy (a sealed ONNX model folder) and a dataset labelled with its own
    decisions (baseline accuracy 1), holding every action."""
    root = tmp_path_factory.mktemp("rsi")
    weights = make_policy_model(root / "m" / "policy_best.onnx", weights=_rsi_weights())
    actions = numpy_forward(weights, states)[0].argmax(axis=1)
    assert np.all(np.bincount(actions, minlength=3) >= 30)  # precondition: every action
    return root / "m", save_dataset(_dataset(states, actions), root / "d.npz")


@pytest.fixture(scope="module")
def rsi_result(rsi_case: tuple[Path, Path]) -> FeatureImportance:
    return permutation_importance(*rsi_case, repeats=3, seed=0)


def test_a_model_of_one_feature_ranks_it_first_and_every_other_at_zero(
    rsi_result: FeatureImportance,
) -> None:
    r = rsi_result
    assert r.baseline_accuracy == (1.0, 1.0, 1.0, 1.0)
    top, *rest = r.ranked()
    assert top.name == "rsi"
    assert top.features == ("rsi",)
    # every action needs rsi: its recall falls when rsi is shuffled, and the true action's
    # probability with it
    assert min(top.accuracy) > 0.1
    assert min(top.probability) > 0.05
    assert all(s >= 0.0 for s in top.accuracy_std)
    # zero weights: the other features change no output bit, so exactly no drop
    for unit in rest:
        assert unit.accuracy == unit.probability == (0.0, 0.0, 0.0, 0.0), unit.name
    groups = r.ranked(groups=True)
    assert groups[0].name == "technical"
    assert groups[0].accuracy[0] > 0.1
    assert all(g.accuracy == (0.0,) * 4 for g in groups[1:])
    assert r.attention is None
    assert r.ranked("probability")[0].name == "rsi"
    assert "Metric: probability: the drop in the mean probability" in format_table(
        r, metric="probability"
    )
    with pytest.raises(ExplainError, match="metric: got 'f1'; expected one of"):
        r.ranked("f1")


def test_near_zero_for_features_a_model_barely_uses(
    tmp_path: Path, rsi_case: tuple[Path, Path], states: np.ndarray
) -> None:
    make_policy_model(tmp_path / "noisy.onnx", weights=_rsi_weights(noise=0.01))
    r = permutation_importance(tmp_path / "noisy.onnx", rsi_case[1], repeats=2, groups=False)
    top, *rest = r.ranked()
    assert top.name == "rsi"
    assert top.accuracy[0] > 0.3
    assert max(abs(v) for u in rest for v in u.accuracy + u.probability) < 0.02
    assert r.groups == ()


def test_the_per_action_drops_split_the_overall_one(rsi_result: FeatureImportance) -> None:
    share = np.asarray(rsi_result.support) / rsi_result.rows
    for unit in (*rsi_result.features, *rsi_result.groups):
        for metric in ("accuracy", "probability"):
            mean = unit.mean(metric)
            assert mean[0] == pytest.approx(float(share @ np.asarray(mean[1:])), abs=1e-9)


def test_the_same_seed_gives_the_same_result_and_units_do_not_share_draws(
    rsi_case: tuple[Path, Path], rsi_result: FeatureImportance
) -> None:
    policy = load_rl_policy(rsi_case[0])
    again = permutation_importance(policy, rsi_case[1], repeats=3, seed=0, groups=False)
    assert again.features == rsi_result.features  # with or without the groups measured
    other = permutation_importance(policy, rsi_case[1], repeats=3, seed=1, groups=False)
    assert other.ranked()[0].accuracy != rsi_result.ranked()[0].accuracy
    # the regime unit and the regime group are the same shuffles
    regime = next(u for u in rsi_result.features if u.name == REGIME_UNIT)
    group = next(g for g in rsi_result.groups if g.name == "regime")
    assert (regime.accuracy, regime.probability) == (group.accuracy, group.probability)


def test_units_cover_every_feature_once_and_the_regime_one_hot_together(
    states: np.ndarray,
) -> None:
    units = feature_units()
    assert [c for _, cols in units for c in cols] == list(FEATURE_NAMES)
    regime = dict(units)[REGIME_UNIT]
    assert regime == ("regime_low_vol", "regime_normal", "regime_high_vol")
    assert [g for g, _ in group_units()] == list(GROUPS)
    assert dict(group_units())["regime"] == regime
    # why: one regime column shuffled alone makes states the schema refuses; together not
    perm = np.random.default_rng(0).permutation(len(states))
    cols = np.array([feature_index(n) for n in regime])
    alone = states.copy()
    alone[:, cols[0]] = states[perm, cols[0]]
    with pytest.raises(SchemaError, match="not one-hot"):
        validate_states(alone)
    together = states.copy()
    together[:, cols] = states[np.ix_(perm, cols)]
    validate_states(together)


def test_an_action_without_rows_is_not_a_number_and_shown_so(
    tmp_path: Path, rsi_case: tuple[Path, Path], states: np.ndarray
) -> None:
    policy = load_rl_policy(rsi_case[0])
    actions = policy.predict_batch(states)[0]
    keep = actions != 2  # no SELL row
    r = permutation_importance(policy, _dataset(states[keep], actions[keep]), repeats=1)
    assert r.support[2] == 0
    assert r.dataset_path is None
    assert math.isnan(r.baseline_accuracy[3])
    assert math.isnan(r.ranked()[0].accuracy[3])
    assert "n/a" in format_table(r)
    assert "n/a" in markdown(r)
    files = write_report(r, tmp_path / "out")
    data = json.loads(files[1].read_text(encoding="utf-8"))
    assert data["features"][0]["accuracy"]["mean"]["SELL"] is None
    assert files[2].read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"repeats": 0}, "repeats: got 0; expected an integer >= 1"),
        ({"seed": -1}, "seed: got -1; expected an integer >= 0"),
        ({"device": "tpu"}, "device: got 'tpu'; expected one of"),
    ],
)
def test_options_out_of_range_are_refused_before_anything_loads(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ExplainError, match=message):
        permutation_importance("no-model", "no-dataset.npz", **kwargs)  # type: ignore[arg-type]


def test_too_few_rows_are_refused(rsi_case: tuple[Path, Path], states: np.ndarray) -> None:
    with pytest.raises(ExplainError, match=r"has 1 row\(s\); expected at least 2"):
        permutation_importance(rsi_case[0], _dataset(states[:1], np.zeros(1, dtype=np.int64)))


# --- the attention seam --------------------------------------------------------------------------


def test_attention_summary_on_arrays() -> None:
    weights = np.array([[1.0] + [0.0] * 33, [0.0, 1.0] + [0.0] * 32, [0.5, 0.5] + [0.0] * 32])
    summary = AttentionSummary.from_weights(weights, np.array([0, 1, 1]))
    assert summary.mean[0] == pytest.approx((0.5, 1.0, 0.25, math.nan), nan_ok=True)
    assert summary.mean[1] == pytest.approx((0.5, 0.0, 0.75, math.nan), nan_ok=True)
    assert [name for name, _ in summary.ranked()[:2]] == [FEATURE_NAMES[0], FEATURE_NAMES[1]]
    assert summary.to_dict()[FEATURE_NAMES[0]]["SELL"] is None
    with pytest.raises(ExplainError, match=r"shape \(3, 2\)"):
        AttentionSummary.from_weights(weights[:, :2], np.array([0, 1, 1]))
    weights[2, 5] = np.nan
    with pytest.raises(ExplainError, match="non-finite"):
        AttentionSummary.from_weights(weights, np.array([0, 1, 1]))


def _attention_model(path: Path, *, listed: bool = True) -> Path:
    """The rsi-only policy with a third output, ``attention`` = softmax(state), sealed as a
    contract model would be (the golden sample covers the two contract outputs); ``listed``:
    named in ``otonom.extra_outputs``, as the contract wants of an optional output."""
    import onnx
    from onnx import TensorProto, helper

    extra = {EXTRA_OUTPUTS_KEY: json.dumps([ATTENTION_OUTPUT])} if listed else {}
    make_policy_model(
        path, weights=_rsi_weights(), seal=False, write_sidecar=False, metadata_overrides=extra
    )
    model = onnx.load(path)
    model.graph.node.append(helper.make_node("Softmax", ["state"], [ATTENTION_OUTPUT], axis=-1))
    model.graph.output.append(
        helper.make_tensor_value_info(ATTENTION_OUTPUT, TensorProto.FLOAT, ["batch", STATE_DIM])
    )
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    seal_model(path, golden_states())
    write_sha256_sidecar(path)
    return path


def test_a_model_with_an_attention_output_reports_it_beside_the_importance(
    tmp_path: Path, rsi_case: tuple[Path, Path], states: np.ndarray
) -> None:
    path = _attention_model(tmp_path / "attention" / "policy_best.onnx")
    # the runtime's contract: an optional output must be listed in otonom.extra_outputs
    unlisted = _attention_model(tmp_path / "unlisted" / "policy_best.onnx", listed=False)
    with pytest.raises(PolicyError, match=r"otonom\.extra_outputs is None"):
        load_rl_policy(unlisted)
    # listed, the model loads and the seam reads its attention
    policy = load_rl_policy(path)
    assert policy.extra_outputs == (ATTENTION_OUTPUT,)
    r = permutation_importance(policy, rsi_case[1], repeats=1, groups=False)
    assert r.ranked()[0].name == "rsi"  # the importance is the same model's
    assert r.attention is not None
    actions = np.load(rsi_case[1])["actions"]
    e = np.exp(states.astype(np.float64))
    soft = e / e.sum(axis=1, keepdims=True)
    expected = [soft.mean(axis=0)] + [soft[actions == c].mean(axis=0) for c in range(3)]
    np.testing.assert_allclose(np.array(r.attention.mean), np.stack(expected, axis=1), rtol=1e-5)
    text = format_table(r)
    assert "Attention: the mean weight" in text
    assert "Attention: none" not in text
    assert json.loads(json.dumps(r.to_dict()))["attention"]["rsi"]["overall"] > 0


# --- the report and the command line -------------------------------------------------------------


def test_a_failed_render_writes_nothing(
    tmp_path: Path, rsi_result: FeatureImportance, monkeypatch: pytest.MonkeyPatch
) -> None:
    import otonom_trainer.plots
    from otonom_runtime.plots import PlotUnavailableError

    def fail(*args: object, **kwargs: object) -> bytes:
        raise PlotUnavailableError("no matplotlib")

    monkeypatch.setattr(otonom_trainer.plots, "plot_feature_importance", fail)
    with pytest.raises(PlotUnavailableError):
        write_report(rsi_result, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_the_command_prints_the_sorted_table_and_writes_the_files(
    tmp_path: Path, rsi_case: tuple[Path, Path]
) -> None:
    model, dataset = rsi_case
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "otonom_trainer",
            "explain",
            "--model",
            str(model),
            "--dataset",
            str(dataset),
            "--repeats",
            "2",
            "--top",
            "3",
            "--out",
            "report",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    lines = out.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("rank  feature"))
    assert lines[header].split() == ["rank", "feature", *COLUMNS]
    assert lines[header + 2].split()[:2] == ["1", "rsi"]
    assert lines[header + 5] == ""  # --top 3: three rows
    assert "Attention: none (the model has no 'attention' output)" in out.stdout
    report = tmp_path / "report"
    assert sorted(p.name for p in report.iterdir()) == [
        "importance.png",
        "table.json",
        "table.md",
    ]
    data = json.loads((report / "table.json").read_text(encoding="utf-8"))
    assert data["metric"] == "accuracy"
    assert data["repeats"] == 2
    assert len(data["features"]) == len(feature_units())  # every row, whatever --top
    assert data["features"][0]["name"] == "rsi"
    assert "| 1 | rsi |" in (report / "table.md").read_text(encoding="utf-8")
    assert (report / "importance.png").read_bytes().startswith(b"\x89PNG")


def test_the_default_folder_is_named_after_the_model_folder(
    tmp_path: Path, rsi_case: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = ExplainConfig(model=str(rsi_case[0]), dataset=str(rsi_case[1]), repeats=1)
    assert cfg.out_dir is None
    assert main(["explain", "--model", cfg.model, "--dataset", cfg.dataset, "--repeats", "1"]) == 0
    assert sorted(p.name for p in (tmp_path / "reports" / "explain" / "m").iterdir()) == [
        "importance.png",
        "table.json",
        "table.md",
    ]


def _other_schema_dataset(path: Path, states: np.ndarray) -> None:
    data = _dataset(states[:5], np.zeros(5, dtype=np.int64))
    meta = dict(data.metadata, schema_fingerprint="0" * 16, schema_version="0.0-other")
    save_dataset(_dataset_with(data, meta), path)


def _dataset_with(data: OfflineDataset, meta: dict[str, object]) -> OfflineDataset:
    return OfflineDataset(data.states, data.actions, data.strengths, data.symbols, data.dates, meta)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--model", "missing.onnx", "--dataset", "d.npz"],
            "model path missing.onnx does not exist",
        ),
        (["--model", "m", "--dataset", "missing.npz"], "no dataset file at missing.npz"),
        (["--model", "m", "--dataset", "other.npz"], "other.npz was made under state schema"),
        (["--model", "m", "--dataset", "d.npz", "--repeats", "0"], "repeats: got 0; expected"),
        (["--model", "m", "--dataset", "d.npz", "--top", "0"], "top: got 0; expected"),
        (["--model", "m", "--dataset", "d.npz", "--device", "tpu"], "device: got 'tpu'"),
    ],
)
def test_bad_input_is_one_error_line_and_writes_nothing(
    tmp_path: Path,
    rsi_case: tuple[Path, Path],
    states: np.ndarray,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    make_policy_model(tmp_path / "m" / "policy_best.onnx", weights=_rsi_weights())
    (tmp_path / "d.npz").write_bytes(rsi_case[1].read_bytes())
    _other_schema_dataset(tmp_path / "other.npz", states)
    before = sorted(tmp_path.rglob("*"))
    assert main(["explain", *args, "--out", "report"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: "), err
    assert message in err
    assert err.count("\n") == 1
    assert sorted(tmp_path.rglob("*")) == before
