"""Ensembles of policies: several trained ``PolicyNet`` members exported as ONE ONNX model
(the guide's "Advanced Techniques / 2. Ensemble of RL Policies" and its Example 2).

::

    train_seeds(cfg, [42, 123, 456])                  -> three runs' policy_best.pt
    export_ensemble([a.pt, b.pt, c.pt], "models/ens/policy_ensemble.onnx", combine="vote")

The model is a normal policy for the runtime: ``load_rl_policy`` loads it and ``predict`` /
``predict_batch`` answer with the combined action probabilities and the mean strength, through
one onnxruntime run (the members' weights merged into one graph: ``ensemble_graph``). The
combine rules, ``"mean"`` (mean probabilities) and ``"vote"`` (majority vote, ties broken by
the higher mean probability, as a probability row whose argmax is the voted action), are
written in ``otonom_trainer.ensemble_graph`` and in numpy in ``combine_outputs``.

The file follows docs/model-format.md (the signature, the ``otonom.*`` metadata, sealed with
a digest and a golden sample, a sha256 sidecar) and adds ``otonom.ensemble``: the rule and,
per member, its checkpoint, the checkpoint's sha256, seed, run id, architecture and metrics.
``otonom.metrics`` holds the ensemble's own accuracy, measured on the validation rows its
members share (``metrics_source`` says so; an ensemble is not trained, so ``best_epoch`` is
0 and ``best_val_loss`` is its validation cross-entropy); members with different validation
splits give the members' means instead. As for ``export_onnx``, nothing appears at the target
until the written file, loaded through ``load_rl_policy``, answers like the members' own
outputs combined by the rule (``combine_outputs``) at batch sizes 1, 7 and 256.

Torch is imported by the functions that need it, not by importing this module.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

import numpy as np
import numpy.typing as npt

from otonom_runtime.policy import REQUIRED_METRICS
from otonom_schema import STATE_DIM, load_dataset, require_schema
from otonom_trainer._errors import EnsembleError
from otonom_trainer.ensemble_graph import (
    COMBINE_RULES,
    MIN_MEMBERS,
    MemberWeights,
    combine_outputs,
    ensemble_graph,
    vote_weight,
)

if TYPE_CHECKING:
    from otonom_schema import OfflineDataset
    from otonom_trainer.config import TrainingConfig
    from otonom_trainer.export import Reference
    from otonom_trainer.model import PolicyNetwork
    from otonom_trainer.training.data import DataSplit

__all__ = [
    "COMBINE_RULES",
    "ENSEMBLE_KEY",
    "EnsembleError",
    "EnsembleMember",
    "check_ensemble_path",
    "combine_outputs",
    "export_ensemble",
    "load_member",
    "member_outputs",
    "member_weights",
    "train_seeds",
]

ENSEMBLE_KEY: Final = "otonom.ensemble"
"""The metadata key of the combine rule and the members (a JSON object)."""
VOTE_MARGIN_ATOL: Final = 1e-5
"""A member whose top two probabilities are closer than this on a row may vote either way
there (float32 rounding in the merged graph); the parity check leaves such rows' vote out."""
_IN_MEMORY: Final = "<in memory>"
_RULES: Final = {
    "mean": "action_probs = the mean of the members' probabilities; strength = their mean",
    "vote": (
        "action_probs = (1 - w) * vote fractions + w * mean probabilities, w = 1 / (2 (N + 1)): "
        "argmax = the majority vote, ties broken by the higher mean probability (then the "
        "first action); strength = the members' mean"
    ),
}


@dataclass(frozen=True)
class EnsembleMember:
    """One member: its network (a ``PolicyNet``, eval mode) and what is known of its training
    (``load_member`` fills it from a checkpoint; a network alone has ``source`` "<in memory>"
    and empty ``config`` and ``metrics``)."""

    net: PolicyNetwork
    source: str = _IN_MEMORY
    config: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    sha256: str | None = None
    """The checkpoint file's sha256."""
    dataset_sha256: str | None = None
    """The training dataset's sha256 as its training run recorded it (``metadata.json``)."""
    schema: tuple[str, str] | None = None
    """(fingerprint, version) of the state schema the member was trained under."""

    def record(self) -> dict[str, Any]:
        """The member as stored in ``otonom.ensemble``."""
        return {
            "source": self.source,
            "sha256": self.sha256,
            "seed": self.config.get("seed"),
            "run_id": self.run_id,
            "architecture": "mlp",
            "hparams": self.net.hparams(),
            "dataset_sha256": self.dataset_sha256,
            "metrics": {k: self.metrics[k] for k in REQUIRED_METRICS if k in self.metrics},
        }


def _recorded_dataset_sha(checkpoint: Path, run_id: object) -> str | None:
    """The dataset sha256 in the training-run record beside ``checkpoint`` (same run only)."""
    record_path = checkpoint.with_name("metadata.json")
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(record, dict) or record.get("format") != "otonom-rl/training-run":
        return None
    if record.get("run_id") != run_id:
        return None
    sha = (record.get("dataset") or {}).get("sha256")
    return sha if isinstance(sha, str) else None


def load_member(path: str | os.PathLike[str]) -> EnsembleMember:
    """A member from a ``policy_best.pt`` checkpoint (``FileNotFoundError``, ``CheckpointError``
    for a file that is not one; the schema is compared by ``export_ensemble``)."""
    from otonom_schema import sha256_file
    from otonom_trainer.training.checkpoint import load_checkpoint

    src = Path(path)
    net, ckpt = load_checkpoint(src, check_schema=False)
    return EnsembleMember(
        net=net,
        source=str(path),
        config=dict(ckpt.get("config") or {}),
        metrics=dict(ckpt.get("metrics") or {}),
        run_id=ckpt.get("run_id"),
        sha256=sha256_file(src),
        dataset_sha256=_recorded_dataset_sha(src, ckpt.get("run_id")),
        schema=(str(ckpt.get("schema_fingerprint")), str(ckpt.get("schema_version"))),
    )


def _as_members(items: Sequence[object]) -> list[EnsembleMember]:
    """Checkpoint paths, networks and members as members, checked: at least two, no checkpoint
    twice, every one a ``PolicyNet`` of 34 inputs, one state schema (the installed one)."""
    from otonom_trainer.model import PolicyNet, PolicyNetwork

    if isinstance(items, (str, os.PathLike)) or len(items) < MIN_MEMBERS:
        n = 1 if isinstance(items, (str, os.PathLike)) else len(items)
        raise EnsembleError(
            f"an ensemble needs at least {MIN_MEMBERS} members; got {n} (give two or more "
            "checkpoints, or train more seeds)"
        )
    paths = [Path(i).resolve() for i in items if isinstance(i, (str, os.PathLike))]
    twice = sorted({str(p) for p in paths if paths.count(p) > 1})
    if twice:
        raise EnsembleError(f"checkpoint {twice[0]} is given twice; each member must differ")
    members: list[EnsembleMember] = []
    for item in items:
        if isinstance(item, EnsembleMember):
            members.append(dataclasses.replace(item, net=_cpu_copy(item.net)))
        elif isinstance(item, PolicyNetwork):
            members.append(EnsembleMember(net=_cpu_copy(item)))
        elif isinstance(item, (str, os.PathLike)):
            members.append(load_member(item))
        else:
            raise EnsembleError(
                f"ensemble member {item!r}: expected a checkpoint path, a PolicyNet or an "
                "EnsembleMember"
            )
    for m in members:
        if type(m.net) is not PolicyNet or m.net.state_dim != STATE_DIM:
            raise EnsembleError(
                f"member {m.source} is a {type(m.net).__qualname__} network "
                f"({m.net.hparams()}); the merged ensemble graph takes PolicyNet ('mlp') "
                f"members of {STATE_DIM} inputs only"
            )
    _check_schemas(members)
    return members


def _cpu_copy(net: PolicyNetwork) -> PolicyNetwork:
    """A float32 CPU copy in eval mode: the caller's network (device, mode) is left as it was."""
    return copy.deepcopy(net).to("cpu").float().eval()


def _check_schemas(members: Sequence[EnsembleMember]) -> None:
    known = [(m.source, m.schema) for m in members if m.schema is not None]
    for source, (fingerprint, version) in known[1:]:
        first, (first_fp, first_version) = known[0]
        if fingerprint != first_fp:
            raise EnsembleError(
                f"members trained under different state schemas: {first} under "
                f"{first_version} (fingerprint {first_fp}), {source} under {version} "
                f"(fingerprint {fingerprint}); every member must share the installed schema"
            )
    if known:
        source, (fingerprint, version) = known[0]
        require_schema(source, fingerprint, version, "Retrain the members on a dataset of it.")


def member_weights(net: PolicyNetwork) -> MemberWeights:
    """A ``PolicyNet``'s weights as numpy, as ``ensemble_graph`` takes them (each W transposed
    to [in, out])."""
    from torch import nn

    from otonom_trainer.model import PolicyNet

    assert isinstance(net, PolicyNet)  # _as_members admits no other

    def dense(layer: nn.Linear) -> tuple[Any, Any]:
        w = layer.weight.detach().cpu().float().numpy().T
        return np.ascontiguousarray(w), layer.bias.detach().cpu().float().numpy().copy()

    trunk = tuple(dense(m) for m in net.trunk if isinstance(m, nn.Linear))
    return MemberWeights(trunk, dense(net.action_head), dense(net.strength_head))


def member_outputs(
    members: Sequence[EnsembleMember], states: npt.NDArray[np.float32]
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Each member's own torch outputs on ``states``: probs (N, batch, 3), strengths (N, batch)."""
    import torch

    probs, strengths = [], []
    x = torch.from_numpy(np.array(states, dtype=np.float32))  # a copy: writable
    with torch.no_grad():
        for m in members:
            net = m.net
            if net.training or any(t.device.type != "cpu" for t in net.parameters()):
                net = _cpu_copy(net)  # (_as_members and load_member give such members already)
            p, s = zip(*(net.probabilities(chunk) for chunk in torch.split(x, 65536)), strict=True)
            probs.append(torch.cat(p).numpy())
            strengths.append(torch.cat(s).numpy().reshape(-1))
    return np.stack(probs), np.stack(strengths)


# -- the dataset, the shared split, the ensemble's metrics ------------------------------------


def _dataset_path(
    members: Sequence[EnsembleMember], dataset: str | os.PathLike[str] | None
) -> Path:
    if dataset is not None:
        return Path(dataset)
    named = sorted({str(m.config["dataset_path"]) for m in members if "dataset_path" in m.config})
    if len(named) > 1:
        raise EnsembleError(
            f"the members name different datasets ({', '.join(named)}); give the one they were "
            "all trained on (--dataset)"
        )
    if not named:
        raise EnsembleError(
            "no dataset: the members' configs name none; pass dataset= (--dataset): the .npz "
            "they were trained on"
        )
    return Path(named[0])


def _dataset(
    members: Sequence[EnsembleMember], dataset: str | os.PathLike[str] | None
) -> tuple[OfflineDataset, str]:
    """The members' training dataset and its sha256 (each member's recorded sha must match)."""
    from otonom_schema import sha256_file
    from otonom_trainer.training.files import dataset_file

    path = dataset_file(
        _dataset_path(members, dataset),
        "the members' training dataset: its sha256 goes into the model and its validation rows "
        "measure the ensemble",
    )
    sha = sha256_file(path)
    for m in members:
        if m.dataset_sha256 is not None and m.dataset_sha256 != sha:
            raise EnsembleError(
                f"member {m.source} was trained on a dataset of sha256 {m.dataset_sha256}, but "
                f"{path} has sha256 {sha}; every member must be trained on the same dataset"
            )
    return load_dataset(path), sha


def _splits(members: Sequence[EnsembleMember], ds: OfflineDataset) -> list[DataSplit]:
    """The train/validation split of each member, as ``BehaviorCloningTrainer`` made it from
    its config (TrainingConfig's defaults for a member without one)."""
    from otonom_trainer.config import TrainingConfig
    from otonom_trainer.training.data import split_rows

    default = TrainingConfig(dataset_path="-", output_dir="-")
    return [
        split_rows(
            ds.dates,
            float(m.config.get("val_fraction", default.val_fraction)),
            str(m.config.get("split", default.split)),
            int(m.config.get("seed", default.seed)),
        )
        for m in members
    ]


def _measured_metrics(
    members: Sequence[EnsembleMember], combine: str, ds: OfflineDataset, split: DataSplit
) -> dict[str, Any]:
    from otonom_trainer.degenerate import degenerate_mark, majority_baseline
    from otonom_trainer.metrics import confusion_matrix

    def predict(rows: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        probs, strengths = member_outputs(members, ds.states[rows])
        return combine_outputs(probs, strengths, combine)[0]

    val_probs = predict(split.val)
    val_true = np.asarray(ds.actions[split.val], dtype=np.int64)
    train_true = np.asarray(ds.actions[split.train], dtype=np.int64)
    cm = confusion_matrix(val_true, val_probs.argmax(axis=1))
    majority, baseline = majority_baseline(train_true, val_true)
    picked = val_probs[np.arange(val_true.size), val_true].astype(np.float64)
    return {
        "val_action_acc": float((val_probs.argmax(axis=1) == val_true).mean()),
        "train_action_acc": float((predict(split.train).argmax(axis=1) == train_true).mean()),
        "best_val_loss": float(-np.log(np.clip(picked, 1e-12, None)).mean()),
        "best_epoch": 0,
        "confusion_matrix": cm.tolist(),
        "majority_action": ("HOLD", "BUY", "SELL")[majority],
        "majority_baseline_acc": baseline,
        "degenerate": degenerate_mark(cm, majority),
        "val_size": int(split.val.size),
        "train_size": int(split.train.size),
        "metrics_source": "the ensemble, on the validation rows its members share",
    }


def _members_mean(members: Sequence[EnsembleMember]) -> dict[str, Any]:
    lacking = [m.source for m in members if not all(k in m.metrics for k in REQUIRED_METRICS)]
    if lacking:
        raise EnsembleError(
            f"the members' validation splits differ, so the ensemble cannot be measured on "
            f"rows none of them trained on, and {lacking[0]} records no metrics to average"
        )
    out: dict[str, Any] = {
        k: float(np.mean([float(m.metrics[k]) for m in members]))
        for k in ("val_action_acc", "train_action_acc", "best_val_loss")
    }
    out["best_epoch"] = 0
    out["metrics_source"] = "the members' means (their validation splits differ)"
    return out


def _metrics(
    members: Sequence[EnsembleMember], combine: str, ds: OfflineDataset
) -> tuple[dict[str, Any], npt.NDArray[np.float32]]:
    """The ensemble's metrics (measured on the validation rows every member shares, else the
    members' means) and the parity states (the first member's validation rows)."""
    splits = _splits(members, ds)
    parity = np.asarray(ds.states[splits[0].val], dtype=np.float32)
    if all(np.array_equal(s.val, splits[0].val) for s in splits[1:]):
        return _measured_metrics(members, combine, ds, splits[0]), parity
    return _members_mean(members), parity


# -- export ---------------------------------------------------------------------------------


def _reference(members: Sequence[EnsembleMember], combine: str) -> Reference:
    """The members' torch outputs combined by the rule: what the model must answer. For the
    vote, rows where a member's top two probabilities are within ``VOTE_MARGIN_ATOL`` (its vote
    may go either way in float32) are left out of the probabilities' comparison."""

    def reference(x: npt.NDArray[np.float32]) -> tuple[Any, Any, Any, dict[str, Any]]:
        probs, strengths = member_outputs(members, x)
        want_probs, want_strength = combine_outputs(probs, strengths, combine)
        if combine != "vote":
            return want_probs, want_strength, None, {}
        top2 = np.sort(probs, axis=-1)[..., -2:]
        clear = (top2[..., 1] - top2[..., 0] >= VOTE_MARGIN_ATOL).all(0)
        return want_probs, want_strength, clear, {}

    return reference


def check_ensemble_path(path: str | os.PathLike[str]) -> Path:
    """``path`` as the target of an ensemble: a ``.onnx`` file outside any training run's
    folder (the runtime would take it for a stale export of that run); ``EnsembleError``
    otherwise. ``export_ensemble`` checks it first; the CLI before it trains members."""
    out = Path(path)
    if out.suffix != ".onnx":
        raise EnsembleError(f"ensemble path {out} must end in .onnx (the runtime's model file)")
    record = out.with_name("metadata.json")
    try:
        found = json.loads(record.read_text(encoding="utf-8")).get("format")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return out
    if found == "otonom-rl/training-run":
        raise EnsembleError(
            f"{out.parent} is a training run's folder ({record}); the runtime would take the "
            "ensemble for a stale export of that run: write it to a folder of its own"
        )
    return out


def export_ensemble(
    members: Sequence[str | os.PathLike[str] | PolicyNetwork | EnsembleMember],
    path: str | os.PathLike[str],
    *,
    combine: str = "mean",
    dataset: str | os.PathLike[str] | None = None,
    atol: float = 1e-5,
) -> Path:
    """Export ``members`` (checkpoint paths, ``PolicyNet`` networks or ``EnsembleMember``s; at
    least two) as one ONNX policy at ``path`` (a ``.onnx`` file, with its sha256 sidecar).

    ``combine``: ``"mean"`` or ``"vote"`` (see the module doc). ``dataset``: the ``.npz`` the
    members were trained on (default: the one their checkpoints' configs name); its sha256 goes
    into the metadata and must equal each member's recorded one, and its validation rows, if
    the members share them, measure the ensemble and serve as the parity states.

    Raises ``EnsembleError`` (fewer than two members, a checkpoint twice, a member that is not
    a ``PolicyNet``, members of different state schemas or datasets, a training run's folder
    as the target), ``FileNotFoundError`` / ``CheckpointError`` for a missing or foreign
    checkpoint or dataset, ``SchemaMismatchError`` for members of another schema than the
    installed one, ``ExportError`` when the file does not load in the runtime or disagrees with
    the members; then nothing is written. Returns ``path``.
    """
    from otonom_trainer.export import build_metadata, check_parity, write_sealed

    out = check_ensemble_path(path)
    if combine not in COMBINE_RULES:
        raise EnsembleError(f"combine: got {combine!r}; expected one of {COMBINE_RULES}")
    group = _as_members(members)
    ds, dataset_sha = _dataset(group, dataset)
    metrics, parity = _metrics(group, combine, ds)
    metadata = build_metadata(
        metrics=metrics,
        training_config={"ensemble": combine, "members": [dict(m.config) for m in group]},
        dataset_sha256=dataset_sha,
    )
    info: dict[str, Any] = {"combine": combine, "rule": _RULES[combine]}
    if combine == "vote":
        info["vote_weight"] = vote_weight(len(group))
    info["members"] = [m.record() for m in group]
    metadata[ENSEMBLE_KEY] = json.dumps(info, sort_keys=True)
    graph = ensemble_graph([member_weights(m.net) for m in group], combine)

    def write_graph(staged: Path) -> None:
        staged.write_bytes(graph.SerializeToString())

    return write_sealed(
        out,
        write_graph,
        metadata,
        parity,
        lambda staged: check_parity(
            staged, parity, _reference(group, combine), atol, what=f"ensemble ({combine})"
        ),
    )


def train_seeds(
    config: TrainingConfig,
    seeds: Sequence[int],
    *,
    members_dir: str | os.PathLike[str] | None = None,
    out: TextIO | None = None,
) -> list[Path]:
    """Train ``config`` once per seed (the guide's Example 2) with ``BehaviorCloningTrainer``,
    each run (exported as usual) in ``members_dir / seed_<seed>`` (default: ``config``'s
    ``output_dir``); returns their ``policy_best.pt`` paths, for ``export_ensemble``. ``out``:
    where the training logs go (default stdout)."""
    from otonom_trainer.train import BehaviorCloningTrainer

    if len(seeds) < MIN_MEMBERS or len(set(seeds)) != len(seeds):
        raise EnsembleError(
            f"seeds: got {list(seeds)}; expected at least {MIN_MEMBERS} different seeds"
        )
    root = Path(members_dir if members_dir is not None else config.output_dir)
    paths = []
    for seed in seeds:
        cfg = config.replace(seed=seed, output_dir=str(root / f"seed_{seed}"))
        trainer = BehaviorCloningTrainer(cfg, out=out)
        trainer.train()
        paths.append(trainer.checkpoint_path)
    return paths
