"""``otonom strategy check``: load a strategy file and print its summary or its problems."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from otonom_runtime._errors import OtonomRuntimeError

__all__ = ["add_strategy_commands"]


def _cmd_strategy_check(args: argparse.Namespace) -> int:
    from otonom_runtime.strategy import load_strategy

    cfg = load_strategy(args.file)
    e, rl = cfg.ensemble, cfg.ensemble.rl_policy
    w = e.analyst_weights
    if rl.enabled:
        rl_line = (
            f"on, model {rl.model_file} (model_path {rl.model_path!r}), device {rl.device}, "
            f"mode {_mode_text(rl.mode, rl.filter_veto, rl.filter_size)}"
        )
    else:
        rl_line = f"off (model_path {rl.model_path!r} not checked)"
    p, c = cfg.portfolio, cfg.costs
    lines = [
        f"strategy {cfg.name}: {cfg.source} (sha256 {cfg.file_sha256[:12]})",
        f"  ensemble:  {'on' if e.enabled else 'off (the tech analyst decides alone)'}, "
        f"min_score {e.min_score:g}",
        f"  weights:   tech {w.tech:g}, news {w.news:g}, risk {w.risk:g}, rl {w.rl:g}"
        + ("" if rl.enabled else " (counts as 0 while the RL analyst is off)"),
        f"  rl policy: {rl_line}",
        f"  portfolio: capital {p.initial_capital:g}, max leverage {p.max_leverage:g}, "
        f"shorts {'allowed' if p.allow_short else 'not allowed'}",
        f"  costs:     commission {c.commission_bps:g} bps, slippage {c.slippage_bps:g} bps",
        f"  calendar:  {cfg.calendar.periods_per_year} periods per year"
        + (
            " (252 or 365, from the bars' dates)" if cfg.calendar.periods_per_year == "auto" else ""
        ),
        "ok",
    ]
    print("\n".join(lines))
    if rl.enabled and rl.model_file is not None:
        _warn_rl_model(rl.model_file)
    return 0


def _mode_text(mode: str, veto: str, size: bool) -> str:
    """How the policy's vote decides, in words (``otonom_runtime.vote``)."""
    if mode == "voter":
        return "voter (the 4th analyst's vote)"
    if mode == "sole":
        return "sole (the policy decides alone)"
    return f"filter (the three analysts decide; veto {veto}, size {'on' if size else 'off'})"


def _warn_rl_model(model: Path) -> None:
    """A one-line warning on stderr when the strategy's RL model was marked degenerate at
    training, or does not load (a backtest would run without it); reads the metadata only."""
    from otonom_runtime.policy import load_rl_policy

    try:
        policy = load_rl_policy(model)
    except (OtonomRuntimeError, OSError) as exc:
        print(
            f"warning: RL model {model} does not load, a backtest runs without it: {exc}",
            file=sys.stderr,
        )
        return
    if policy.degenerate_reason:
        print(
            f"warning: RL model {policy.path} is marked degenerate at training: "
            f"{policy.degenerate_reason}",
            file=sys.stderr,
        )


def add_strategy_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    strategy = commands.add_parser(
        "strategy",
        help="check strategy YAML files",
        description="Check strategy YAML files (strategies/baseline_v1.yaml shows every key).",
    )
    sub = strategy.add_subparsers(
        dest="strategy_command", metavar="STRATEGY_COMMAND", required=True
    )
    p = sub.add_parser(
        "check",
        help="load a strategy file and print a summary, or every problem in it",
        description=(
            "Load a strategy YAML file and print its name, sha256, weights, RL analyst, costs "
            "and calendar. An invalid file prints every problem (file:line: key.path: what was "
            "received, what was expected) and exits 1. With the RL analyst enabled the model "
            "must be found inside the models root ($OTONOM_MODELS_ROOT, else the nearest folder "
            "holding models/ above the file; never the working directory); its metadata is "
            "read, and a model marked degenerate at training (or one that does not load) is a "
            "one-line warning on stderr."
        ),
    )
    p.add_argument("file", metavar="FILE", help="the strategy YAML file")
    p.set_defaults(handler=_cmd_strategy_check)
