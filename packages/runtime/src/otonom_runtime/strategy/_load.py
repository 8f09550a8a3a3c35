"""The entry points: ``load_strategy`` (a YAML file) and ``parse_strategy`` (a mapping)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from otonom_runtime.baseline import BASELINE_STRATEGY, DEFAULT_STRATEGY_HELP, default_strategy_path
from otonom_runtime.config_rules import Problem, convert
from otonom_runtime.strategy._config import DICT_SOURCE, RlPolicyConfig, StrategyConfig
from otonom_runtime.strategy._models import resolve_rl
from otonom_runtime.strategy._yaml import error, read_strategy_file

__all__ = [
    "BASELINE_STRATEGY",
    "DEFAULT_STRATEGY_HELP",
    "default_strategy_path",
    "load_strategy",
    "parse_strategy",
]


def _dig(data: object, *keys: str) -> object:
    """``data[k1][k2]...``, or None where a level is not a mapping or lacks the key."""
    for key in keys:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


def _parse(
    data: object,
    *,
    source: str,
    sha256: str,
    base_dir: Path | None,
    default_name: str,
    lines: Mapping[str, int],
    problems: list[Problem],
    with_rl: bool = True,
) -> StrategyConfig:
    if isinstance(data, Mapping) and "name" not in data:
        data = {"name": default_name, **data}
    cfg = convert(StrategyConfig, data, "", problems)
    # the model is looked for even when other sections are invalid: every problem at once
    rl = convert(RlPolicyConfig, _dig(data, "ensemble", "rl_policy"), "rl_policy", [])
    if rl is not None and not with_rl:  # switched off for this run: its model not looked for
        rl = dataclasses.replace(rl, enabled=False)
    if rl is not None:
        rl = resolve_rl(rl, base_dir, problems)
    if cfg is not None and rl is not None and not problems:
        ensemble = dataclasses.replace(cfg.ensemble, rl_policy=rl)
        return dataclasses.replace(
            cfg, ensemble=ensemble, source=source, file_sha256=sha256, base_dir=base_dir
        )
    raise error(problems, source, lines)


def parse_strategy(
    mapping: Mapping[str, Any],
    *,
    source: str = DICT_SOURCE,
    base_dir: str | os.PathLike[str] | None = None,
) -> StrategyConfig:
    """A ``StrategyConfig`` from a mapping shaped like the YAML file (e.g. ``to_dict()``).

    ``source`` names the mapping in messages; ``base_dir`` stands for the strategy file's
    folder: the models root is found from it (``models_root``; without it, from the working
    directory). ``file_sha256`` is the sha256 of the
    mapping's canonical JSON (sorted keys, no spaces). A missing ``name`` is ``"strategy"``.
    Raises ``StrategyError`` listing every problem.
    """
    try:
        canonical = json.dumps(
            mapping, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
        )
    except TypeError:  # keys of mixed types cannot be sorted: the mapping is invalid anyway
        canonical = repr(mapping)
    return _parse(
        mapping,
        source=source,
        sha256=hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
        base_dir=None if base_dir is None else Path(base_dir),
        default_name="strategy",
        lines={},
        problems=[],
    )


def load_strategy(path: str | os.PathLike[str], *, with_rl: bool = True) -> StrategyConfig:
    """Load and check the strategy YAML file at ``path`` (``yaml.safe_load``, UTF-8).

    A missing ``name`` is the file's stem. The model path resolves inside the models root
    found from the file's folder (``resolve_strategy_model``), whatever the working directory.
    Raises ``StrategyError`` listing every problem (unreadable file, a file over 1 MiB (checked
    before reading), YAML anchors or aliases (refused), nesting deeper than 32 levels, YAML
    syntax error with its line, a top level that is not a mapping, duplicate/unknown keys, wrong
    types, values out of range, a missing model). ``with_rl=False``: the RL analyst switched
    off (``rl_policy.enabled`` false, its model not looked for: ``--no-rl`` runs a strategy
    whose model is missing).
    """
    p = Path(path)
    raw, data, lines, problems = read_strategy_file(p)
    return _parse(
        data,
        source=str(p),
        sha256=hashlib.sha256(raw).hexdigest(),
        base_dir=p.absolute().parent,  # fixed now: a later chdir changes nothing
        default_name=p.stem,
        lines=lines,
        problems=problems,
        with_rl=with_rl,
    )
