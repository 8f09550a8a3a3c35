"""``PolicyNet``: the guide's policy network (shared trunk, action head, strength head)."""

from __future__ import annotations

import torch
from torch import nn

from otonom_schema import STATE_DIM

__all__ = ["PolicyNet"]


class PolicyNet(nn.Module):
    """Input (34) -> ``num_layers`` x [Linear(hidden_dim), ReLU, Dropout] -> two heads.

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
            layers += [nn.Linear(width, hidden_dim), nn.ReLU(), nn.Dropout(dropout)]
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

    def probabilities(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, strength = self(states)
        return torch.softmax(logits, dim=-1), strength

    def hparams(self) -> dict[str, int | float]:
        """The constructor arguments (saved in checkpoints to rebuild the network)."""
        return {
            "state_dim": self.state_dim,
            "hidden_dim": self.hidden_dim,
            "num_layers": self.num_layers,
            "dropout": self.dropout,
        }
