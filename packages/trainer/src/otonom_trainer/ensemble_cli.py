"""``otonom-train ensemble``: several policies as one ONNX model (``otonom_trainer.ensemble``).

Two ways in: ``--checkpoints A.pt B.pt C.pt`` (trained runs), or ``--seeds 42 123 456`` with a
dataset (the guide's Example 2: one training run per seed, then the ensemble of them). Every
input is checked before anything is trained or written; the model appears at ``--out`` only
after it loads through the runtime and answers like its members combined by the rule.
Importing this module imports neither torch nor the trainer's training modules.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

__all__ = ["add_parser"]


def _seed_checkpoints(args: argparse.Namespace, out: Path) -> list[Path]:
    """Train one member per ``--seeds`` entry (after checking every input); their checkpoints."""
    from otonom_trainer.config import TrainingConfig
    from otonom_trainer.ensemble import EnsembleError, train_seeds
    from otonom_trainer.training.files import dataset_file

    if len(set(args.seeds)) != len(args.seeds) or len(args.seeds) < 2:
        raise EnsembleError(f"--seeds: got {args.seeds}; expected at least 2 different seeds")
    members_dir = Path(args.members_dir) if args.members_dir else out.parent
    flags: dict[str, Any] = {"output_dir": str(members_dir)}
    if args.dataset:
        flags["dataset_path"] = args.dataset
    if args.epochs is not None:
        flags["max_epochs"] = args.epochs
    if args.config:
        cfg = TrainingConfig.from_yaml(args.config, overrides=flags)
    elif args.dataset:
        cfg = TrainingConfig.from_dict(flags)
    else:
        raise EnsembleError("--seeds: no dataset: give --dataset FILE.npz (or --config FILE.yaml)")
    given = "--dataset" if args.dataset else f"dataset_path in {args.config}"
    dataset_file(cfg.dataset_path, given)
    log = io.StringIO() if args.quiet else None
    return train_seeds(cfg, args.seeds, members_dir=members_dir, out=log)


def _cmd_ensemble(args: argparse.Namespace) -> int:
    from otonom_runtime import load_rl_policy
    from otonom_trainer.ensemble import (
        ENSEMBLE_KEY,
        EnsembleError,
        check_ensemble_path,
        export_ensemble,
    )

    out = check_ensemble_path(args.out)
    if args.checkpoints is not None:
        if args.config or args.epochs is not None or args.members_dir:
            raise EnsembleError("--config, --epochs and --members-dir go with --seeds only")
        members = list(args.checkpoints)
        dataset = args.dataset
    else:
        members = _seed_checkpoints(args, out)
        dataset = None  # the members' config names it
    path = export_ensemble(members, out, combine=args.combine, dataset=dataset)
    meta = load_rl_policy(path).get_metadata()
    info = json.loads(meta[ENSEMBLE_KEY.removeprefix("otonom.")])  # get_metadata drops it
    accs = [m["metrics"].get("val_action_acc") for m in info["members"]]
    shown = ", ".join("?" if a is None else f"{a:.3f}" for a in accs)
    print(
        f"ensemble of {len(accs)} ({args.combine}): {path} (matches its members combined at "
        f"batch 1, 7 and 256); val accuracy {meta['val_action_acc']:.3f} "
        f"({meta['metrics_source']}); members {shown}"
    )
    return 0


_DESCRIPTION = (
    "Merge two or more trained PolicyNet members into one ONNX policy that the runtime loads and "
    "predicts like any other (docs/model-format.md): action_probs are the members' mean "
    "probabilities (--combine mean) or their majority vote (--combine vote: a probability row "
    "whose argmax is the most voted action, a tie going to the higher mean probability), "
    "strength is the members' mean. The members come from --checkpoints, or are trained first, "
    "one run per --seeds entry, into MEMBERS_DIR/seed_<N>/. The model records the rule and each "
    "member's checkpoint, sha256, seed and metrics (metadata otonom.ensemble), and its own "
    "accuracy on the validation rows the members share. Nothing is written at --out unless the "
    "model loads through the runtime and matches its members combined (members trained with "
    "--seeds stay in MEMBERS_DIR if a later step fails)."
)
_EPILOG = (
    "examples: otonom-train ensemble --checkpoints models/s42/policy_best.pt "
    "models/s123/policy_best.pt models/s456/policy_best.pt --out "
    "models/rl_ensemble/policy_best.onnx --combine vote; otonom-train ensemble --dataset "
    "data/offline_dataset.npz --seeds 42 123 456 --epochs 10 --out "
    "models/rl_ensemble/policy_best.onnx"
)
# the flags that go with --seeds only: (flag, add_argument keywords)
_SEED_FLAGS: tuple[tuple[str, dict[str, Any]], ...] = (
    (
        "--config",
        {
            "metavar": "FILE.yaml",
            "help": "TrainingConfig fields for every member (the seed and output folder are set "
            "per member)",
        },
    ),
    ("--epochs", {"type": int, "help": "training epochs per member (default: the config's)"}),
    (
        "--members-dir",
        {
            "metavar": "DIR",
            "help": "where the members' runs go, DIR/seed_<N>/ (default: --out's folder)",
        },
    ),
    ("--quiet", {"action": "store_true", "help": "no training logs"}),
)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add the ``ensemble`` command to ``sub``; its handler runs ``export_ensemble``."""
    help_text = "several policies (checkpoints, or seeds to train) as ONE ONNX model"
    p = sub.add_parser("ensemble", help=help_text, description=_DESCRIPTION, epilog=_EPILOG)
    members = p.add_mutually_exclusive_group(required=True)
    members.add_argument(
        "--checkpoints",
        nargs="+",
        action="extend",
        metavar="FILE",
        help="the members: policy_best.pt files of trained runs (at least two)",
    )
    members.add_argument(
        "--seeds",
        nargs="+",
        action="extend",
        type=int,
        metavar="N",
        help="train one member per seed (at least two, different) on --dataset, then merge them",
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="FILE.onnx",
        help="the ensemble model to write (with its .sha256 sidecar), in a folder that is not a "
        "training run's; name it policy_best.onnx to load the folder by name",
    )
    p.add_argument(
        "--combine",
        choices=("mean", "vote"),
        default="mean",
        help="mean: the members' mean probabilities; vote: majority vote, ties to the higher "
        "mean probability (default %(default)s)",
    )
    p.add_argument(
        "--dataset",
        metavar="FILE.npz",
        help="the dataset the members are (--checkpoints: were) trained on; with --checkpoints "
        "default: the one their configs name",
    )
    seeds = p.add_argument_group("with --seeds only")
    for flag, kwargs in _SEED_FLAGS:
        seeds.add_argument(flag, **kwargs)
    p.set_defaults(handler=_cmd_ensemble)
    return p
