"""The RL package's options and their error, apart from the environment and PPO: ``RlError``
and ``FinetuneConfig`` import neither the backtester nor torch, so ``otonom-train finetune``'s
flags are made (``--help``, a refused flag) without them. ``otonom_trainer.rl.env`` and
``otonom_trainer.rl.ppo`` export them as before."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from otonom_runtime.config_rules import Validated, rule
from otonom_runtime.vote import RL_MODES as EPISODE_MODES
from otonom_trainer._errors import OtonomTrainerError

__all__ = ["FinetuneConfig", "RlError"]


class RlError(OtonomTrainerError, ValueError):
    """The RL environment's or fine-tuning's options cannot be used."""


@dataclass(frozen=True)
class FinetuneConfig(Validated):
    """PPO's knobs for a fine-tuning (``otonom-train finetune``'s flags)."""

    timesteps: int = field(default=4096, metadata=rule(ge=1))
    n_steps: int = field(default=512, metadata=rule(ge=2))
    batch_size: int = field(default=64, metadata=rule(ge=2))
    n_epochs: int = field(default=4, metadata=rule(ge=1))
    learning_rate: float = field(default=1e-4, metadata=rule(gt=0.0))
    kl_coef: float = field(default=0.1, metadata=rule(ge=0.0))
    entropy_coef: float = field(default=0.0, metadata=rule(ge=0.0))
    gamma: float = field(default=0.99, metadata=rule(gt=0.0, le=1.0))
    clip_range: float = field(default=0.2, metadata=rule(gt=0.0))
    critic_hidden: int = field(default=64, metadata=rule(ge=1))
    mode: str = field(default="voter", metadata=rule(choices=EPISODE_MODES))
    seed: int = 0

    _error_class: ClassVar[type[Exception]] = RlError
