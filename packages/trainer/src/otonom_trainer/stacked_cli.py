"""``otonom-train train --seeds 42 123 456``: the flag and its handler, apart from
``otonom_trainer.stacked`` so that building the command line imports no torch (``--help`` and
a refused flag answer at once; ``train_many`` is imported when a stacked run starts)."""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable

from otonom_trainer.config import ConfigError, TrainingConfig

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Give ``otonom-train train`` the ``--seeds`` flag: with it, ``train_many`` trains one
    policy per seed into ``--output``/seed_S (the train command itself is unchanged without
    it)."""
    train = sub.choices["train"]
    train.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        action="extend",
        metavar="SEED",
        help="train one policy per seed, all at once with stacked weights (one batched step "
        "for all; the mlp only), each into OUTPUT/seed_SEED with its own ONNX export; "
        "instead of --seed",
    )
    plain: Callable[[argparse.Namespace], int] = train.get_default("handler")
    train.set_defaults(handler=functools.partial(_cmd_train, plain))


def _cmd_train(plain: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    if args.seeds is None:
        return plain(args)
    from otonom_trainer.config import config_fields

    flags = {f.name: getattr(args, f.name) for f in config_fields() if hasattr(args, f.name)}
    unsupported = [
        flag
        for flag, given in (
            ("--seed", "seed" in flags),
            ("--resume", args.resume),
            ("--state-file", args.state_file),
        )
        if given
    ]
    if unsupported:
        raise ConfigError(
            f"--seeds: got {', '.join(unsupported)} too; expected --seeds alone (each member's "
            "seed is one of --seeds; a stacked run is not resumable)"
        )
    if args.config:
        cfg = TrainingConfig.from_yaml(args.config, overrides=flags)
    else:
        cfg = TrainingConfig.from_dict(flags)
    from otonom_trainer.stacked import train_many  # torch: only when it trains

    members = train_many(cfg, args.seeds, export=not args.no_export)
    for m in members:
        print(f"seed {m.seed}: val_acc={m.metrics.val_action_acc:.4f} -> {m.cfg.output_dir}")
    return 0
