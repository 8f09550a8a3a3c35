"""``otonom-train finetune``: PPO fine-tuning of a behaviour-cloned policy
(``otonom_trainer.rl.ppo``) on ``TradingEnv``, exported through the same ONNX path.

``finetune(source, out, ...)`` reads the clone from ``source`` (a training run's folder:
``policy_best.pt``, a ``PolicyNet`` (the ``mlp`` architecture), and its ``policy_best.onnx``
for the dataset hash and metrics), fine-tunes it on one symbol's decision days of the store
(``mode``: ``"voter"``, the ensemble's 4th voter, today's deployment, by default; ``"sole"``
or ``"filter"``: the strategy's other deployment modes, ``otonom_runtime.vote``) and writes
``out/policy_best.onnx`` through ``otonom_trainer.export.export_onnx`` (runtime parity at
batch 1, 7 and 256, sealed, its sidecar; nothing is written if that fails) and
``out/finetune.json`` (the greedy episode's return before and after, on the training range
and on the evaluation range if one is given, in the same mode). The model's metrics are the
clone's (``metrics_source`` says so) plus the ``finetune_*`` figures.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from otonom_runtime.config_rules import to_plain
from otonom_runtime.vote import RL_MODES as EPISODE_MODES
from otonom_schema import atomic_write, parse_iso_date
from otonom_trainer.flags import add_strategy_flag
from otonom_trainer.rl.options import FinetuneConfig, RlError
from otonom_trainer.trials import record_trial

if TYPE_CHECKING:
    from otonom_runtime.backtest import EpisodeInputs
    from otonom_trainer.model import PolicyNet

__all__ = ["FinetuneResult", "add_parser", "finetune"]


@dataclass(frozen=True)
class FinetuneResult:
    """What a fine-tuning made: the model, the mode, and the greedy episode returns (and
    the share of days on which the tuned policy's action differs from the clone's)."""

    model: str
    mode: str
    symbol: str
    timesteps: int
    train_return_before: float
    train_return_after: float
    eval_return_before: float | None
    eval_return_after: float | None
    changed_actions: float

    def summary(self) -> str:
        line = (
            f"fine-tuned ({self.mode}, {self.timesteps} steps) -> {self.model}: {self.symbol} "
            f"train return {self.train_return_before:+.2%} -> {self.train_return_after:+.2%}"
        )
        if self.eval_return_before is not None and self.eval_return_after is not None:
            line += f", eval {self.eval_return_before:+.2%} -> {self.eval_return_after:+.2%}"
        return line + f"; actions changed on {self.changed_actions:.1%} of train days"


def _read_clone(source: Path) -> tuple[PolicyNet, dict[str, Any]]:
    """The clone (``PolicyNet``, eval mode) and its exported model's metadata."""
    from otonom_runtime import load_rl_policy
    from otonom_trainer.model import PolicyNet
    from otonom_trainer.training.checkpoint import load_checkpoint

    checkpoint = source / "policy_best.pt"
    if not checkpoint.is_file():
        raise RlError(f"--from {source} holds no policy_best.pt; expected a training run's folder")
    net, _ = load_checkpoint(checkpoint)
    if type(net) is not PolicyNet:
        raise RlError(
            f"{checkpoint} is a {type(net).__name__}; expected a PolicyNet (--model mlp): the "
            "actor of the fine-tuning is the clone itself"
        )
    return net, load_rl_policy(source).get_metadata()


def _inputs(url: str, strategy: Path, symbol: str, span: tuple[dt.date, dt.date]) -> EpisodeInputs:
    from otonom_runtime.backtest import episode_inputs
    from otonom_runtime.store import get_session
    from otonom_runtime.strategy import load_strategy

    config = load_strategy(strategy)
    with get_session(url) as session:
        return episode_inputs(session, config, symbol, *span)


def finetune(
    source: Path,
    out: Path,
    *,
    url: str,
    strategy: Path,
    symbol: str,
    train: tuple[dt.date, dt.date],
    evaluate: tuple[dt.date, dt.date] | None = None,
    config: FinetuneConfig | None = None,
) -> FinetuneResult:
    """Fine-tune the clone in ``source`` on ``symbol``'s decision days ``train`` and write
    the result to ``out`` (see the module docstring)."""
    import torch

    from otonom_trainer.export import export_onnx
    from otonom_trainer.rl.ppo import episode_return, make_ppo
    from otonom_trainer.training.optim import intra_op_threads

    cfg = config or FinetuneConfig()
    if out.resolve() == source.resolve():
        raise RlError(f"--out {out} is the --from folder; expected another folder")
    clone, meta = _read_clone(source)
    train_inputs = _inputs(url, strategy, symbol, train)
    eval_inputs = None if evaluate is None else _inputs(url, strategy, symbol, evaluate)
    torch.manual_seed(cfg.seed)
    # one row a step and small batches: one intra-op thread (as the trainer's small batches)
    with intra_op_threads(torch.device("cpu"), cfg.batch_size * clone.hidden_dim):
        before, clone_actions = episode_return(train_inputs, clone, cfg.mode)
        model = make_ppo(train_inputs, clone, cfg)
        model.learn(total_timesteps=cfg.timesteps)
        tuned = copy.deepcopy(model.policy.actor).cpu().eval()
        after, tuned_actions = episode_return(train_inputs, tuned, cfg.mode)
        evaluated = None
        if eval_inputs is not None:
            evaluated = (
                episode_return(eval_inputs, clone, cfg.mode)[0],
                episode_return(eval_inputs, tuned, cfg.mode)[0],
            )
    changed = sum(a != b for a, b in zip(clone_actions, tuned_actions, strict=True))
    result = FinetuneResult(
        model=str(out / "policy_best.onnx"),
        mode=cfg.mode,
        symbol=symbol,
        timesteps=cfg.timesteps,
        train_return_before=before,
        train_return_after=after,
        eval_return_before=None if evaluated is None else evaluated[0],
        eval_return_after=None if evaluated is None else evaluated[1],
        changed_actions=changed / max(len(clone_actions), 1),
    )
    metrics = {
        **meta["metrics"],
        "metrics_source": "the behaviour-cloning model it was fine-tuned from",
        **{f"finetune_{k}": v for k, v in asdict(result).items() if isinstance(v, float)},
    }
    training_config = {
        "finetune": to_plain(cfg),
        "from": str(source),
        "strategy": str(strategy),
        "symbol": symbol,
        "train": [d.isoformat() for d in train],
        "evaluate": None if evaluate is None else [d.isoformat() for d in evaluate],
        "clone_config": meta.get("training_config"),
    }
    export_onnx(
        tuned,
        out / "policy_best.onnx",
        metrics=metrics,
        training_config=training_config,
        dataset_sha256=str(meta["dataset_sha256"]),
    )
    atomic_write(out / "finetune.json", json.dumps(asdict(result), indent=2) + "\n")
    record_trial("finetune", output=str(out), source=str(source), symbol=symbol, seed=cfg.seed)
    return result


def _training_days(
    source: Path, start: dt.date | None, end: dt.date | None
) -> tuple[dt.date, dt.date]:
    """``--start-date`` / ``--end-date``, each one not given from the clone's training period
    (its ``metadata.json``: ``registry.trained_period``), printed with where it came from."""
    from otonom_trainer.registry import trained_period

    if start is not None and end is not None:
        return start, end
    first, last = trained_period(source)
    taken = " and ".join(name for name, day in (("the start", start), ("the end", end)) if not day)
    start, end = start or first, end or last
    if start is None or end is None:
        raise RlError(
            f"no --start-date/--end-date given and {source / 'metadata.json'} names no training "
            "period to take them from; expected both flags"
        )
    print(
        f"training days: {start} .. {end} ({taken} from the clone's training period in "
        f"{source / 'metadata.json'}; --start-date/--end-date choose others)"
    )
    return start, end


def _cmd_finetune(args: argparse.Namespace) -> int:
    from otonom_runtime.cli import require_store

    cfg = FinetuneConfig(
        timesteps=args.timesteps,
        n_steps=args.n_steps,
        batch_size=args.batch_size,
        n_epochs=args.n_epochs,
        learning_rate=args.learning_rate,
        kl_coef=args.kl_coef,
        entropy_coef=args.entropy_coef,
        mode=args.mode,
        seed=args.seed,
    )
    evaluate = None
    if (args.eval_start_date is None) != (args.eval_end_date is None):
        raise RlError("--eval-start-date and --eval-end-date go together; got one of them")
    if args.eval_start_date is not None:
        evaluate = (args.eval_start_date, args.eval_end_date)
    result = finetune(
        Path(args.source),
        Path(args.out),
        url=require_store(args.database_url),
        strategy=Path(args.strategy_path),
        symbol=args.symbol,
        train=_training_days(Path(args.source), args.start_date, args.end_date),
        evaluate=evaluate,
        config=cfg,
    )
    print(result.summary())
    return 0


_DESCRIPTION = (
    "Fine-tune a behaviour-cloned policy with PPO (stable-baselines3, the rl extra) on a "
    "trading environment over one symbol's bars in the store, whose states, fills and costs "
    "are the backtester's. The actor is the clone itself (its first action distribution is "
    "the clone's), a value head is added, and a KL term toward the clone (plus the strength's "
    "squared error) keeps it near its teacher. By default it is trained and judged as the "
    "ensemble's 4th voter (--mode voter, today's deployment). Writes OUT/policy_best.onnx "
    "(runtime parity checked, sealed) and OUT/finetune.json; nothing if it fails."
)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add the ``finetune`` command to ``sub``; its handler runs ``finetune``."""
    d = FinetuneConfig()
    p = sub.add_parser(
        "finetune", help="PPO fine-tuning of a cloned policy", description=_DESCRIPTION
    )
    p.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="MODEL_DIR",
        help="the training run's folder (policy_best.pt, policy_best.onnx)",
    )
    p.add_argument(
        "--out", required=True, metavar="DIR", help="folder for policy_best.onnx and finetune.json"
    )
    p.add_argument(
        "--symbol", required=True, help="the symbol whose bars the environment runs over"
    )
    for flags, which in ((("--start-date", "--start"), "first"), (("--end-date", "--end"), "last")):
        p.add_argument(
            *flags,
            type=parse_iso_date,
            help=f"{which} training decision day, YYYY-MM-DD (default: the {which} day of the "
            "clone's training data, from --from's metadata.json)",
        )
    for flag, which in (("--eval-start-date", "first"), ("--eval-end-date", "last")):
        p.add_argument(
            flag,
            type=parse_iso_date,
            help=f"{which} evaluation decision day (optional), YYYY-MM-DD",
        )
    add_strategy_flag(p)
    p.add_argument(
        "--mode",
        choices=EPISODE_MODES,
        default=d.mode,
        help="the deployment mode it is tuned and judged in (deploy it in the same one: the "
        "strategy's ensemble.rl_policy.mode): voter, the ensemble's 4th vote (today's "
        "deployment); sole, the only decider; filter, a veto/size filter on the ensemble's "
        "BUY/SELL as the strategy's filter_veto and filter_size say (%(default)s)",
    )
    numbers: tuple[tuple[str, type, str], ...] = (
        ("--timesteps", int, "environment steps of PPO"),
        ("--n-steps", int, "steps per rollout"),
        ("--batch-size", int, "minibatch size of the updates"),
        ("--n-epochs", int, "passes over each rollout"),
        ("--learning-rate", float, "Adam's learning rate"),
        ("--kl-coef", float, "weight of KL(clone || actor) + strength error"),
        ("--entropy-coef", float, "weight of the entropy bonus"),
        ("--seed", int, "seed of PPO and torch"),
    )
    for flag, kind, text in numbers:
        default = getattr(d, flag[2:].replace("-", "_"))
        p.add_argument(flag, type=kind, default=default, help=f"{text} (%(default)s)")
    p.add_argument(
        "--database-url", help="SQLAlchemy URL (default: $OTONOM_DATABASE_URL or ./data/otonom.db)"
    )
    p.set_defaults(handler=_cmd_finetune)
    return p
