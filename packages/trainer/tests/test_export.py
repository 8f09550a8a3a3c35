"""ONNX export: the contract of docs/model-format.md, runtime parity, and clean failures."""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

import otonom_trainer.export as export_mod
from otonom_runtime import load_rl_policy
from otonom_runtime.integrity import model_digest
from otonom_runtime.policy import REQUIRED_METADATA
from otonom_schema import (
    FEATURE_NAMES,
    PORTFOLIO_COLUMNS,
    SCHEMA_VERSION,
    SchemaError,
    compute_states,
    schema_fingerprint,
    validate_states,
)
from otonom_schema.testing import random_history
from otonom_trainer.export import (
    ExportError,
    build_metadata,
    default_parity_states,
    export_onnx,
    sha256_file,
)
from otonom_trainer.model import PolicyNet

METRICS = {
    "val_action_acc": 0.8125,
    "train_action_acc": 0.875,
    "best_val_loss": 0.4321,
    "best_epoch": 12,
    "val_strength_mae": 0.07,
}
CONFIG = {"hidden_dim": 32, "num_layers": 2, "epochs": 40, "lr": 0.001, "seed": 0}
SHA = "ab" * 32


def _net(hidden: int = 32, layers: int = 2, dropout: float = 0.5, seed: int = 0) -> PolicyNet:
    torch.manual_seed(seed)
    return PolicyNet(hidden_dim=hidden, num_layers=layers, dropout=dropout)


def _export(net: PolicyNet, path: Path, **kwargs: Any) -> Path:
    kwargs.setdefault("metrics", METRICS)
    kwargs.setdefault("training_config", CONFIG)
    kwargs.setdefault("dataset_sha256", SHA)
    return export_onnx(net, path, **kwargs)


@pytest.fixture(scope="module")
def held_out() -> np.ndarray:
    """Real, non-zero states from another history than the parity default."""
    return compute_states(random_history(600, seed=11))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, held_out: np.ndarray) -> Path:
    path = tmp_path_factory.mktemp("exported") / "policy_best.onnx"
    return _export(_net(), path, parity_states=held_out[:300])


@pytest.mark.parametrize(("hidden", "layers"), [(16, 1), (96, 3)])
def test_parity_with_torch_for_two_sizes(
    tmp_path: Path, held_out: np.ndarray, hidden: int, layers: int
) -> None:
    net = _net(hidden, layers, dropout=0.5, seed=hidden)
    assert net.training  # as a training loop leaves it: dropout active
    before = {k: v.clone() for k, v in net.state_dict().items()}

    path = _export(net, tmp_path / "policy_best.onnx", parity_states=held_out[:300])

    # the caller's model is untouched (still training mode, same weights)
    assert net.training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    # the runtime answers like torch in eval mode, also on rows the parity check never saw
    x = held_out[300:]
    _, strengths, probs = load_rl_policy(path).predict_batch(x)
    net.eval()
    with torch.no_grad():
        ref_probs, ref_strength = net.probabilities(torch.from_numpy(x))
    np.testing.assert_allclose(probs, ref_probs.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(strengths, ref_strength.numpy()[:, 0], rtol=0, atol=1e-5)
    assert len(np.unique(probs.argmax(axis=1))) > 1  # a test on varied decisions


def test_metadata_follows_the_contract(exported: Path) -> None:
    policy = load_rl_policy(exported)
    meta = policy.get_metadata()
    assert meta["val_action_acc"] == METRICS["val_action_acc"]
    assert meta["best_epoch"] == METRICS["best_epoch"]
    assert meta["metrics"] == METRICS
    assert meta["training_config"] == CONFIG
    assert meta["dataset_sha256"] == SHA

    props = {p.key: p.value for p in onnx.load(str(exported)).metadata_props}
    assert set(REQUIRED_METADATA) <= set(props)
    assert props["otonom.model_format"] == "2"
    # sealed: the digest of graph and weights, and a golden sample the runtime re-runs
    assert props["otonom.digest"] == model_digest(exported.read_bytes())
    golden = json.loads(props["otonom.golden"])
    assert len(golden["states"]) == len(golden["probs"]) == len(golden["strength"]) == 16
    assert props["otonom.schema_version"] == SCHEMA_VERSION
    assert props["otonom.schema_fingerprint"] == schema_fingerprint()
    assert json.loads(props["otonom.feature_names"]) == list(FEATURE_NAMES)
    created = props["otonom.created_at"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", created)
    age = dt.datetime.now(dt.timezone.utc) - dt.datetime.strptime(
        created, "%Y-%m-%dT%H:%M:%SZ"
    ).replace(tzinfo=dt.timezone.utc)
    assert dt.timedelta(0) <= age < dt.timedelta(minutes=10)
    versions = json.loads(props["otonom.package_versions"])
    for name in ("otonom-trainer", "otonom-schema", "otonom-runtime", "torch", "onnx"):
        assert versions[name] == importlib.metadata.version(name)
    for name in ("onnxruntime", "numpy"):
        assert versions[name] == importlib.metadata.version(name)


def test_exported_signature_is_exactly_the_contract(exported: Path) -> None:
    proto = onnx.load(str(exported))
    onnx.checker.check_model(proto)
    assert proto.ir_version == 8
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", 17)]

    def sig(values: Any) -> dict[str, tuple[int, list[Any]]]:
        out = {}
        for v in values:
            t = v.type.tensor_type
            dims = [d.dim_param if d.HasField("dim_param") else d.dim_value for d in t.shape.dim]
            out[v.name] = (t.elem_type, dims)
        return out

    f32 = onnx.TensorProto.FLOAT
    assert sig(proto.graph.input) == {"state": (f32, ["batch", 34])}
    assert sig(proto.graph.output) == {
        "action_probs": (f32, ["batch", 3]),
        "strength": (f32, ["batch", 1]),
    }


def test_batch_axis_is_dynamic(exported: Path, held_out: np.ndarray) -> None:
    policy = load_rl_policy(exported)
    for n in (1, 513):
        actions, strengths, probs = policy.predict_batch(held_out[:n])
        assert actions.shape == (n,)
        assert strengths.shape == (n,)
        assert probs.shape == (n, 3)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
        assert np.all((strengths >= 0) & (strengths <= 1))


def test_sidecar_verifies_and_nothing_else_is_left(exported: Path) -> None:
    sidecar = exported.with_name("policy_best.onnx.sha256")
    digest = hashlib.sha256(exported.read_bytes()).hexdigest()
    assert sidecar.read_text(encoding="utf-8") == f"{digest}  policy_best.onnx\n"
    assert sha256_file(exported) == digest
    assert sorted(p.name for p in exported.parent.iterdir()) == [
        "policy_best.onnx",
        "policy_best.onnx.sha256",
    ]
    assert load_rl_policy(exported).sha256 == digest


def test_broken_export_raises_and_leaves_no_files(
    tmp_path: Path, held_out: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = export_mod._ExportWrapper.forward

    def off_by_a_little(self: Any, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs, strength = original(self, states)
        return probs * (1 - 3e-3) + 1e-3, strength  # still probabilities, but not PyTorch's

    monkeypatch.setattr(export_mod._ExportWrapper, "forward", off_by_a_little)
    folder = tmp_path / "models" / "bc"
    with pytest.raises(ExportError, match=r"batch size 1: action_probs differs by up to 0\.00"):
        _export(_net(), folder / "policy_best.onnx", parity_states=held_out[:50])
    assert list(folder.iterdir()) == []


def test_export_outside_the_output_contract_cannot_be_sealed(
    tmp_path: Path, held_out: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = export_mod._ExportWrapper.forward

    def not_summing_to_one(self: Any, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs, strength = original(self, states)
        return probs + 1e-3, strength

    monkeypatch.setattr(export_mod._ExportWrapper, "forward", not_summing_to_one)
    folder = tmp_path / "models" / "bc"
    with pytest.raises(ExportError, match=r"cannot be sealed: none of the 50 states .*contract"):
        _export(_net(), folder / "policy_best.onnx", parity_states=held_out[:50])
    assert list(folder.iterdir()) == []


def test_failed_export_keeps_an_older_model(
    tmp_path: Path, held_out: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _export(_net(seed=1), tmp_path / "policy_best.onnx", parity_states=held_out[:50])
    model_bytes = path.read_bytes()
    sidecar_bytes = path.with_name("policy_best.onnx.sha256").read_bytes()

    original = export_mod._ExportWrapper.forward
    monkeypatch.setattr(
        export_mod._ExportWrapper,
        "forward",
        lambda self, x: (original(self, x)[0], original(self, x)[1] * 0.5),
    )
    with pytest.raises(ExportError, match="batch size 1: strength differs"):
        _export(_net(seed=2), path, parity_states=held_out[:50])
    assert path.read_bytes() == model_bytes
    assert path.with_name("policy_best.onnx.sha256").read_bytes() == sidecar_bytes
    assert len(list(tmp_path.iterdir())) == 2
    load_rl_policy(path)


def test_export_sets_eval_mode_or_parity_fails(
    tmp_path: Path, held_out: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With dropout 0.5 left active (eval() forgotten), torch and the eval-mode graph disagree:
    # the parity check catches it. (The two-sizes test shows export_onnx does set eval mode.)
    monkeypatch.setattr(torch.nn.Module, "eval", lambda self: self)
    with pytest.raises(ExportError, match=r"batch size \d+: \w+ differs by up to"):
        _export(_net(dropout=0.5), tmp_path / "policy_best.onnx", parity_states=held_out[:50])
    assert list(tmp_path.iterdir()) == []


def test_default_parity_states_are_valid_and_varied(tmp_path: Path) -> None:
    states = default_parity_states()
    validate_states(states)
    assert states.shape == (300, 34)
    assert np.all(states.std(axis=0)[PORTFOLIO_COLUMNS] > 0)  # portfolio features vary too
    np.testing.assert_array_equal(states, default_parity_states())  # deterministic
    path = _export(_net(), tmp_path / "policy_best.onnx", parity_states=None)
    load_rl_policy(path)


def test_bad_arguments_are_refused_before_anything_is_written(
    tmp_path: Path, held_out: np.ndarray
) -> None:
    net = _net()
    out = tmp_path / "m" / "policy_best.onnx"
    with pytest.raises(ValueError, match=r"must end in \.onnx"):
        _export(net, tmp_path / "m" / "policy_best.pt")
    with pytest.raises(ValueError, match=r"\['best_epoch'\]"):
        _export(net, out, metrics={k: v for k, v in METRICS.items() if k != "best_epoch"})
    with pytest.raises(ValueError, match=r"\['val_action_acc'\]"):
        _export(net, out, metrics={**METRICS, "val_action_acc": "high"})
    with pytest.raises(ValueError, match="64 hex digits"):
        _export(net, out, dataset_sha256="abc")
    with pytest.raises(ValueError, match="training_config cannot be stored as JSON"):
        _export(net, out, training_config={"fn": object()})
    with pytest.raises(SchemaError, match="regime one-hot"):  # not a state the schema makes
        _export(net, out, parity_states=np.zeros((4, 34), dtype=np.float32))
    with pytest.raises(ValueError, match="no rows"):
        _export(net, out, parity_states=np.zeros((0, 34), dtype=np.float32))
    bad = held_out[:5].copy()
    bad[2, 0] = np.nan
    with pytest.raises(SchemaError):
        _export(net, out, parity_states=bad)
    assert not out.parent.exists()


def test_build_metadata_converts_numpy_and_stamps_utc() -> None:
    when = dt.datetime(2026, 1, 2, 5, 4, 3, 999, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    meta = build_metadata(
        metrics={**METRICS, "val_action_acc": np.float32(0.5), "best_epoch": np.int64(7)},
        training_config={"out": Path("models/x"), "sizes": np.array([1, 2])},
        dataset_sha256=SHA.upper(),
        created_at=when,
    )
    assert meta["otonom.created_at"] == "2026-01-02T03:04:03Z"
    metrics = json.loads(meta["otonom.metrics"])
    assert metrics["val_action_acc"] == 0.5
    assert metrics["best_epoch"] == 7
    assert json.loads(meta["otonom.training_config"]) == {"out": "models/x", "sizes": [1, 2]}
    assert meta["otonom.dataset_sha256"] == SHA
    assert all(isinstance(v, str) for v in meta.values())
    with pytest.raises(ValueError, match="no time zone"):
        build_metadata(
            metrics=METRICS, training_config={}, dataset_sha256=SHA, created_at=dt.datetime.now()
        )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_export_from_a_cuda_model(tmp_path: Path, held_out: np.ndarray) -> None:
    net = _net().to("cuda")
    path = _export(net, tmp_path / "policy_best.onnx", parity_states=held_out[:100])
    assert next(net.parameters()).is_cuda  # the caller's model stays where it was
    load_rl_policy(path)


def test_training_summary_is_metadata_only(tmp_path: Path, held_out: np.ndarray) -> None:
    """``otonom.training_summary`` from the training rows: the runtime reads it back, and the
    graph, the weights and the digest are those of the same export without it."""
    actions = np.arange(held_out.shape[0]) % 3
    plain = _export(_net(), tmp_path / "plain.onnx")
    summarised = _export(_net(), tmp_path / "summary.onnx", training_rows=(held_out, actions))
    meta = {p.key: p.value for p in onnx.load(str(summarised)).metadata_props}
    assert model_digest(plain.read_bytes()) == model_digest(summarised.read_bytes())
    assert meta["otonom.digest"] == model_digest(summarised.read_bytes())
    summary = load_rl_policy(summarised).training_summary()
    assert summary is not None
    assert summary.rows == held_out.shape[0]
    assert summary.actions == pytest.approx([1 / 3, 1 / 3, 1 / 3], abs=1e-2)
    assert summary.predicted_actions is not None
    assert load_rl_policy(plain).training_summary() is None
    assert max(summary.group_psi(held_out).values()) < 1e-9  # its own rows: no drift
