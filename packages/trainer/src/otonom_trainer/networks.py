"""The guide's advanced architectures ("Advanced Techniques" 3 and 4), both the MLP
``PolicyNet`` with more, registered in ``otonom_trainer.architectures``:

* ``MultiTaskPolicyNet`` (``"multitask"``): the shared trunk feeds four heads: action (3
  logits), strength (sigmoid), expected return (the forward log return over the dataset's label
  horizon) and risk (3 logits over the forward volatility's terciles: low, mid, high). Trained
  on a dataset with forward labels (``otonom-train dataset --horizon H``) with the extra losses
  of ``otonom_trainer.training.multitask``. Exported outputs: ``action_probs``, ``strength``,
  ``expected_return`` [batch, 1], ``risk_probs`` [batch, 3].
* ``AttentionPolicyNet`` (``"attention"``): ``attn = softmax(W x + b)`` over the 34 features,
  then the MLP on ``x * (34 * attn)``. Exported outputs: ``action_probs``, ``strength``,
  ``attention`` [batch, 34] (the weights, ``FEATURE_NAMES`` order, summing to 1).

Both build the ``PolicyNet`` layers first, in its order, then their own: ``PolicyNet``'s
weights for a seed are unchanged. The constructor arguments and ``from_config`` are
``PolicyNet``'s.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from otonom_trainer.model import PolicyNet

__all__ = ["RISK_CLASSES", "AttentionPolicyNet", "MultiTaskPolicyNet"]

RISK_CLASSES: int = 3
"""The risk head's classes: the forward volatility's terciles (low, mid, high)."""


class MultiTaskPolicyNet(PolicyNet):
    """``PolicyNet`` plus an expected-return head (1) and a risk head (3 logits) on the trunk.

    ``heads(states)`` returns ``(action_logits, strength, return_z, risk_logits)``: the
    return head's raw output ``return_z`` is in standard deviations of the train rows' forward
    returns around their mean (the buffers ``return_mean`` and ``return_std``, set by the
    trainer with ``set_return_scale`` and saved in the state dict), which keeps its loss on the
    scale of the others; ``expected_return = return_z * return_std + return_mean`` (a log
    return) is what the export outputs. ``forward`` is ``PolicyNet``'s (action, strength).
    """

    EXTRA_OUTPUTS: ClassVar[tuple[str, ...]] = ("expected_return", "risk_probs")
    return_mean: torch.Tensor
    return_std: torch.Tensor

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """``PolicyNet``'s arguments: its layers first, then the two heads."""
        super().__init__(*args, **kwargs)
        self.return_head = nn.Linear(self.hidden_dim, 1)
        self.risk_head = nn.Linear(self.hidden_dim, RISK_CLASSES)
        self.register_buffer("return_mean", torch.zeros(()))
        self.register_buffer("return_std", torch.ones(()))

    def set_return_scale(self, mean: float, std: float) -> None:
        """The expected return's scale: ``expected_return = return_z * std + mean``."""
        if not (math.isfinite(mean) and math.isfinite(std) and std > 0.0):
            raise ValueError(f"return scale mean={mean}, std={std}; expected finite, std > 0")
        self.return_mean.fill_(mean)
        self.return_std.fill_(std)

    def heads(
        self, states: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(action_logits (N, 3), strength (N, 1), return_z (N, 1), risk_logits (N, 3))``."""
        h = self.trunk(states)
        return (
            self.action_head(h),
            torch.sigmoid(self.strength_head(h)),
            self.return_head(h),
            self.risk_head(h),
        )

    def exported(self, states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, strength, return_z, risk_logits = self.heads(states)
        expected = return_z * self.return_std + self.return_mean
        return (
            torch.softmax(logits, dim=-1),
            strength,
            expected,
            torch.softmax(risk_logits, dim=-1),
        )


class AttentionPolicyNet(PolicyNet):
    """The guide's attention network: ``attn = softmax(attention(x))`` over the features
    (``attention``: Linear(34, 34)), then ``PolicyNet``'s trunk and heads on
    ``x * (34 * attn)``: the guide's ``x * attn`` scaled by the number of features, so that
    uniform attention leaves the state as it is. Unscaled, the trunk sees inputs about 1/34 of
    their size and learns far slower: on the guide's walkthrough dataset (docs/benchmarks.md,
    "Multi-task and attention networks") three seeds at the default lr and 20 epochs reached
    0.23-0.50 held-out accuracy, against 0.82-0.84 scaled and 0.82-0.83 for the MLP.

    ``attention_weights(states)`` returns ``attn`` (N, 34), rows summing to 1; the export adds
    it as the output ``attention``.
    """

    EXTRA_OUTPUTS: ClassVar[tuple[str, ...]] = ("attention",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """``PolicyNet``'s arguments: its layers first, then the attention layer."""
        super().__init__(*args, **kwargs)
        self.attention = nn.Linear(self.state_dim, self.state_dim)

    def attention_weights(self, states: torch.Tensor) -> torch.Tensor:
        """``softmax(attention(states))`` (N, 34)."""
        return torch.softmax(self.attention(states), dim=-1)

    def _attended(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        attn = self.attention_weights(states)
        h = self.trunk(states * (attn * self.state_dim))
        return self.action_head(h), torch.sigmoid(self.strength_head(h)), attn

    def forward(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, strength, _ = self._attended(states)
        return logits, strength

    def exported(self, states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, strength, attn = self._attended(states)
        return torch.softmax(logits, dim=-1), strength, attn
