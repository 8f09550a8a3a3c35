"""Many policies at once: N seeds of the ``mlp`` ``PolicyNet`` trained together, one batched
step for all N (``train_many``, ``otonom-train train --seeds 42 123 456``).

``train_many(config, seeds)`` trains one policy per seed, each exactly as
``BehaviorCloningTrainer(config.replace(seed=s, output_dir=OUT/seed_S)).train()`` would (its
split, its teacher rows, its initialisation, its shuffled batch order, its dropout masks, its
learning-rate schedule and early stopping), but with the N networks' weights stacked (shape
(N, ...), ``otonom_trainer.training.stack``): every gradient step is one forward and backward
pass of batched matmuls and one optimizer step for all N. Each member then is an ordinary run:
its folder holds the files of ``otonom-train train`` (``policy_best.pt`` with a resumable
training state, ``metadata.json``, ``history.csv``, the plots and, unless ``export=False``,
``policy_best.onnx`` exported and parity-checked by ``export_onnx``), and the returned
``StackedMember`` is a ``BehaviorCloningTrainer`` (``model``, ``metrics``, ``run_id``,
``onnx_path``, ``export_onnx()``, ``val_states()``).

What is shared: the dataset (read and hashed once), and the train rows on the device when every
member trains on the same rows (the time split without teacher rows; else each member's rows
are stacked). What differs from N single runs: float rounding (batched matmuls, reductions per
member), so the members match their single runs closely rather than bit for bit; on CUDA the
dropout masks are one fused draw for the whole stack (the same law, other draws; on the CPU
each member draws its single run's masks); a member that stops early keeps being computed (its
best weights are kept) until every member has stopped or ``max_epochs``. Not supported:
other architectures, an ``optimizer_factory``, resuming, TensorBoard logs, the progress bar.

The speed against N single runs is ``bench/stacked.py`` (docs/benchmarks.md).
"""

from __future__ import annotations

import io
import math
import os
import time
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import numpy as np
import numpy.typing as npt
import torch

from otonom_schema import Action, OfflineDataset, load_dataset
from otonom_trainer._errors import TrainingError
from otonom_trainer.architectures import get_architecture
from otonom_trainer.augment import with_teacher_rows
from otonom_trainer.config import ConfigError, TrainingConfig
from otonom_trainer.export import sha256_file
from otonom_trainer.model import PolicyNet
from otonom_trainer.train import BehaviorCloningTrainer
from otonom_trainer.training.data import (
    SplitTensors,
    epoch_indices,
    resolve_device,
    to_device,
    train_eval_rows,
)
from otonom_trainer.training.losses import check_finite_batches, make_loss, strength_weights
from otonom_trainer.training.optim import (
    FlatAdam,
    PlateauLR,
    intra_op_threads,
    unflatten_parameters,
)
from otonom_trainer.training.results import TrainingMetrics
from otonom_trainer.training.stack import (
    ParameterStack,
    StackedAdam,
    StackedLoss,
    clip_rows_,
    stacked_batch_terms,
)
from otonom_trainer.training.state import TrainState

__all__ = ["StackedMember", "member_dir", "train_many"]

RULE = "=" * 60
# torch's note (once a process) that a stacked leaf's gradient, a strided view of the flat
# gradient, is not laid out like a fresh tensor: accumulating into it is what is wanted
_LAYOUT_WARNING = "grad and param do not obey the gradient layout contract"


def member_dir(output_dir: str | os.PathLike[str], seed: int) -> Path:
    """Where member ``seed`` of a stacked run into ``output_dir`` writes: ``output_dir/seed_S``."""
    return Path(output_dir) / f"seed_{seed}"


class StackedMember(BehaviorCloningTrainer):
    """One policy of ``train_many``: a ``BehaviorCloningTrainer`` of its own config (seed and
    folder) whose gradient steps the stacked loop takes; its epochs' evaluation, log lines
    (prefixed ``[seed S]``), learning-rate schedule, best-epoch checkpoints, final metrics,
    outputs and export are the single-model trainer's own code."""

    def __init__(
        self, cfg: TrainingConfig, dataset: OfflineDataset, sha256: str, out: TextIO | None
    ) -> None:
        super().__init__(cfg, out=out)
        self._dataset, self._dataset_sha256 = dataset, sha256
        self.net: PolicyNet | None = None
        self.dropout_generator = torch.Generator()
        self.run: TrainState | None = None
        self.active = True
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None
        self._notes: list[str] = []
        self.run_id = uuid.uuid4().hex

    @property
    def seed(self) -> int:
        return self.cfg.seed

    def _print(self, *values: object, flush: bool = False) -> None:
        text = " ".join(map(str, values))
        lines = (f"[seed {self.seed}] {line}" if line else line for line in text.split("\n"))
        print("\n".join(lines), file=self._out, flush=flush)

    def prepare(
        self, device: torch.device, cache: dict[bytes, SplitTensors]
    ) -> tuple[SplitTensors, SplitTensors, SplitTensors]:
        """The member's train rows (teacher rows included), train-eval and validation rows on
        ``device`` (from ``cache`` when another member has the same rows), its loss and its
        initial network (drawn as its single run draws it: after ``torch.manual_seed(seed)``);
        the global RNG state then is its dropout stream."""
        cfg, ds, split = self.cfg, self.dataset, self.split
        rows, extra = with_teacher_rows(ds, split.train, cfg)
        self._teacher_rows = 0 if extra is None else len(extra)
        if extra is not None:
            self._print(extra.describe(cfg.teacher_strategy, cfg.teacher_noise))
            key = f"teacher rows of seed {cfg.seed}".encode()
            train = cache.setdefault(key, to_device(rows, np.arange(len(rows)), device))
        else:
            train = _cached(cache, ds, split.train, device)
        counts = torch.bincount(train.actions.cpu(), minlength=len(Action)).tolist()
        said = io.StringIO()  # make_loss's header line, prefixed like the member's other lines
        self.loss_fn = make_loss(cfg, counts, self._notes, said).to(device)
        if said.getvalue():
            self._print(said.getvalue().rstrip("\n"))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.net = PolicyNet.from_config(cfg)
            self.dropout_generator.set_state(torch.get_rng_state())
        train_eval = _cached(cache, ds, train_eval_rows(split.train, cfg.seed), device)
        return train, train_eval, _cached(cache, ds, split.val, device)

    def attach(self, stack: ParameterStack, index: int) -> FlatAdam:
        """The member's training state on row ``index`` of ``stack``: its ``FlatAdam`` (whose
        learning rate the stacked step reads), its ``PlateauLR`` and epoch-order generator."""
        cfg, net, loss_fn = self.cfg, self.net, self.loss_fn
        assert net is not None
        assert loss_fn is not None
        flat = stack.row_params(index)
        opt = FlatAdam(
            flat, lr=cfg.lr, weight_decay=cfg.weight_decay, decoupled=cfg.optimizer == "adamw"
        )
        plateau = cfg.lr_plateau_patience
        scheduler = (
            PlateauLR(opt, factor=cfg.lr_plateau_factor, patience=plateau) if plateau else None
        )
        generator = torch.Generator().manual_seed(cfg.seed)
        params = list(net.parameters())
        self.run = TrainState(net, flat, params, opt, scheduler, loss_fn, generator)
        Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
        return opt

    def _run_epoch(
        self, run: TrainState, data: SplitTensors, order: torch.Tensor, epoch: int
    ) -> npt.NDArray[np.float64]:
        """The epoch's steps were taken by the stacked loop: its per-batch terms and gradient
        norms, checked as a single run checks them."""
        assert self._pending is not None
        terms, norms = self._pending
        self._pending = None
        return check_finite_batches(terms, norms, epoch, float(run.optimizer.param_groups[0]["lr"]))

    def end_epoch(
        self,
        epoch: int,
        sets: tuple[SplitTensors, SplitTensors, SplitTensors],
        terms: torch.Tensor,
        norms: torch.Tensor,
    ) -> None:
        """The single trainer's epoch bookkeeping after the stacked steps (``terms`` (batches,
        2) and ``norms`` (batches,) on the host); ``active`` turns False on early stopping."""
        run = self.run
        assert run is not None
        self._pending = (terms, norms)
        if run.flat.device.type == "cpu":
            torch.set_rng_state(self.dropout_generator.get_state())  # saved with a checkpoint
        train, train_eval, val = sets
        self._epoch(run, train, train_eval, val, torch.empty(0), epoch)
        patience = self.cfg.patience
        if patience and epoch - run.best_epoch >= patience:
            run.stopped_early, self.active = True, False
            self._print(
                f"Early stopping at epoch {epoch}: val_loss has not improved for {patience} "
                f"epochs (best {run.best_loss:.4f} at epoch {run.best_epoch})"
            )

    def finish(
        self,
        sets: tuple[SplitTensors, SplitTensors, SplitTensors],
        device: torch.device,
        start: float,
        export: bool,
    ) -> TrainingMetrics:
        """The best epoch's weights in a network of their own; metrics, outputs and export as
        ``BehaviorCloningTrainer.train`` writes them."""
        run = self.run
        assert run is not None
        self._export = export
        train_actions = sets[0].actions.cpu()
        metrics = self._finish(run, sets[2], train_actions, self._notes, device, start)
        if export:
            self._onnx_path = self.export_onnx()
            self._print(f"ONNX model: {self._onnx_path} (matches torch at batch 1, 7 and 256)")
        return metrics


class _StackData:
    """The members' train rows on the device: one copy when they are the same rows, else
    stacked; ``gather(order)`` is each member's epoch in its order, shape (N, n, ...)."""

    def __init__(self, trains: Sequence[SplitTensors]) -> None:
        first = trains[0]
        self.shared = all(t is first for t in trains)
        if self.shared:
            self.states, self.actions, self.strengths = first.states, first.actions, first.strengths
        else:
            self.states = torch.stack([t.states for t in trains])
            self.actions = torch.stack([t.actions for t in trains])
            self.strengths = torch.stack([t.strengths for t in trains])

    def gather(self, order: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.shared:
            return self.states[order], self.actions[order], self.strengths[order]
        rows = torch.arange(order.shape[0], device=order.device).unsqueeze(1)
        return self.states[rows, order], self.actions[rows, order], self.strengths[rows, order]


def _cached(
    cache: dict[bytes, SplitTensors],
    ds: OfflineDataset,
    rows: npt.NDArray[np.int64],
    device: torch.device,
) -> SplitTensors:
    """``to_device(ds, rows, device)``, once for the same rows."""
    key = np.ascontiguousarray(rows, dtype=np.int64).tobytes()
    found = cache.get(key)
    if found is None:
        found = cache[key] = to_device(ds, rows, device)
    return found


def _stacked_epoch(
    stack: ParameterStack,
    opt: StackedAdam,
    loss: StackedLoss,
    data: _StackData,
    order: torch.Tensor,
    cfg: TrainingConfig,
    generators: Sequence[torch.Generator] | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One epoch of stacked gradient steps; returns the per-batch terms (batches, N, 2) and
    gradient norms (batches, N), on the device (no host sync within the epoch)."""
    states, actions, strengths = data.gather(order)
    bs = cfg.batch_size
    weights = torch.stack([strength_weights(a, bs) for a in actions])
    grad = stack.flat.grad
    assert grad is not None
    action_terms: list[torch.Tensor] = []
    strength_terms: list[torch.Tensor] = []
    norm_list: list[torch.Tensor] = []
    for b in range(math.ceil(int(order.shape[1]) / bs)):
        sl = slice(b * bs, (b + 1) * bs)
        logits, strength = stack.forward(states[:, sl], generators)
        batch = (actions[:, sl], strengths[:, sl], weights[:, sl])
        terms = stacked_batch_terms(loss, logits, strength, batch)
        grad.zero_()
        with warnings.catch_warnings():  # the gradients are strided views of the flat one
            warnings.filterwarnings("ignore", message=_LAYOUT_WARNING, category=UserWarning)
            torch.autograd.backward(terms.total)
        norm_list.append(clip_rows_(grad, cfg.grad_clip))
        opt.step()
        action_terms.append(terms.action.detach())
        strength_terms.append(terms.strength.detach())
    both = torch.stack([torch.stack(action_terms), torch.stack(strength_terms)], dim=2)
    return both, torch.stack(norm_list)


def _stacked_loss(members: Sequence[StackedMember]) -> StackedLoss:
    """The members' losses as one (class weights stacked (N, 3) for "weighted")."""
    cfg = members[0].cfg
    weights = [m.loss_fn.class_weights for m in members if m.loss_fn is not None]
    stacked = [w for w in weights if w is not None]
    return StackedLoss(
        alpha=cfg.alpha,
        beta=cfg.beta,
        logit_penalty=cfg.logit_penalty,
        focal_gamma=cfg.focal_gamma if cfg.class_balance == "focal" else None,
        class_weights=torch.stack(stacked) if stacked else None,
    )


def _check(config: TrainingConfig, seeds: Sequence[int]) -> list[int]:
    """The seeds as a list; ``ConfigError`` / ``TrainingError`` for what cannot be stacked."""
    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds) or any(type(s) is not int for s in seeds):
        raise ConfigError(f"seeds: got {seeds}; expected one or more distinct integers")
    for s in seeds:
        config.replace(seed=s)  # each seed passes the seed rule
    if get_architecture(config.model) is not PolicyNet:
        raise TrainingError(
            f"model: got {config.model!r}; train_many stacks the 'mlp' PolicyNet only (train "
            "other architectures one by one with otonom-train train)"
        )
    if config.tensorboard:
        raise TrainingError("tensorboard: train_many writes no TensorBoard logs; set it false")
    return seeds


def _header(members: Sequence[StackedMember], device: torch.device, out: TextIO | None) -> None:
    first = members[0]
    ds, split = first.dataset, first.split
    counts = ds.action_counts()
    net = PolicyNet.from_config(first.cfg)  # inside train_many's fork of the RNG
    lines = [
        RULE,
        f"RL Behavior Cloning Training: {len(members)} policies at once (stacked weights)",
        RULE,
        f"Dataset: {first.cfg.dataset_path}",
        f"Loaded dataset: {len(ds)} samples, {ds.states.shape[1]} features",
        "Action distribution: " + ", ".join(f"{a.name}={counts[a]}" for a in Action),
        f"Train size: {split.train.size}, Val size: {split.val.size}",
        f"Seeds: {', '.join(str(m.seed) for m in members)} (a folder seed_S each)",
        f"Model parameters: {sum(p.numel() for p in net.parameters()):,} each",
        f"Device: {device}",
        RULE,
    ]
    print("\n".join(lines), file=out)


def train_many(
    config: TrainingConfig,
    seeds: Sequence[int],
    *,
    export: bool = True,
    out: TextIO | None = None,
) -> list[StackedMember]:
    """Train one ``PolicyNet`` per seed, all at once (see the module docstring): member ``s``
    is ``config`` with ``seed=s`` and ``output_dir=member_dir(config.output_dir, s)``.

    Returns the members in ``seeds`` order (each a finished ``BehaviorCloningTrainer``:
    ``model``, ``metrics``, ``onnx_path``, ``export_onnx()``). ``ConfigError`` for no seeds,
    a seed twice or an invalid one; ``TrainingError`` for an architecture other than ``"mlp"``,
    ``tensorboard=True``, a missing CUDA device or a diverging member (as a single run).
    ``out``: the text stream of the log (default ``sys.stdout`` at each line).
    """
    seeds = _check(config, seeds)
    device = resolve_device(config.device)
    start = time.perf_counter()
    path = Path(config.dataset_path)
    dataset, sha256 = load_dataset(path), sha256_file(path)
    members = [
        StackedMember(
            config.replace(seed=s, output_dir=str(member_dir(config.output_dir, s))),
            dataset,
            sha256,
            out,
        )
        for s in seeds
    ]
    # a member's matmuls are its single run's: the CPU thread rule is the single run's too (N
    # small matmuls gain nothing from splitting, and a busy core stalls them all)
    work = config.batch_size * PolicyNet.work_per_row(config)
    fork = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork), intra_op_threads(device, work):
        torch.manual_seed(seeds[0])  # the CUDA dropout stream; the CPU's are per member
        _header(members, device, out)
        _fit(members, device, start, export)
    return members


def _fit(
    members: Sequence[StackedMember], device: torch.device, start: float, export: bool
) -> None:
    cfg = members[0].cfg
    cache: dict[bytes, SplitTensors] = {}
    sets = [m.prepare(device, cache) for m in members]
    del cache
    nets = [m.net for m in members]
    stack = ParameterStack(nets, device)  # type: ignore[arg-type]
    opt = StackedAdam(stack.flat, [m.attach(stack, i) for i, m in enumerate(members)])
    loss = _stacked_loss(members)
    data = _StackData([s[0] for s in sets])
    generators = [m.dropout_generator for m in members] if device.type == "cpu" else None
    train_actions = [s[0].actions.cpu() for s in sets]
    try:
        for epoch in range(1, cfg.max_epochs + 1):
            orders = [
                epoch_indices(a, cfg.class_balance, m.run.generator)  # type: ignore[union-attr]
                for a, m in zip(train_actions, members, strict=True)
            ]
            order = torch.stack(orders).to(device)
            terms, norms = _stacked_epoch(stack, opt, loss, data, order, cfg, generators)
            terms, norms = terms.cpu(), norms.cpu()
            for i, m in enumerate(members):
                if m.active:
                    m.end_epoch(epoch, sets[i], terms[:, i], norms[:, i])
            if not any(m.active for m in members):
                break
    finally:
        with torch.no_grad():
            for net in nets:
                assert net is not None
                unflatten_parameters(list(net.parameters()))
    for m, s in zip(members, sets, strict=True):
        m.finish(s, device, start, export)
