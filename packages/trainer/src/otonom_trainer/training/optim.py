"""The optimizer kit: the flat parameter buffer, ``FlatAdam`` (the fast path), the optimizer
seam, ``PlateauLR``, gradient clipping and the CPU thread setting.

The trainer moves the model's parameters into one flat buffer (``flatten_parameters``: each
parameter becomes a view of it, each gradient a view of one flat gradient), so zeroing, the
gradient norm and clipping are one operation each. The optimizer then sees one parameter, the
flat buffer: ``make_optimizer`` builds ``FlatAdam`` (``TrainingConfig.optimizer`` "adam" /
"adamw"), or calls an ``OptimizerFactory`` (any ``torch.optim.Optimizer`` over ``[flat]``, e.g.
``lambda params: torch.optim.SGD(params, lr=0.01)``). Its ``state_dict()`` is saved in the
checkpoint, so training resumes where it stopped.

``FlatAdam`` is a ``torch.optim.Optimizer`` (torch's schedulers accept it; ``state_dict`` /
``load_state_dict`` round-trip) whose ``step`` is seven tensor operations on the flat buffer.
It avoids the two costs of the base class that made the trainer slow on a net this small: the
per-step profiling/hook wrapper around ``step`` (``step.hooked`` is set, so step hooks are not
run) and ``torch._dynamo``, which the base class imports (over 1 s) in ``add_param_group``,
``state_dict``, ``load_state_dict`` and ``zero_grad``: those four are written here for its one
parameter group.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

import torch
from torch import nn

__all__ = [
    "SINGLE_THREAD_MAX_WORK",
    "FlatAdam",
    "OptimizerFactory",
    "PlateauLR",
    "clip_flat_grad_",
    "flatten_parameters",
    "intra_op_threads",
    "make_optimizer",
    "unflatten_parameters",
]

# on the CPU, train on one intra-op thread when batch_size * width is at most this
SINGLE_THREAD_MAX_WORK: Final = 256 * 256

OptimizerFactory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]
"""Builds an optimizer over the given parameters (the trainer passes ``[flat]``)."""


class FlatAdam(torch.optim.Optimizer):
    """torch's Adam (``decoupled=False``; L2 ``weight_decay`` added to the gradient) or AdamW
    (``decoupled=True``; the weights shrink by ``lr * weight_decay``) for one flat parameter.

    The maths are torch's single-tensor implementation (``amsgrad=False``, no ``maximize``)::

        t += 1;  g = grad (+ weight_decay * p for Adam);  p *= 1 - lr * weight_decay (AdamW)
        m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g^2
        p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    on one buffer, so a step is seven tensor operations. ``param_groups[0]["lr"]`` is read on
    every step (a scheduler lowers it). ``state_dict()`` is torch's layout (``{"state": {0:
    {"step", "exp_avg", "exp_avg_sq"}}, "param_groups": [...]}``), with ``step`` a float tensor
    like torch's Adam. Step hooks (``register_step_pre_hook``) are not run: see the module
    docstring.
    """

    def __init__(
        self,
        param: torch.Tensor,
        *,
        lr: float,
        weight_decay: float = 0.0,
        decoupled: bool = False,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        if lr <= 0 or weight_decay < 0 or eps <= 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(
                f"FlatAdam(lr={lr}, weight_decay={weight_decay}, betas={betas}, eps={eps}): "
                "expected lr > 0, weight_decay >= 0, betas in [0, 1), eps > 0"
            )
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "decoupled": decoupled,
        }
        super().__init__([param], defaults)
        self.decoupled = decoupled
        self.param = param
        self.steps = 0
        self.exp_avg = torch.zeros_like(param, memory_format=torch.preserve_format)
        self.exp_avg_sq = torch.zeros_like(param, memory_format=torch.preserve_format)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """The one group (a second one raises ``ValueError``); no ``torch._dynamo`` import."""
        if self.param_groups:
            raise ValueError("FlatAdam optimizes one flat parameter: a second group is refused")
        params = param_group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        if len(params) != 1 or not isinstance(params[0], torch.Tensor):
            raise ValueError(f"FlatAdam takes one tensor; got {len(params)} parameters")
        self.param_groups.append({**self.defaults, **param_group, "params": params})

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        """One update from ``param.grad`` (no-op when it is None); no closure."""
        p, group = self.param, self.param_groups[0]
        grad = p.grad
        if grad is None:
            return
        self.steps += 1
        t = self.steps
        lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        if wd != 0.0:
            if self.decoupled:
                p.mul_(1.0 - lr * wd)
            else:
                grad = grad.add(p, alpha=wd)
        m, v = self.exp_avg, self.exp_avg_sq
        m.lerp_(grad, 1.0 - beta1)
        v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        denom = v.sqrt().div_(math.sqrt(1.0 - beta2**t)).add_(eps)
        p.addcdiv_(m, denom, value=-lr / (1.0 - beta1**t))

    step.hooked = True  # type: ignore[attr-defined]  # the base class leaves step unwrapped

    def zero_grad(self, set_to_none: bool = True) -> None:
        if self.param.grad is not None:
            if set_to_none:
                self.param.grad = None
            else:
                self.param.grad.zero_()

    def state_dict(self) -> dict[str, Any]:
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        return {
            "state": {
                0: {
                    "step": torch.tensor(float(self.steps)),
                    "exp_avg": self.exp_avg.detach().clone(),
                    "exp_avg_sq": self.exp_avg_sq.detach().clone(),
                }
            },
            "param_groups": [{**group, "params": [0]}],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what ``state_dict()`` returned (``ValueError`` for another shape)."""
        try:
            (group,) = state_dict["param_groups"]
            state = state_dict["state"].get(0, {})
            exp_avg = state.get("exp_avg", torch.zeros_like(self.exp_avg))
            exp_avg_sq = state.get("exp_avg_sq", torch.zeros_like(self.exp_avg_sq))
            steps = int(float(state.get("step", 0)))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not a FlatAdam state dict: {exc!r}") from None
        if exp_avg.shape != self.param.shape or exp_avg_sq.shape != self.param.shape:
            raise ValueError(
                f"FlatAdam state of shape {tuple(exp_avg.shape)}; the parameter has "
                f"{tuple(self.param.shape)}"
            )
        with torch.no_grad():
            self.exp_avg.copy_(exp_avg)
            self.exp_avg_sq.copy_(exp_avg_sq)
        self.steps = steps
        self.param_groups[0].update({k: v for k, v in group.items() if k != "params"})
        self.param_groups[0]["betas"] = tuple(self.param_groups[0]["betas"])
        self.decoupled = bool(self.param_groups[0].get("decoupled", self.decoupled))


def make_optimizer(
    flat: nn.Parameter,
    *,
    name: str,
    lr: float,
    weight_decay: float,
    factory: OptimizerFactory | None = None,
) -> torch.optim.Optimizer:
    """The optimizer of the flat parameter: ``factory([flat])`` when given, else ``FlatAdam``
    (``name`` "adam": L2 weight decay; "adamw": decoupled)."""
    if factory is not None:
        optimizer = factory([flat])
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"the optimizer factory returned {type(optimizer).__name__}; expected a "
                "torch.optim.Optimizer over the parameters it was given"
            )
        return optimizer
    return FlatAdam(flat, lr=lr, weight_decay=weight_decay, decoupled=name == "adamw")


class PlateauLR:
    """``torch.optim.lr_scheduler.ReduceLROnPlateau`` with its defaults (mode "min", relative
    threshold 1e-4, no cooldown, min_lr 0, eps 1e-8) for any optimizer: after more than
    ``patience`` epochs in a row without ``loss < best * (1 - 1e-4)``, every group's
    ``lr *= factor``. ``state_dict`` / ``load_state_dict`` carry ``best`` and ``bad_epochs``."""

    THRESHOLD: Final = 1e-4
    EPS: Final = 1e-8

    def __init__(self, optimizer: torch.optim.Optimizer, *, factor: float, patience: int) -> None:
        self.optimizer = optimizer
        self.factor = factor
        self.patience = patience
        self.best = math.inf
        self.bad_epochs = 0

    def step(self, loss: float) -> None:
        if loss < self.best * (1.0 - self.THRESHOLD):
            self.best = loss
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
        if self.bad_epochs > self.patience:
            for group in self.optimizer.param_groups:
                new = group["lr"] * self.factor
                if group["lr"] - new > self.EPS:
                    group["lr"] = new
            self.bad_epochs = 0

    def state_dict(self) -> dict[str, float | int]:
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = float(state["best"])
        self.bad_epochs = int(state["bad_epochs"])


def clip_flat_grad_(grad: torch.Tensor, max_norm: float) -> torch.Tensor:
    """The L2 norm of ``grad`` (0-d, before clipping); when ``max_norm > 0``, scale ``grad`` in
    place by ``min(1, max_norm / (norm + 1e-6))``: ``nn.utils.clip_grad_norm_``'s rule for the
    gradient of all parameters at once (here one flat buffer)."""
    norm: torch.Tensor = torch.linalg.vector_norm(grad)
    if max_norm > 0:
        grad.mul_(torch.clamp(max_norm / (norm + 1e-6), max=1.0))
    return norm


def flatten_parameters(model: nn.Module) -> tuple[nn.Parameter, list[nn.Parameter]]:
    """Move the model's parameters into one flat buffer (each parameter becomes a view of it) and
    give them gradient views of one flat gradient buffer; returns the flat parameter (whose
    ``.grad`` is that buffer) and the model's parameters. Backward then accumulates into the
    flat gradient, so zeroing it, its norm and clipping are one operation each."""
    params = [p for p in model.parameters() if p.requires_grad]
    flat = nn.Parameter(torch.cat([p.detach().reshape(-1) for p in params]))
    flat.grad = torch.zeros_like(flat)
    offset = 0
    with torch.no_grad():
        for p in params:
            n = p.numel()
            p.data = flat.detach()[offset : offset + n].view_as(p)
            p.grad = flat.grad[offset : offset + n].view_as(p)
            offset += n
    return flat, params


def unflatten_parameters(params: Sequence[nn.Parameter]) -> None:
    """Give each parameter its own storage again and drop the gradient views."""
    with torch.no_grad():
        for p in params:
            p.data = p.detach().clone()
            p.grad = None


@contextlib.contextmanager
def intra_op_threads(device: torch.device, work: int) -> Iterator[None]:
    """One intra-op thread on the CPU when ``work`` (batch size x the network's
    ``work_per_row``) is at most ``SINGLE_THREAD_MAX_WORK``: splitting a 256 x 128 matmul
    between threads gains nothing, and on a busy machine a descheduled OpenMP worker stalls every
    operation. The caller's setting is restored."""
    if device.type != "cpu" or work > SINGLE_THREAD_MAX_WORK:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
