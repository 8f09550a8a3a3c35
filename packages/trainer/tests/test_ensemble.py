"""Ensembles of policies as one ONNX model: the merged graph against its members (their own
exported ONNX files and their torch outputs), the vote and its ties, the runtime serving it,
the metadata, the CLI in a subprocess, and bad input refused writing nothing."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import otonom_schema
import otonom_trainer.ensemble as ensemble_mod
import otonom_trainer.ensemble_graph as graph_mod
from otonom_runtime import load_rl_policy
from otonom_schema import STATE_DIM, Action, RlState, SchemaMismatchError
from otonom_schema.testing import random_history
from otonom_trainer.architectures import register_architecture, unregister_architecture
from otonom_trainer.config import TrainingConfig
from otonom_trainer.ensemble import (
    ENSEMBLE_KEY,
    EnsembleError,
    EnsembleMember,
    combine_outputs,
    export_ensemble,
    load_member,
    member_outputs,
    train_seeds,
)
from otonom_trainer.ensemble_graph import vote_weight
from otonom_trainer.export import OPSET, ExportError, export_onnx, sha256_file
from otonom_trainer.model import PolicyNet, PolicyNetwork
from otonom_trainer.train import CheckpointError

METRICS = {"val_action_acc": 0.5, "train_action_acc": 0.6, "best_val_loss": 1.0, "best_epoch": 3}


def _dataset(path: Path, n: int = 400) -> Path:
    history = random_history(n, seed=3, vol=0.02)
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


def _net(seed: int, hidden: int = 24, layers: int = 2) -> PolicyNet:
    torch.manual_seed(seed)
    net = PolicyNet(hidden_dim=hidden, num_layers=layers)
    with torch.no_grad():  # sharper than the initialisation, so the members disagree
        net.action_head.weight.mul_(8.0)
    return net.eval()


def _fixed(probs: Sequence[float], strength: float, seed: int = 0) -> PolicyNet:
    """A member that answers ``probs`` and ``strength`` on every state (its heads' weights 0)."""
    net = _net(seed, hidden=8)
    with torch.no_grad():
        net.action_head.weight.zero_()
        net.action_head.bias.copy_(torch.log(torch.tensor(probs, dtype=torch.float32)))
        net.strength_head.weight.zero_()
        net.strength_head.bias.fill_(float(np.log(strength / (1.0 - strength))))
    return net


def _listing(root: Path) -> list[Path]:
    return sorted(root.rglob("*"))


def _guide_vote(votes: Sequence[int], probs: np.ndarray) -> int:
    """The guide's ``max(set(votes), key=votes.count)``, a tie going to the higher mean
    probability, then to the first action: written apart from the module's maths."""
    counts = {a: votes.count(a) for a in range(3)}
    best = max(counts.values())
    mean = probs.mean(axis=0)
    tied = [a for a in range(3) if counts[a] == best]
    return max(tied, key=lambda a: (mean[a], -a))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _dataset(tmp_path_factory.mktemp("data") / "ds.npz")


@pytest.fixture(scope="module")
def states(data: Path) -> np.ndarray:
    return np.ascontiguousarray(otonom_schema.load_dataset(data).states[:300])


@pytest.fixture(scope="module")
def nets() -> list[PolicyNet]:
    return [_net(seed) for seed in (1, 2, 3)]


# -- the merged graph against its members ------------------------------------------------------


@pytest.mark.parametrize("combine", ["mean", "vote"])
def test_the_model_equals_its_members_own_exports_combined(
    tmp_path: Path, data: Path, states: np.ndarray, nets: list[PolicyNet], combine: str
) -> None:
    """Each member exported on its own and served by the runtime; the rule applied to those
    outputs in numpy and, for the vote, the guide's rule written apart, row by row."""
    own = []
    for k, net in enumerate(nets):
        path = export_onnx(
            net,
            tmp_path / f"m{k}.onnx",
            metrics=METRICS,
            training_config={},
            dataset_sha256="0" * 64,
        )
        own.append(load_rl_policy(path).predict_batch(states))
    probs = np.stack([p for _, _, p in own])
    strengths = np.stack([s for _, s, _ in own])
    ensemble = load_rl_policy(
        export_ensemble(nets, tmp_path / "e.onnx", combine=combine, dataset=data)
    )
    actions, got_strength, got_probs = ensemble.predict_batch(states)

    want_probs, want_strength = combine_outputs(probs, strengths, combine)
    np.testing.assert_allclose(got_probs, want_probs, atol=1e-5, rtol=0)
    np.testing.assert_allclose(got_strength, strengths.mean(axis=0), atol=1e-5, rtol=0)
    np.testing.assert_allclose(want_strength, strengths.mean(axis=0), atol=1e-6, rtol=0)
    if combine == "mean":
        np.testing.assert_allclose(want_probs, probs.mean(axis=0), atol=1e-6, rtol=0)
        return
    votes = probs.argmax(axis=-1)  # (members, rows)
    assert len({tuple(np.sort(v)) for v in votes.T}) > 1  # the members disagree on some rows
    expected = [_guide_vote(list(votes[:, i]), probs[:, i]) for i in range(states.shape[0])]
    assert actions.tolist() == expected
    # a vote fraction row: (1 - w) * votes / 3 + w * mean
    w = vote_weight(3)
    fractions = np.stack([(votes == a).mean(axis=0) for a in range(3)], axis=1)
    np.testing.assert_allclose(
        got_probs, (1 - w) * fractions + w * probs.mean(axis=0), atol=1e-5, rtol=0
    )


@pytest.mark.parametrize(
    ("members", "winner"),
    [
        # three different votes: the highest mean probability wins (BUY, not the first action)
        ([([0.5, 0.3, 0.2], 0.2), ([0.05, 0.9, 0.05], 0.6), ([0.2, 0.2, 0.6], 0.7)], Action.BUY),
        # two against two: weak HOLDs lose to confident SELLs
        (
            [
                ([0.4, 0.3, 0.3], 0.1),
                ([0.4, 0.35, 0.25], 0.2),
                ([0.1, 0.1, 0.8], 0.3),
                ([0.05, 0.15, 0.8], 0.4),
            ],
            Action.SELL,
        ),
        # one against one
        ([([0.2, 0.45, 0.35], 0.5), ([0.1, 0.3, 0.6], 0.9)], Action.SELL),
        # a member tied within itself votes for the first of its top actions (BUY, not SELL)
        ([([0.2, 0.4, 0.4], 0.5), ([0.1, 0.5, 0.4], 0.5), ([0.1, 0.2, 0.7], 0.5)], Action.BUY),
        # a majority beats a higher mean probability: two weak HOLDs against one sure BUY
        (
            [([0.34, 0.33, 0.33], 0.5), ([0.35, 0.33, 0.32], 0.5), ([0.0, 1.0, 0.0], 0.5)],
            Action.HOLD,
        ),
    ],
)
def test_constructed_ties_go_to_the_higher_mean_probability(
    tmp_path: Path,
    data: Path,
    states: np.ndarray,
    members: list[tuple[list[float], float]],
    winner: Action,
) -> None:
    probs_in = [[max(p, 1e-6) for p in probs] for probs, _ in members]
    nets = [
        _fixed(p, s, seed=k) for k, (p, (_, s)) in enumerate(zip(probs_in, members, strict=True))
    ]
    policy = load_rl_policy(
        export_ensemble(nets, tmp_path / "e.onnx", combine="vote", dataset=data)
    )
    action, strength, probs = policy.predict(RlState.from_array(states[0]), return_probs=True)
    member_probs, member_strengths = member_outputs([EnsembleMember(n) for n in nets], states[:5])
    votes = list(member_probs[:, 0].argmax(axis=-1))
    assert _guide_vote(votes, member_probs[:, 0]) == winner.value
    assert action == winner
    assert strength == pytest.approx(float(np.mean([s for _, s in members])), abs=1e-5)
    want, _ = combine_outputs(member_probs, member_strengths, "vote")
    np.testing.assert_allclose(probs, want[0], atol=1e-5)
    assert float(np.sum(probs)) == pytest.approx(1.0, abs=1e-5)
    assert all(a == winner for a in policy.predict_batch(states[:5])[0])


def test_the_callers_networks_are_left_as_they_were(tmp_path: Path, data: Path) -> None:
    nets = [_net(1).train(), _net(2).train()]
    before = [{k: v.clone() for k, v in n.state_dict().items()} for n in nets]
    export_ensemble(nets, tmp_path / "e.onnx", dataset=data)
    assert all(n.training for n in nets)
    for n, state in zip(nets, before, strict=True):
        assert all(torch.equal(v, state[k]) for k, v in n.state_dict().items())


def test_members_of_different_widths_and_depths_merge(
    tmp_path: Path, data: Path, states: np.ndarray
) -> None:
    nets = [_net(1, hidden=16, layers=1), _net(2, hidden=40, layers=3)]
    policy = load_rl_policy(export_ensemble(nets, tmp_path / "e.onnx", dataset=data))
    probs, strengths = member_outputs([EnsembleMember(n) for n in nets], states)
    _, got_strength, got_probs = policy.predict_batch(states)
    np.testing.assert_allclose(got_probs, probs.mean(axis=0), atol=1e-5, rtol=0)
    np.testing.assert_allclose(got_strength, strengths.mean(axis=0), atol=1e-5, rtol=0)


# -- the runtime serves it like any policy ------------------------------------------------------


def test_the_runtime_serves_it_like_any_policy(
    tmp_path: Path, data: Path, states: np.ndarray, nets: list[PolicyNet]
) -> None:
    path = export_ensemble(
        nets, tmp_path / "ens" / "policy_best.onnx", combine="vote", dataset=data
    )
    policy = load_rl_policy(tmp_path / "ens")  # the folder, by its policy_best.onnx
    action, strength = policy.predict(RlState.from_array(states[7]))
    assert (action, strength) == policy.predict(states[7])
    actions, strengths, probs = policy.predict_batch(states[:64])
    assert actions[7] == action
    assert strengths[7] == pytest.approx(strength, abs=1e-6)
    assert probs.shape == (64, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)

    model = onnx.load(str(path))
    assert [i.name for i in model.graph.input] == ["state"]
    assert [o.name for o in model.graph.output] == ["action_probs", "strength"]
    dims = [
        [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim]
        for o in model.graph.output
    ]
    assert dims == [["batch", 3], ["batch", 1]]
    assert model.ir_version == 8
    assert [(o.domain, o.version) for o in model.opset_import] == [("", OPSET)]
    assert graph_mod._OPSET == OPSET
    assert ENSEMBLE_KEY in {p.key for p in model.metadata_props}
    sidecar = path.with_name(path.name + ".sha256").read_text()
    assert sidecar == f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}\n"

    meta = policy.get_metadata()
    info = json.loads(meta["ensemble"])
    assert info["combine"] == "vote"
    assert info["vote_weight"] == pytest.approx(1 / 8)
    assert "majority vote" in info["rule"]
    assert [m["source"] for m in info["members"]] == ["<in memory>"] * 3
    assert [m["hparams"]["hidden_dim"] for m in info["members"]] == [24] * 3
    assert meta["dataset_sha256"] == sha256_file(data)
    assert meta["best_epoch"] == 0
    assert meta["metrics_source"].startswith("the ensemble")


def test_trained_members_from_checkpoints_are_recorded_and_measured(
    tmp_path: Path, data: Path
) -> None:
    cfg = TrainingConfig.from_dict(
        {
            "dataset_path": str(data),
            "output_dir": str(tmp_path / "unused"),
            "hidden_dim": 16,
            "max_epochs": 1,
            "device": "cpu",
            "progress": False,
        }
    )
    paths = train_seeds(cfg, [42, 123, 456], members_dir=tmp_path / "members", out=io.StringIO())
    assert paths == [tmp_path / "members" / f"seed_{s}" / "policy_best.pt" for s in (42, 123, 456)]
    path = export_ensemble(paths, tmp_path / "ens" / "policy_ensemble.onnx")
    meta = load_rl_policy(path).get_metadata()
    info = json.loads(meta["ensemble"])
    assert [m["seed"] for m in info["members"]] == [42, 123, 456]
    assert [m["source"] for m in info["members"]] == [str(p) for p in paths]
    assert [m["sha256"] for m in info["members"]] == [sha256_file(p) for p in paths]
    runs = [json.loads(p.with_name("metadata.json").read_text())["run_id"] for p in paths]
    assert [m["run_id"] for m in info["members"]] == runs
    assert all(m["dataset_sha256"] == sha256_file(data) for m in info["members"])
    assert [c["seed"] for c in meta["training_config"]["members"]] == [42, 123, 456]
    member = load_member(paths[1])
    assert (member.config["seed"], member.run_id, member.sha256) == (
        123,
        runs[1],
        info["members"][1]["sha256"],
    )

    # the accuracy is the ensemble's own, on the validation rows the members share (time split)
    ds = otonom_schema.load_dataset(data)
    n_val = round(len(ds) * cfg.val_fraction)
    val = ds.states[-n_val:], ds.actions[-n_val:]
    predicted, _, _ = load_rl_policy(path).predict_batch(val[0])
    accuracy = float(np.mean(predicted == val[1]))
    assert meta["val_action_acc"] == pytest.approx(accuracy)
    assert meta["val_size"] == n_val
    assert sum(map(sum, meta["confusion_matrix"])) == n_val


def test_a_broken_graph_fails_parity_and_writes_nothing(
    tmp_path: Path, data: Path, nets: list[PolicyNet], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = graph_mod.ensemble_graph
    monkeypatch.setattr(ensemble_mod, "ensemble_graph", lambda m, c: real(m, "vote"))
    before = _listing(tmp_path)
    with pytest.raises(
        ExportError, match=r"ensemble \(mean\) parity failed at batch size 1: action_probs"
    ):
        export_ensemble(nets, tmp_path / "e.onnx", combine="mean", dataset=data)
    assert _listing(tmp_path) == before


# -- bad input: one line, nothing written -------------------------------------------------------


class _Tiny(PolicyNetwork):
    def __init__(self, state_dim: int = STATE_DIM) -> None:
        super().__init__()
        self.state_dim = state_dim
        self.out = nn.Linear(state_dim, 4)

    def forward(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.out(states)
        return z[:, :3], torch.sigmoid(z[:, 3:])

    def hparams(self) -> dict[str, Any]:
        return {"state_dim": self.state_dim}


@pytest.fixture
def tiny() -> Iterator[str]:
    register_architecture("ens-tiny", _Tiny)
    try:
        yield "ens-tiny"
    finally:
        unregister_architecture("ens-tiny")


def _checkpoint(folder: Path, net: PolicyNetwork, **changes: Any) -> Path:
    from otonom_trainer.training.checkpoint import save_checkpoint
    from otonom_trainer.training.state import checkpoint_dict

    ckpt = checkpoint_dict(net, run_id=None, config={}, metrics=METRICS)
    ckpt.update(changes)
    folder.mkdir(parents=True, exist_ok=True)
    save_checkpoint(ckpt, folder / "policy_best.pt")
    return folder / "policy_best.pt"


def test_bad_members_are_refused_before_anything_is_written(
    tmp_path: Path, data: Path, nets: list[PolicyNet], tiny: str
) -> None:
    a = _checkpoint(tmp_path / "a", nets[0])
    b = _checkpoint(tmp_path / "b", nets[1])
    other = _checkpoint(tmp_path / "c", nets[2], schema_fingerprint="0" * 16, schema_version="0.9")
    small = _checkpoint(tmp_path / "d", _Tiny())
    run = tmp_path / "run"
    run.mkdir()
    (run / "metadata.json").write_text(json.dumps({"format": "otonom-rl/training-run"}))
    out = tmp_path / "out" / "e.onnx"
    cases: list[tuple[Any, Path, dict[str, Any], type[Exception], str]] = [
        ([a], out, {}, EnsembleError, "an ensemble needs at least 2 members; got 1"),
        (a, out, {}, EnsembleError, "an ensemble needs at least 2 members; got 1"),
        ([a, tmp_path / "missing.pt"], out, {}, FileNotFoundError, "no checkpoint at"),
        ([a, data], out, {}, CheckpointError, "cannot be read as a policy checkpoint"),
        ([a, a], out, {}, EnsembleError, "is given twice"),
        ([a, small], out, {}, EnsembleError, "is a _Tiny network"),
        ([a, _Tiny()], out, {}, EnsembleError, "takes PolicyNet ('mlp') members"),
        ([a, other], out, {}, EnsembleError, "members trained under different state schemas"),
        ([other, tmp_path / "c2"], out, {}, FileNotFoundError, "no checkpoint at"),
        ([a, b], tmp_path / "e.txt", {}, EnsembleError, "must end in .onnx"),
        ([a, b], run / "e.onnx", {}, EnsembleError, "is a training run's folder"),
        ([a, b], out, {"combine": "median"}, EnsembleError, "combine: got 'median'"),
        ([a, b], out, {}, EnsembleError, "no dataset: the members' configs name none"),
        ([a, b], out, {"dataset": tmp_path / "no.npz"}, FileNotFoundError, "no dataset file at"),
        (
            [EnsembleMember(nets[0], dataset_sha256="f" * 64), b],
            out,
            {"dataset": data},
            EnsembleError,
            "was trained on a dataset of sha256 ffff",
        ),
    ]
    before = _listing(tmp_path)
    for members, target, kwargs, error, message in cases:
        with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
            export_ensemble(members, target, **kwargs)
        assert "\n" not in str(info.value), str(info.value)
        assert _listing(tmp_path) == before, message
    both = [other, _checkpoint(tmp_path / "c2", nets[1], schema_fingerprint="0" * 16)]
    with pytest.raises(SchemaMismatchError, match="Retrain the members"):
        export_ensemble(both, out, dataset=data)
    assert not out.parent.exists()


def test_members_naming_different_datasets_need_one_given(tmp_path: Path, data: Path) -> None:
    members = [
        EnsembleMember(_net(1), config={"dataset_path": "x.npz"}),
        EnsembleMember(_net(2), config={"dataset_path": "y.npz"}),
    ]
    with pytest.raises(EnsembleError, match=r"name different datasets \(x.npz, y.npz\)"):
        export_ensemble(members, tmp_path / "e.onnx")
    # their own validation splits differ (random splits): the members' means, marked so
    members = [
        EnsembleMember(_net(s), config={"split": "random", "seed": s}, metrics=METRICS)
        for s in (1, 2)
    ]
    meta = load_rl_policy(
        export_ensemble(members, tmp_path / "e.onnx", dataset=data)
    ).get_metadata()
    assert meta["metrics_source"] == "the members' means (their validation splits differ)"
    assert meta["val_action_acc"] == METRICS["val_action_acc"]


def test_train_seeds_refuses_too_few_or_repeated_seeds(tmp_path: Path, data: Path) -> None:
    cfg = TrainingConfig.from_dict({"dataset_path": str(data), "output_dir": str(tmp_path)})
    for seeds in ([1], [1, 1]):
        with pytest.raises(EnsembleError, match="expected at least 2 different seeds"):
            train_seeds(cfg, seeds)
    assert _listing(tmp_path) == []


# -- the command line, in a subprocess ----------------------------------------------------------


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otonom_trainer", "ensemble", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def test_the_command_trains_seeds_then_merges_checkpoints(tmp_path: Path, data: Path) -> None:
    out = _cli(
        "--dataset", str(data), "--seeds", "1", "2", "--epochs", "1", "--out",
        "ens/policy_best.onnx", "--combine", "vote", "--quiet", cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ensemble of 2 (vote): ens/policy_best.onnx"), out.stdout
    assert "val accuracy" in out.stdout
    assert sorted(p.name for p in (tmp_path / "ens").iterdir()) == [
        "policy_best.onnx", "policy_best.onnx.sha256", "seed_1", "seed_2",
    ]  # fmt: skip
    policy = load_rl_policy(tmp_path / "ens")
    assert [m["seed"] for m in json.loads(policy.get_metadata()["ensemble"])["members"]] == [1, 2]

    ckpts = [f"ens/seed_{s}/policy_best.pt" for s in (1, 2)]
    out = _cli("--checkpoints", *ckpts, "--out", "mean/e.onnx", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ensemble of 2 (mean): mean/e.onnx"), out.stdout
    assert load_rl_policy(tmp_path / "mean" / "e.onnx").get_metadata()["ensemble"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--checkpoints", "a.pt", "--out", "e.onnx"], "an ensemble needs at least 2 members"),
        (["--checkpoints", "a.pt", "b.pt", "--out", "e.onnx"], "no checkpoint at a.pt"),
        (["--checkpoints", "a.pt", "b.pt", "--out", "e.txt"], "ensemble path e.txt must end"),
        (["--seeds", "1", "--dataset", "ds.npz", "--out", "e.onnx"], "--seeds: got [1]"),
        (["--seeds", "1", "2", "--out", "e.onnx"], "--seeds: no dataset"),
        (["--seeds", "1", "2", "--dataset", "no.npz", "--out", "e.onnx"], "no dataset file at"),
        (["--checkpoints", "a.pt", "b.pt", "--epochs", "2", "--out", "e.onnx"], "--config, --ep"),
    ],
)
def test_the_command_fails_in_one_line_writing_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    _dataset(tmp_path / "ds.npz", n=50)
    before = _listing(tmp_path)
    out = _cli(*args, cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    lines = out.stderr.splitlines()
    assert lines == [lines[-1]], out.stderr
    assert lines[-1].startswith(f"error: {message}"), out.stderr
    assert _listing(tmp_path) == before
