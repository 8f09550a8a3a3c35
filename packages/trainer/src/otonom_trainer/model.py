"""The policy networks: ``PolicyNetwork`` (what every architecture provides) and ``PolicyNet``,
the guide's MLP (shared trunk, action head, strength head), registered as ``"mlp"`` in
``otonom_trainer.architectures`` (its variants with extra heads: ``otonom_trainer.networks``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from otonom_schema import STATE_DIM

if TYPE_CHECKING:
    from otonom_trainer.config import TrainingConfig

__all__ = ["FastDropout", "PolicyNet", "PolicyNetwork", "fast_dropout_mask"]

# FastDropout draws 16 random bits per element: the drop probability is rounded to a multiple
# of 1 / 2**16 (|error| <= 7.7e-6)
_DROP_LEVELS = 1 << 16


class FastDropout(nn.Dropout):
    """``nn.Dropout`` with a cheaper mask on the CPU; the same module everywhere else.

    In training mode on a CPU tensor, each element is kept when 16 random bits (a quarter of one
    int64 draw of torch's default generator) are at or above ``round(p * 2**16)``, and kept
    elements are scaled by ``1 / (1 - p')`` where ``p' = round(p * 2**16) / 2**16`` is the drop
    probability actually used, so the layer stays unbiased (``E[out] = x``). ``torch.bernoulli``
    (what ``nn.Dropout`` uses) spends one 32-bit draw and a float conversion per element: for this
    net on a CPU core that was about a third of a training step (measured with
    ``torch.profiler``); this mask costs a quarter of the draws and float-only arithmetic. In eval
    mode, for ``p = 0`` and on other devices (CUDA's dropout is a fused kernel) it is exactly
    ``nn.Dropout``. The randomness comes from the default torch generator, so ``torch.manual_seed``
    makes it reproducible.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or input.device.type != "cpu" or self.inplace:
            return F.dropout(input, self.p, self.training, self.inplace)
        n = input.numel()
        bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=input.device)
        bits.random_(-(2**63), None)  # the full 64-bit range: every 16-bit lane is uniform
        lanes = bits.view(torch.int16)[:n].view(input.shape).to(input.dtype)
        return input * fast_dropout_mask(lanes, self.p)


def fast_dropout_mask(lanes: torch.Tensor, p: float) -> torch.Tensor:
    """``FastDropout``'s mask from ``lanes``, uniform 16-bit integers held as floats (in place:
    ``lanes`` becomes the mask): ``1 / (1 - p')`` where the lane is kept, 0 where dropped
    (``p' = round(p * 2**16) / 2**16``). ``otonom_trainer.training.stack`` draws the lanes of N
    stacked networks and makes their masks here too."""
    # a drawn int16 b is kept when b >= threshold; P(b < threshold) = level / 2**16
    level = round(p * _DROP_LEVELS)
    threshold = level - _DROP_LEVELS // 2
    scale = _DROP_LEVELS / (_DROP_LEVELS - level)
    # (b - threshold + 1) * scale, clamped to [0, scale]: 0 for a dropped element (integer
    # b <= threshold - 1), scale for a kept one (b >= threshold)
    return lanes.sub_(threshold - 1).mul_(scale).clamp_(0.0, scale)


class PolicyNetwork(nn.Module):
    """What the trainer, checkpoints and the ONNX export need of a network architecture.

    ``forward(states (N, STATE_DIM) float32)`` returns ``(action_logits (N, 3), strength (N, 1)
    in [0, 1])``; ``probabilities`` (softmax of the logits, strength) is what is exported;
    ``hparams()`` returns the constructor's keyword arguments (plain numbers and strings, saved in
    the checkpoint: ``cls(**hparams)`` rebuilds the network); ``from_config(cfg)`` builds it from
    a ``TrainingConfig``; ``work_per_row(cfg)`` is the width that decides, with the batch size,
    whether the CPU trains on one intra-op thread (see ``otonom_trainer.training.optim``).
    ``exported(states)`` is what the ONNX model outputs: ``probabilities``, then one tensor per
    name of ``EXTRA_OUTPUTS`` (the runtime's optional outputs, e.g. ``"attention"``; none by
    default). Register a subclass with ``otonom_trainer.architectures.register_architecture``.
    """

    EXTRA_OUTPUTS: ClassVar[tuple[str, ...]] = ()
    """The optional outputs ``exported`` adds after ``action_probs`` and ``strength``, in order
    (names of ``otonom_runtime.policy.OPTIONAL_OUTPUTS``)."""

    def forward(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError(f"{type(self).__qualname__}.forward")

    def probabilities(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, strength = self(states)
        return torch.softmax(logits, dim=-1), strength

    def exported(self, states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The ONNX model's outputs: ``(action_probs, strength, *extras)`` (``EXTRA_OUTPUTS``)."""
        return self.probabilities(states)

    def hparams(self) -> dict[str, Any]:
        """The constructor arguments (saved in checkpoints to rebuild the network)."""
        raise NotImplementedError(f"{type(self).__qualname__}.hparams")

    @classmethod
    def from_config(cls, cfg: TrainingConfig) -> PolicyNetwork:
        """The network ``cfg`` asks for (input width ``STATE_DIM``)."""
        raise NotImplementedError(f"{cls.__qualname__}.from_config")

    @classmethod
    def work_per_row(cls, cfg: TrainingConfig) -> int:
        """The widest layer's width for ``cfg`` (default ``cfg.hidden_dim``)."""
        return cfg.hidden_dim


class PolicyNet(PolicyNetwork):
    """Input (34) -> ``num_layers`` x [Linear(hidden_dim), ReLU, Dropout] -> two heads.

    The dropout layers are ``FastDropout`` (``nn.Dropout`` with a cheaper CPU mask; the same
    state dict, the same eval-mode network and ONNX graph).

    ``forward(states)`` returns ``(action_logits, strength)``: logits of shape (N, 3) over
    HOLD=0, BUY=1, SELL=2 (softmax gives the action probabilities; the loss takes the logits)
    and the strength, shape (N, 1), through a sigmoid into [0, 1]. ``probabilities(states)``
    returns ``(softmax(logits), strength)``: what the exported ONNX model outputs.
    """

    def __init__(
        self,
        state_dim: int = STATE_DIM,
        hidden_dim: int = 128,
        num_layers: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if state_dim < 1 or hidden_dim < 1 or num_layers < 1:
            raise ValueError(
                f"PolicyNet(state_dim={state_dim}, hidden_dim={hidden_dim}, "
                f"num_layers={num_layers}); expected each >= 1"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout is {dropout}; expected a value in [0, 1)")
        layers: list[nn.Module] = []
        width = state_dim
        for _ in range(num_layers):
            layers += [nn.Linear(width, hidden_dim), nn.ReLU(), FastDropout(dropout)]
            width = hidden_dim
        self.state_dim = state_dim
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.dropout = dropout
        self.trunk = nn.Sequential(*layers)
        self.action_head = nn.Linear(hidden_dim, 3)
        self.strength_head = nn.Linear(hidden_dim, 1)

    def forward(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(states)
        return self.action_head(h), torch.sigmoid(self.strength_head(h))

    @classmethod
    def from_config(cls, cfg: TrainingConfig) -> PolicyNet:
        return cls(STATE_DIM, cfg.hidden_dim, cfg.num_layers, cfg.dropout)

    def hparams(self) -> dict[str, Any]:
        """The constructor arguments (saved in checkpoints to rebuild the network)."""
        return {
            "state_dim": self.state_dim,
            "hidden_dim": self.hidden_dim,
            "num_layers": self.num_layers,
            "dropout": self.dropout,
        }
