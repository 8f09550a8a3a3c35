"""N MLP policies in one set of tensors: the stacked network, its dropout, its batch loss, its
Adam step and its per-member gradient clipping (the maths behind ``otonom_trainer.stacked``).

``ParameterStack`` holds N ``PolicyNet``\\ s of one shape in one flat buffer of shape (N, P):
row ``i`` is member ``i``'s parameters in ``PolicyNet.parameters()`` order, exactly the flat
buffer its single-model run trains (``training.optim.flatten_parameters``). Each member's
``PolicyNet`` keeps parameters that are views of its row (evaluation, checkpoints and export
see the current weights without a copy), and the stacked forward pass uses one leaf per
parameter of shape (N, ...) (a strided view of the buffer whose gradient is a view of the flat
gradient), so a layer is one ``torch.baddbmm`` for all N members, and zeroing, the per-member
gradient norms, clipping and the optimizer are one or a few operations on the whole buffer.

The maths is the single-model step's, member by member:

* dropout: on the CPU each member draws its mask from its own generator exactly as
  ``FastDropout`` does from the global one (the same 16-bit lanes, ``fast_dropout_mask``), so
  member ``i`` sees the masks of its single-model run; elsewhere (CUDA) one fused
  ``F.dropout`` over the whole stack (the same law, not the same draws);
* ``stacked_batch_terms``: ``BehaviorCloningLoss.batch_terms`` of every member at once (the
  members' totals are summed, so each member's gradient is its own);
* ``clip_rows_``: ``clip_flat_grad_`` per row;
* ``StackedAdam``: ``FlatAdam``'s step on the (N, P) buffer, with each member's learning rate
  read from its own ``FlatAdam`` (the one its checkpoint saves and its ``PlateauLR`` lowers).

Float rounding may differ from the single-model ops (a batched matmul, a reduction per row),
so the members match their single-model runs closely, not bit for bit
(``packages/trainer/tests/test_stacked.py`` measures how closely).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from otonom_trainer.model import PolicyNet, fast_dropout_mask
from otonom_trainer.training.losses import LossTerms
from otonom_trainer.training.optim import FlatAdam

__all__ = [
    "ParameterStack",
    "StackedAdam",
    "StackedLoss",
    "clip_rows_",
    "stacked_batch_terms",
]


class ParameterStack:
    """The parameters of ``nets`` (``PolicyNet`` s of one shape) in one (N, P) buffer on
    ``device``; afterwards each net's parameters are views of its row (``nets[i]`` is moved to
    ``device``). ``forward(states (N, B, 34))`` is every member's ``PolicyNet.forward`` at
    once; ``dropout_generators`` (CPU only: one ``torch.Generator`` per member) make each
    member's dropout masks those of its single-model run."""

    def __init__(self, nets: Sequence[PolicyNet], device: torch.device) -> None:
        first = nets[0]
        shapes = [tuple(p.shape) for p in first.parameters()]
        if any([tuple(p.shape) for p in net.parameters()] != shapes for net in nets):
            raise ValueError("ParameterStack: the networks differ in shape; expected one shape")
        rows = [torch.cat([p.detach().reshape(-1) for p in net.parameters()]) for net in nets]
        self.n = len(nets)
        self.nets = list(nets)
        self.dropout = first.dropout
        self.flat = nn.Parameter(torch.stack(rows).to(device))
        self.flat.grad = torch.zeros_like(self.flat)
        self.leaves: list[nn.Parameter] = []
        offset = 0
        for shape in shapes:
            size = math.prod(shape)
            cols = slice(offset, offset + size)
            leaf = nn.Parameter(self.flat.detach()[:, cols].view(self.n, *shape))
            leaf.grad = self.flat.grad[:, cols].view(self.n, *shape)
            self.leaves.append(leaf)
            offset += size
        with torch.no_grad():
            for i, net in enumerate(self.nets):
                net.to(device)
                offset = 0
                for p in net.parameters():
                    p.data = self.flat.detach()[i, offset : offset + p.numel()].view_as(p)
                    offset += p.numel()

    def row_params(self, i: int) -> nn.Parameter:
        """Member ``i``'s row of the buffer as a parameter (a view: what its ``FlatAdam`` is
        built on, so its state dict has the single-model layout)."""
        return nn.Parameter(self.flat.detach()[i], requires_grad=False)

    def forward(
        self,
        states: torch.Tensor,
        dropout_generators: Sequence[torch.Generator] | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits (N, B, 3), strength (N, B, 1))`` in training mode (dropout on)."""
        h = states
        leaves = self.leaves
        n_hidden = (len(leaves) - 4) // 2
        for k in range(n_hidden):
            w, b = leaves[2 * k], leaves[2 * k + 1]
            h = torch.relu(torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2)))
            h = self._dropout(h, dropout_generators)
        wa, ba, ws, bs = leaves[-4:]
        logits = torch.baddbmm(ba.unsqueeze(1), h, wa.transpose(1, 2))
        strength = torch.sigmoid(torch.baddbmm(bs.unsqueeze(1), h, ws.transpose(1, 2)))
        return logits, strength

    def _dropout(
        self, h: torch.Tensor, generators: Sequence[torch.Generator] | None
    ) -> torch.Tensor:
        p = self.dropout
        if p == 0.0:
            return h
        if generators is None or h.device.type != "cpu":
            return F.dropout(h, p, training=True)
        per_member = h[0].numel()
        words = (per_member + 3) // 4
        bits = torch.empty((self.n, words), dtype=torch.int64)
        for row, gen in zip(bits, generators, strict=True):
            row.random_(-(2**63), None, generator=gen)  # FastDropout's draw, member by member
        lanes = bits.view(torch.int16)[:, :per_member].to(h.dtype).view(h.shape)
        return h * fast_dropout_mask(lanes, p)


class StackedLoss:
    """What ``stacked_batch_terms`` needs of the members' ``BehaviorCloningLoss`` es (one
    alpha, beta, logit penalty and focal gamma; class weights per member)."""

    def __init__(
        self,
        *,
        alpha: float,
        beta: float,
        logit_penalty: float,
        focal_gamma: float | None,
        class_weights: torch.Tensor | None,
    ) -> None:
        self.alpha = alpha
        self.beta = beta
        self.logit_penalty = logit_penalty
        self.focal_gamma = focal_gamma
        self.class_weights = class_weights  # (N, 3) or None


def stacked_batch_terms(
    loss: StackedLoss,
    logits: torch.Tensor,
    strength_pred: torch.Tensor,
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
) -> LossTerms:
    """``BehaviorCloningLoss.batch_terms`` of N members at once: ``logits`` (N, B, 3),
    ``strength_pred`` (N, B, 1), ``batch`` the actions, target strengths and strength weights,
    each (N, B). ``total`` is the sum of the members' totals (0-d: one backward gives each
    member its own gradient); ``action`` and ``strength`` are the members' terms, shape (N,)."""
    actions, strengths, strength_weights = batch
    n, b = actions.shape
    ce = F.cross_entropy(logits.reshape(n * b, 3), actions.reshape(-1), reduction="none")
    ce = ce.view(n, b)
    if loss.focal_gamma is not None:
        action = ((1.0 - torch.exp(-ce)) ** loss.focal_gamma * ce).mean(dim=1)
    elif loss.class_weights is not None:
        w = torch.gather(loss.class_weights, 1, actions)
        action = (w * ce).sum(dim=1) / w.sum(dim=1)
    else:
        action = ce.mean(dim=1)
    err = strength_pred.reshape(n, b) - strengths
    strength = (err * strength_weights * err).sum(dim=1)
    total = action * loss.alpha + strength * loss.beta
    if loss.logit_penalty:
        total = total + (logits * logits).mean(dim=(1, 2)) * loss.logit_penalty
    return LossTerms(total.sum(), action, strength)


def clip_rows_(grad: torch.Tensor, max_norm: float) -> torch.Tensor:
    """``clip_flat_grad_`` for each row of ``grad`` (N, P): returns the rows' L2 norms (N,)
    before clipping; when ``max_norm > 0`` each row is scaled by ``min(1, max_norm / (norm +
    1e-6))``."""
    norms: torch.Tensor = torch.linalg.vector_norm(grad, dim=1)
    if max_norm > 0:
        grad.mul_(torch.clamp(max_norm / (norms + 1e-6), max=1.0).unsqueeze(1))
    return norms


class StackedAdam:
    """``FlatAdam``'s step on the (N, P) buffer ``param``: ``members[i]`` is member ``i``'s
    ``FlatAdam`` (over its row), whose ``param_groups[0]["lr"]`` is read before every step (a
    ``PlateauLR`` lowers it) and whose moments are views of this optimizer's rows (so its
    ``state_dict()`` is the member's single-model state). Betas, eps, weight decay and its
    kind are the first member's (the members share a configuration)."""

    def __init__(self, param: nn.Parameter, members: Sequence[FlatAdam]) -> None:
        self.param = param
        self.members = list(members)
        group = self.members[0].param_groups[0]
        beta1, beta2 = group["betas"]
        self.betas = (float(beta1), float(beta2))
        self.eps = float(group["eps"])
        self.weight_decay = float(group["weight_decay"])
        self.decoupled = self.members[0].decoupled
        self.steps = 0
        self.exp_avg = torch.zeros_like(param)
        self.exp_avg_sq = torch.zeros_like(param)
        for i, opt in enumerate(self.members):
            opt.exp_avg, opt.exp_avg_sq = self.exp_avg[i], self.exp_avg_sq[i]
        self._lrs: tuple[float, ...] = ()
        self._lr64 = torch.zeros(0)
        self._decay = torch.zeros(0)

    def _learning_rates(self) -> tuple[float, ...]:
        lrs = tuple(float(opt.param_groups[0]["lr"]) for opt in self.members)
        if lrs != self._lrs:  # changes at most once an epoch: no host copy per step
            self._lrs = lrs
            device = self.param.device
            self._lr64 = torch.tensor(lrs, dtype=torch.float64, device=device).unsqueeze(1)
            wd = self.weight_decay
            decay = [1.0 - lr * wd for lr in lrs]
            self._decay = torch.tensor(decay, dtype=self.param.dtype, device=device).unsqueeze(1)
        return lrs

    @torch.no_grad()
    def step(self) -> None:
        """One update of every row from ``param.grad`` (see ``FlatAdam.step``)."""
        p, grad = self.param, self.param.grad
        assert grad is not None
        lrs = self._learning_rates()
        self.steps += 1
        t = self.steps
        for opt in self.members:
            opt.steps = t
        beta1, beta2 = self.betas
        if self.weight_decay != 0.0:
            if self.decoupled:
                p.mul_(self._decay)
            else:
                grad = grad.add(p, alpha=self.weight_decay)
        m, v = self.exp_avg, self.exp_avg_sq
        m.lerp_(grad, 1.0 - beta1)
        v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        denom = v.sqrt().div_(math.sqrt(1.0 - beta2**t)).add_(self.eps)
        if len(set(lrs)) == 1:  # one rate: FlatAdam's very op
            p.addcdiv_(m, denom, value=-lrs[0] / (1.0 - beta1**t))
        else:  # -lr / (1 - beta1^t) per row, computed in float64 as Python does
            value = self._lr64.neg().div_(1.0 - beta1**t).to(p.dtype)
            p.add_(m.mul(value).div_(denom))
