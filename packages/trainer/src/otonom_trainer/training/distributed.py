"""Data-parallel training under ``torchrun``: the one seam between the trainer and
``torch.distributed``.

::

    torchrun --standalone --nproc-per-node 2 -m otonom_trainer train --dataset d.npz ...

A process started by torchrun with ``WORLD_SIZE > 1`` in its environment trains one share of
every batch; without it (``DataParallel.from_env()`` is then one process, rank 0 of 1) nothing
changes: the batches are the trainer's own slices and the loss is ``batch_terms``. Under
torchrun:

* **Same data, same order.** Every rank reads the whole dataset, makes the same split and draws
  the same epoch order (the seed is the config's), so the *global* batch ``b`` (``batch_size``
  rows of the epoch order) is the one a single process would take. Rank ``r`` of ``W`` runs
  the forward and backward pass on its contiguous shard of it (rows ``m*r//W .. m*(r+1)//W``
  of a batch of ``m``; a shard of the last, short batch may be empty).
* **The global batch's loss.** A shard's loss is its part of the global batch's loss: its sums
  divided by the *global* batch's normaliser (its row count, or its sum of class weights for
  ``class_balance="weighted"``; the strength weights are already per global batch), times
  ``W`` because DDP averages gradients. The reduced gradient is then the single process's
  gradient of the global batch, up to the order of float additions.
* **One optimizer step everywhere.** The model is wrapped in ``DistributedDataParallel``
  (``gradient_as_bucket_view=False``): DDP copies the reduced gradients back into each
  parameter's ``.grad``, which are views of the trainer's flat gradient buffer, so the
  gradient norm, clipping and ``FlatAdam`` work on the flat buffer as in one process and
  every rank takes the same step. No fallback to ``torch.optim`` is needed.
* **Dropout.** Each rank draws its own masks (its torch generator is reseeded with
  ``seed + rank`` after the network is made; DDP broadcasts rank 0's initial weights). A
  shard's mask is not the slice of the mask one process would draw, so with ``dropout > 0``
  the run matches a single process statistically, not bit for bit; with ``dropout = 0`` it
  matches up to float rounding.
* **Evaluation, early stopping, the lr schedule.** Every rank evaluates the whole train sample
  and validation split itself on identical weights, so every rank reaches the same best epoch,
  plateau and stop without talking to the others.
* **Outputs.** Rank 0 alone prints the log, writes checkpoints, the state file, the run files
  and the ONNX export (``writer``).

The backend is NCCL on CUDA (device ``"auto"`` / ``"cuda"`` becomes ``cuda:LOCAL_RANK``; a
``"cuda:N"`` device is taken as given) and Gloo on the CPU. The process group is created by
``session`` when no one has made it yet, and destroyed when ``train()`` ends.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TextIO, TypeVar

import torch
import torch.nn.functional as F

from otonom_trainer._errors import TrainingError
from otonom_trainer.model import PolicyNetwork
from otonom_trainer.training.data import resolve_device
from otonom_trainer.training.losses import BehaviorCloningLoss, LossTerms

__all__ = ["BatchPlan", "DataParallel"]

_T = TypeVar("_T")


class _Discard(io.StringIO):
    """The log of a rank > 0: written, not kept."""

    def write(self, s: str) -> int:
        return len(s)


@dataclass(frozen=True)
class DataParallel:
    """This process's place in a torchrun launch: ``rank`` of ``world_size`` (one process:
    rank 0 of 1) and its ``local_rank`` on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DataParallel:
        """From torchrun's ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (default ``os.environ``);
        rank 0 of 1 when ``WORLD_SIZE`` is absent or 1. ``TrainingError`` for values that are
        not a rank of the world."""
        env = os.environ if environ is None else environ
        try:
            world = int(env.get("WORLD_SIZE", "1"))
            rank = int(env.get("RANK", "0"))
            local = int(env.get("LOCAL_RANK", str(rank)))
        except ValueError:
            world, rank, local = 0, 0, 0
        if world < 1 or not 0 <= rank < world or local < 0:
            raise TrainingError(
                f"torchrun environment: WORLD_SIZE={env.get('WORLD_SIZE')!r}, "
                f"RANK={env.get('RANK')!r}, LOCAL_RANK={env.get('LOCAL_RANK')!r}; expected "
                "integers with 0 <= RANK < WORLD_SIZE and LOCAL_RANK >= 0"
            )
        return cls(rank, world, local)

    @property
    def active(self) -> bool:
        """More than one process trains."""
        return self.world_size > 1

    @property
    def writer(self) -> bool:
        """This process prints the log and writes the outputs (rank 0)."""
        return self.rank == 0

    def rank0(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T | None:
        """``fn(*args, **kwargs)`` on rank 0 (the writer), None on the other ranks."""
        return fn(*args, **kwargs) if self.writer else None

    def stream(self, out: TextIO | None) -> TextIO | None:
        """The log stream of this rank: ``out`` on rank 0, a discarded buffer elsewhere."""
        return out if self.writer else _Discard()

    def device(self, spec: str) -> torch.device:
        """``resolve_device(spec)``; under torchrun ``"auto"`` / ``"cuda"`` with CUDA present
        is ``cuda:LOCAL_RANK`` (one GPU per process)."""
        if self.active and spec in ("auto", "cuda") and torch.cuda.is_available():
            return resolve_device(f"cuda:{self.local_rank}")
        return resolve_device(spec)

    @contextlib.contextmanager
    def session(self, device: torch.device) -> Iterator[None]:
        """A training run on ``device``: the torch RNG forked (the caller's state is left as it
        was) and, when several processes train and no process group exists yet, the group
        (NCCL on CUDA, else Gloo; destroyed at the end)."""
        fork = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=fork):
            if not self.active:
                yield
                return
            import torch.distributed as dist

            if dist.is_initialized():
                yield
                return
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            try:
                yield
            finally:
                dist.destroy_process_group()

    def wrap(self, model: PolicyNetwork, device: torch.device, seed: int) -> torch.nn.Module:
        """What the training step calls: ``model`` itself, or under torchrun ``model`` in
        ``DistributedDataParallel`` (its parameters already in the flat buffer; rank 0's
        weights are broadcast), this rank's dropout generator then reseeded with
        ``seed + rank``."""
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        wrapped = DistributedDataParallel(model, device_ids=ids, gradient_as_bucket_view=False)
        torch.manual_seed((seed + self.rank) % 2**63)
        return wrapped

    def plan(
        self,
        loss_fn: BehaviorCloningLoss,
        actions: torch.Tensor,
        batch_size: int,
        weights: torch.Tensor | None = None,
    ) -> BatchPlan:
        """The batches of one epoch (``actions``: the train actions in the epoch's order;
        ``weights``: their action-loss weights in that order, ``training.awr``, or None)."""
        return BatchPlan(loss_fn, actions, batch_size, self.rank, self.world_size, weights)


class BatchPlan:
    """The rows this process reads at each step of an epoch and their loss.

    One process: ``rows(b)`` is the global batch ``b`` and ``terms`` is
    ``loss_fn.batch_terms``. Rank ``r`` of ``W``: ``rows(b)`` is its shard of batch ``b`` and
    ``terms`` the shard's part of the batch's loss (see the module docstring); its ``action``
    and ``strength`` are the shard's parts too (finite when the batch's are).
    """

    def __init__(
        self,
        loss_fn: BehaviorCloningLoss,
        actions: torch.Tensor,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        weights: torch.Tensor | None = None,
    ) -> None:
        self.loss_fn = loss_fn
        self.weights = weights
        self.batch_size = batch_size
        self.world_size = world_size
        n = int(actions.numel())
        self.n_batches = math.ceil(n / batch_size)
        if world_size == 1:
            return
        self._slices = []
        self._rows = []
        for b in range(self.n_batches):
            start = b * batch_size
            m = min(batch_size, n - start)
            self._slices.append(
                slice(start + m * rank // world_size, start + m * (rank + 1) // world_size)
            )
            self._rows.append(float(m))
        self._weight_sums: torch.Tensor | None = None
        weights = loss_fn.class_weights
        if weights is not None and loss_fn.focal is None:
            w = weights.to(actions.device)[actions]
            padded = F.pad(w, (0, self.n_batches * batch_size - n))
            self._weight_sums = padded.view(self.n_batches, batch_size).sum(dim=1)

    def rows(self, b: int) -> slice:
        """The rows (of the epoch-ordered train split) this process computes at step ``b``."""
        if self.world_size == 1:
            return slice(b * self.batch_size, (b + 1) * self.batch_size)
        return self._slices[b]

    def terms(
        self,
        b: int,
        logits: torch.Tensor,
        strength_pred: torch.Tensor,
        actions: torch.Tensor,
        strengths: torch.Tensor,
        strength_weights: torch.Tensor,
    ) -> LossTerms:
        """The loss of step ``b`` on the rows ``rows(b)`` (the arguments are those rows')."""
        fn = self.loss_fn
        w = None if self.weights is None else self.weights[self.rows(b)]
        if self.world_size == 1:
            return fn.batch_terms(logits, strength_pred, actions, strengths, strength_weights, w)
        rows = self._rows[b]
        if w is not None:
            denom = rows if self._weight_sums is None else self._weight_sums[b]
            action = fn.weighted_action(logits, actions, w, denom)
        elif fn.focal is not None:
            action = fn.focal(logits, actions).sum() / rows
        else:
            summed = F.cross_entropy(logits, actions, weight=fn.class_weights, reduction="sum")
            action = summed / (rows if self._weight_sums is None else self._weight_sums[b])
        err = strength_pred.reshape(-1) - strengths
        strength = torch.dot(err * strength_weights, err)
        total = fn.alpha * action + fn.beta * strength
        if fn.logit_penalty:
            total = total + (logits * logits).mean(dim=-1).sum() * (fn.logit_penalty / rows)
        return LossTerms(total * self.world_size, action, strength)
