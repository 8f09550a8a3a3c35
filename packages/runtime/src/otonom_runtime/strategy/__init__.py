"""Strategy files: YAML in the guide's format, loaded into frozen, validated config objects.

::

    cfg = load_strategy("strategies/baseline_v1.yaml")   # StrategyConfig (frozen)
    cfg.ensemble.analyst_weights.news                     # 1.0
    cfg.weights_array()                                   # float64 (tech, news, risk, rl)
    cfg.with_rl(False)                                    # the same strategy, RL analyst off
    cfg.to_dict()                                         # JSON-able; parse_strategy(...) reads it

Every key has a default (see the dataclasses below and ``strategies/baseline_v1.yaml``), so a
file only spells out what it changes. Unknown keys, wrong types (``true`` is not a number; an
integer is fine where a number is expected, but 10.0 or 2.5 is not an integer) and
values out of range are errors. ``load_strategy``/``parse_strategy`` check everything and raise
one ``StrategyError`` listing every problem, each as ``FILE[:LINE]: key.path: what was received,
what was expected``.

A section that is present but empty (``analysts:`` with every child commented out) means "all
defaults". With ``ensemble.rl_policy.enabled: true`` the model must resolve (``model_path``
accepts whatever ``otonom_runtime.policy.resolve_model_path`` accepts: a ``.onnx`` file, a model
folder, or a ``policy_best.pt`` path standing for the ``.onnx`` beside it) inside the models
root: ``$OTONOM_MODELS_ROOT`` if set, else the project root found from the strategy file (the
nearest folder holding ``models/``, see ``models_root``). A relative path resolves against that
root, never the bare working directory, and the model must stay inside it after symlinks are
resolved (``resolve_strategy_model``). The model file is found, not loaded:
``RlPolicyConfig.model_file`` is the ``.onnx`` to give to ``load_rl_policy``.
``ensemble.rl_policy.mode`` (``voter``, the default; ``sole``; ``filter``, with
``filter_veto`` and ``filter_size``) says how the policy's vote makes the decision
(``otonom_runtime.vote``).

Validation lives in one place, the project's one engine ``otonom_runtime.config_rules``: every
field carries its rule (``rule(...)`` in its metadata), a few rules span fields
(``__cross_checks__``), and one converter (``convert``) applies them for parsing while
``__post_init__`` applies the same rules to objects built directly.

The package: ``_yaml`` (reading a file: size and YAML event-stream limits, key lines, messages),
``_config`` (the frozen config sections), ``_models`` (the models root and
``resolve_strategy_model``), ``_load`` (``load_strategy`` / ``parse_strategy``).
"""

from __future__ import annotations

from otonom_runtime.ensemble import ANALYSTS  # also the order of weights_array()
from otonom_runtime.strategy._config import (
    CALENDAR_AUTO,
    DICT_SOURCE,
    AnalystsConfig,
    AnalystWeights,
    CalendarConfig,
    CostsConfig,
    DataConfig,
    EnsembleConfig,
    MonitoringConfig,
    NewsConfig,
    PortfolioConfig,
    RiskConfig,
    RlPolicyConfig,
    StrategyConfig,
    TechConfig,
    TechWeights,
    infer_periods_per_year,
)
from otonom_runtime.strategy._load import (
    BASELINE_STRATEGY,
    DEFAULT_STRATEGY_HELP,
    default_strategy_path,
    load_strategy,
    parse_strategy,
)
from otonom_runtime.strategy._models import (
    MODELS_ROOT_ENV,
    models_root,
    resolve_strategy_model,
)

__all__ = [
    "ANALYSTS",
    "BASELINE_STRATEGY",
    "CALENDAR_AUTO",
    "DEFAULT_STRATEGY_HELP",
    "DICT_SOURCE",
    "MODELS_ROOT_ENV",
    "AnalystWeights",
    "AnalystsConfig",
    "CalendarConfig",
    "CostsConfig",
    "DataConfig",
    "EnsembleConfig",
    "MonitoringConfig",
    "NewsConfig",
    "PortfolioConfig",
    "RiskConfig",
    "RlPolicyConfig",
    "StrategyConfig",
    "TechConfig",
    "TechWeights",
    "default_strategy_path",
    "infer_periods_per_year",
    "load_strategy",
    "models_root",
    "parse_strategy",
    "resolve_strategy_model",
]
