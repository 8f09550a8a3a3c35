"""Behaviour cloning: train a policy network to imitate the ensemble's actions and strengths.

This module holds the training loop, ``BehaviorCloningTrainer``; the rooms it uses are
``otonom_trainer.training``'s (each re-exported here under its old name)::

    training/losses.py      BehaviorCloningLoss, FocalLoss, class_weights, strength_weights (maths)
    training/data.py        resolve_device, split_rows, epoch_indices, the split on the device
    training/optim.py       FlatAdam, make_optimizer (the seam), PlateauLR, the flat buffer
    training/checkpoint.py  policy_best.pt (save, read, load); training/state.py: TrainState, resume
    training/outputs.py     metadata.json, history.csv, plots, TensorBoard, progress bar
    training/results.py     EpochStats, TrainingMetrics, overfitting_warnings
    training/distributed.py torchrun: DDP, each global batch sharded over the ranks, rank 0 writes
    metrics.py / plots.py   the confusion matrix and per-class metrics; the PNG plots
    training/multitask.py   the extra heads' targets and losses (MultiTaskPolicyNet)
    training/awr.py         advantage-weighted imitation (awr_beta): the rows' action-loss weights
    architectures.py        TrainingConfig.model -> the network class; augment.py: teacher_rows

The dataset stays on the training device (GPU or CPU: one code path): each epoch gathers the
train split once in its order, batches are contiguous slices (no ``DataLoader``, no host-device
copy); loss terms and gradient norms are checked once per epoch (no per-batch sync). Under
``torchrun`` each rank computes its shard of every batch; extra heads (one process) add losses.

The training step is lean because this net is small (about 22k parameters): a CPU step is a
few hundred microseconds of maths, so the per-operation overhead decides the speed
(``bench/train.py``, docs/benchmarks.md "Training throughput"). Hence: the batch loss is
``BehaviorCloningLoss.batch_terms`` (one cross-entropy call; the strength weights ``[y_i !=
HOLD] / #trade rows of the batch`` computed once per epoch); the parameters live in one flat
buffer, so zeroing, the gradient norm, clipping and the optimizer (``FlatAdam``, or any
``torch.optim`` optimizer as ``optimizer_factory``) are a few tensor operations; dropout is
``model.FastDropout``; on the CPU a small net (``batch_size * work_per_row <=
SINGLE_THREAD_MAX_WORK``) trains on one intra-op thread (then restored).

All randomness (split, initialisation, batch order, dropout) comes from ``cfg.seed``; the torch
RNG is forked inside ``train()``, the caller's state left as it was. The optimizer's, the
scheduler's and the RNG states are saved with each best epoch (and after every epoch in
``state_path``), so ``train(resume_from=...)`` continues a run: k epochs, then N - k resumed,
give the weights of N epochs in one go, bit for bit.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, TextIO

import numpy as np
import numpy.typing as npt
import torch

from otonom_schema import Action, OfflineDataset, load_dataset
from otonom_trainer._errors import CheckpointError, TrainingError
from otonom_trainer.architectures import get_architecture
from otonom_trainer.augment import with_teacher_rows
from otonom_trainer.config import TrainingConfig
from otonom_trainer.degenerate import degenerate_mark, majority_baseline
from otonom_trainer.export import export_onnx, sha256_file
from otonom_trainer.metrics import ClassMetrics, confusion_matrix, per_class_metrics
from otonom_trainer.model import PolicyNetwork
from otonom_trainer.training.awr import train_tensors
from otonom_trainer.training.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_NAME,
    load_checkpoint,
    save_checkpoint,
)
from otonom_trainer.training.data import (
    TRAIN_EVAL_ROWS,
    DataSplit,
    SplitTensors,
    epoch_indices,
    evaluate_split,
    resolve_device,
    split_rows,
    to_device,
    train_eval_rows,
)
from otonom_trainer.training.distributed import DataParallel
from otonom_trainer.training.losses import (
    BehaviorCloningLoss,
    FocalLoss,
    LossTerms,
    check_finite_batches,
    class_weights,
    make_loss,
    strength_weights,
)
from otonom_trainer.training.multitask import MultiTaskTargets, multitask_targets
from otonom_trainer.training.optim import (
    SINGLE_THREAD_MAX_WORK,
    FlatAdam,
    OptimizerFactory,
    PlateauLR,
    clip_flat_grad_,
    flatten_parameters,
    intra_op_threads,
    make_optimizer,
    unflatten_parameters,
)
from otonom_trainer.training.outputs import (
    log_tensorboard,
    progress_bar,
    run_metadata,
    tensorboard_writer,
    training_summary,
    write_run_files,
)
from otonom_trainer.training.results import EpochStats, TrainingMetrics, overfitting_warnings
from otonom_trainer.training.state import TrainState, checkpoint_dict, read_resumable, restore

__all__ = [
    "ACTION_NAMES",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAME",
    "SINGLE_THREAD_MAX_WORK",
    "TRAIN_EVAL_ROWS",
    "BehaviorCloningLoss",
    "BehaviorCloningTrainer",
    "CheckpointError",
    "ClassMetrics",
    "DataSplit",
    "EpochStats",
    "FlatAdam",
    "FocalLoss",
    "LossTerms",
    "OptimizerFactory",
    "PlateauLR",
    "TrainingError",
    "TrainingMetrics",
    "class_weights",
    "clip_flat_grad_",
    "confusion_matrix",
    "epoch_indices",
    "load_checkpoint",
    "overfitting_warnings",
    "per_class_metrics",
    "resolve_device",
    "split_rows",
    "strength_weights",
    "train_eval_rows",
]

ACTION_NAMES: Final = tuple(a.name for a in Action)  # ("HOLD", "BUY", "SELL")
N_ACTIONS: Final = len(ACTION_NAMES)
ONNX_NAME: Final = "policy_best.onnx"
RULE: Final = "=" * 60
# a progress bar within epochs only when the train split is at least this large
PROGRESS_MIN_ROWS: Final = 20_000


class BehaviorCloningTrainer:
    """Train ``cfg.model``'s network on ``cfg.dataset_path``; write the run to ``cfg.output_dir``.

    ``train()`` prints the guide's training log, exports the best epoch to ONNX (as
    ``otonom-train train`` does) and returns ``TrainingMetrics``. Afterwards ``model`` is the
    best epoch's network (eval mode, on the training device), ``onnx_path`` the export,
    ``run_id`` the training run's id and ``val_states()`` the held-out states (for an export
    parity check). ``on_epoch_end`` (optional) is called after every epoch with its
    ``EpochStats`` and the model in its current state. ``optimizer_factory`` (optional) builds
    any ``torch.optim.Optimizer`` over ``[flat]`` (the parameters in one flat buffer) instead of
    ``FlatAdam``; ``state_path`` (optional) is a file the whole training state is written to
    after every epoch, for ``train(resume_from=state_path)``; ``out`` is the text stream the
    training log is printed to (default: ``sys.stdout`` at the time of each line), so a caller
    silences or captures it without redirecting the process's stdout.

    Files written to ``output_dir``: ``policy_best.pt`` (see ``load_checkpoint``),
    ``metadata.json``, ``history.csv``, ``training_curves.png``, ``confusion_matrix.png`` and
    ``policy_best.onnx`` + ``.sha256`` (plus ``tensorboard/`` when asked for and available).
    The checkpoint, ``metadata.json`` and the ONNX model carry the same run id (a fresh
    ``uuid4().hex`` per ``train()``), so ``load_rl_policy`` refuses an older export left beside
    a newer run.
    """

    def __init__(
        self,
        cfg: TrainingConfig,
        *,
        on_epoch_end: Callable[[EpochStats, PolicyNetwork], None] | None = None,
        optimizer_factory: OptimizerFactory | None = None,
        state_path: str | os.PathLike[str] | None = None,
        out: TextIO | None = None,
    ) -> None:
        self.cfg = cfg
        self._out = out
        self._on_epoch_end = on_epoch_end
        self._optimizer_factory = optimizer_factory
        self._state_path = None if state_path is None else Path(state_path)
        self._dataset: OfflineDataset | None = None
        self._dataset_sha256: str | None = None
        self._split: DataSplit | None = None
        self._model: PolicyNetwork | None = None
        self._metrics: TrainingMetrics | None = None
        self._onnx_path: Path | None = None
        self._export = True
        self._best_training_state: dict[str, Any] | None = None
        self._teacher_rows = 0
        self._aux: MultiTaskTargets | None = None  # the extra heads' targets ("multitask")
        self._dp, self._forward = DataParallel(), torch.nn.Module()  # set by train(), _setup()
        self.loss_fn: BehaviorCloningLoss | None = None
        self.run_id: str | None = None
        """The id of the last ``train()`` (None before)."""

    def _print(self, *values: object, flush: bool = False) -> None:
        print(*values, file=self._out, flush=flush)  # None: sys.stdout at the time of the call

    # -- data ------------------------------------------------------------------------------

    @property
    def dataset(self) -> OfflineDataset:
        """The dataset (read on first use)."""
        if self._dataset is None:
            path = Path(self.cfg.dataset_path)
            self._dataset = load_dataset(path)
            self._dataset_sha256 = sha256_file(path)
        return self._dataset

    @property
    def split(self) -> DataSplit:
        """The train/validation split (deterministic for a config)."""
        if self._split is None:
            self._split = split_rows(
                self.dataset.dates, self.cfg.val_fraction, self.cfg.split, self.cfg.seed
            )
        return self._split

    def val_states(self) -> npt.NDArray[np.float32]:
        """The validation states, shape (n_val, 34) float32, in dataset order."""
        return np.array(self.dataset.states[self.split.val], dtype=np.float32)

    @property
    def model(self) -> PolicyNetwork:
        """The best epoch's network after ``train()``."""
        if self._model is None:
            raise TrainingError("no model yet: call train() first")
        return self._model

    @property
    def metrics(self) -> TrainingMetrics:
        """What the last ``train()`` returned."""
        if self._metrics is None:
            raise TrainingError("no metrics yet: call train() first")
        return self._metrics

    @property
    def onnx_path(self) -> Path | None:
        """The ONNX model ``train()`` exported (None before, or with ``export=False``)."""
        return self._onnx_path

    def export_onnx(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Export the model (default ``output_dir / "policy_best.onnx"``; ``train()`` does unless
        ``export=False``) with its metadata and training summary, parity-checked on val states."""
        target = Path(path) if path is not None else Path(self.cfg.output_dir) / ONNX_NAME
        model, metrics, ds = self.model, self.metrics, self.dataset  # TrainingError before train()
        assert self._dataset_sha256 is not None  # set when train() read the dataset
        return export_onnx(
            model,
            target,
            metrics=metrics.to_dict(),
            training_config=self.cfg.to_dict(),
            dataset_sha256=self._dataset_sha256,
            parity_states=self.val_states(),
            training_run_id=self.run_id,
            training_rows=(ds.states[self.split.train], ds.actions[self.split.train]),
        )

    @property
    def checkpoint_path(self) -> Path:
        """``output_dir / "policy_best.pt"``."""
        return Path(self.cfg.output_dir) / CHECKPOINT_NAME

    # -- training --------------------------------------------------------------------------

    def train(
        self, *, export: bool = True, resume_from: str | os.PathLike[str] | None = None
    ) -> TrainingMetrics:
        """Train, keep the best epoch by validation loss, write the outputs, export the model to
        ``output_dir/policy_best.onnx`` (unless ``export=False``: then an older export there is
        refused by ``load_rl_policy`` as stale), return metrics.

        ``resume_from``: a checkpoint with a training state (``policy_best.pt`` or the
        ``state_path`` file of an earlier run on the same dataset and config, ``max_epochs`` and
        the fields that do not enter the maths aside): training continues after its epoch,
        with its optimizer, scheduler and random states, up to ``cfg.max_epochs``.
        """
        cfg = self.cfg
        start = time.perf_counter()
        resume = read_resumable(resume_from, cfg.to_dict())
        self.run_id = uuid.uuid4().hex
        dp = self._dp = DataParallel.from_env()  # torchrun: rank 0 alone prints and writes
        self._out, self._export, self._onnx_path = dp.stream(self._out), export and dp.writer, None
        device = dp.device(cfg.device)
        self._print(f"{RULE}\nRL Behavior Cloning Training\n{RULE}\nDataset: {cfg.dataset_path}")
        ds = self.dataset
        split = self.split
        counts = ds.action_counts()
        self._print(
            f"Loaded dataset: {len(ds)} samples, {ds.states.shape[1]} features\nAction "
            "distribution: " + ", ".join(f"{a.name}={counts[a]}" for a in Action) + "\nTrain "
            f"size: {split.train.size}, Val size: {split.val.size}"
        )
        work = cfg.batch_size * get_architecture(cfg.model).work_per_row(cfg)
        with dp.session(device), intra_op_threads(device, work):  # the torch RNG forked
            torch.manual_seed(cfg.seed)
            metrics = self._fit(device, start, resume)
        if self._export:
            self._onnx_path = self.export_onnx()
            self._print(f"ONNX model: {self._onnx_path} (matches torch at batch 1, 7 and 256)")
        return metrics

    def _fit(
        self, device: torch.device, start: float, resume: dict[str, Any] | None
    ) -> TrainingMetrics:
        cfg = self.cfg
        ds, split = self.dataset, self.split
        rows, extra = with_teacher_rows(ds, split.train, cfg)
        self._teacher_rows = 0 if extra is None else len(extra)
        if extra is not None:
            self._print(extra.describe(cfg.teacher_strategy, cfg.teacher_noise))
        train = train_tensors(rows, device, cfg, ds, split.train, self._out)
        val = to_device(ds, split.val, device)
        train_eval = to_device(ds, train_eval_rows(split.train, cfg.seed), device)
        notes: list[str] = []
        n_proc = self._dp.world_size
        self._aux = multitask_targets(cfg, ds, split, len(rows), device, self._out, n_proc)
        run = self._setup(device, train, notes, resume)
        self._best_training_state = None
        train_actions_cpu = train.actions.cpu()
        out_dir = Path(cfg.output_dir)
        self._dp.rank0(out_dir.mkdir, parents=True, exist_ok=True)
        writer = self._dp.rank0(tensorboard_writer, out_dir, self._out) if cfg.tensorboard else None
        try:
            for epoch in range(run.first_epoch, cfg.max_epochs + 1):
                order = epoch_indices(train_actions_cpu, cfg.class_balance, run.generator)
                stats = self._epoch(run, train, train_eval, val, order.to(device), epoch)
                if writer is not None:
                    log_tensorboard(writer, stats)
                if self._on_epoch_end is not None:
                    self._on_epoch_end(stats, run.model)
                if self._state_path is not None:
                    state = self._checkpoint(run, {}, best=False)
                    self._dp.rank0(save_checkpoint, state, self._state_path)
                if cfg.patience and epoch - run.best_epoch >= cfg.patience:
                    run.stopped_early = True
                    self._print(
                        f"Early stopping at epoch {epoch}: val_loss has not improved for "
                        f"{cfg.patience} epochs (best {run.best_loss:.4f}, epoch {run.best_epoch})"
                    )
                    break
        finally:
            if writer is not None:
                writer.close()
            unflatten_parameters(run.params)
        return self._finish(run, val, train_actions_cpu, notes, device, start)

    def _setup(
        self,
        device: torch.device,
        train: SplitTensors,
        notes: list[str],
        resume: dict[str, Any] | None,
    ) -> TrainState:
        """The network (``cfg.model``), the loss, the flat buffer and its optimizer, the
        scheduler and the epoch-order generator; restored from ``resume`` when given."""
        cfg = self.cfg
        model = get_architecture(cfg.model).from_config(cfg).to(device)
        if resume is not None:
            model.load_state_dict(resume["state_dict"])
        n_params = sum(p.numel() for p in model.parameters())
        self._print(f"Model parameters: {n_params:,}")
        self._print(f"Device: {device}")
        train_counts = torch.bincount(train.actions.cpu(), minlength=N_ACTIONS).tolist()
        self.loss_fn = loss_fn = make_loss(self.cfg, train_counts, notes, self._out).to(device)
        self._print(f"{RULE}\n")
        flat, params = flatten_parameters(model)
        self._forward = self._dp.wrap(model, device, cfg.seed)
        optimizer = make_optimizer(
            flat,
            name=cfg.optimizer,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            factory=self._optimizer_factory,
        )
        scheduler = (
            PlateauLR(optimizer, factor=cfg.lr_plateau_factor, patience=cfg.lr_plateau_patience)
            if cfg.lr_plateau_patience > 0
            else None
        )
        generator = torch.Generator().manual_seed(cfg.seed)
        run = TrainState(model, flat, params, optimizer, scheduler, loss_fn, generator)
        if resume is not None:
            restore(run, resume, device)
            self._print(f"Resumed after epoch {len(run.history)} (best epoch {run.best_epoch})")
        return run

    def _epoch(
        self,
        run: TrainState,
        train: SplitTensors,
        train_eval: SplitTensors,
        val: SplitTensors,
        order: torch.Tensor,
        epoch: int,
    ) -> EpochStats:
        """One epoch: the gradient steps, the evaluation, the log line, the scheduler and the
        best-epoch bookkeeping (with its checkpoint)."""
        cfg = self.cfg
        lr = float(run.optimizer.param_groups[0]["lr"])
        norms = self._run_epoch(run, train, order, epoch)
        ev_train = evaluate_split(run.model, run.loss_fn, train_eval)
        ev_val = evaluate_split(run.model, run.loss_fn, val)
        for which, ev in (("train", ev_train), ("validation", ev_val)):
            if not math.isfinite(ev.loss):
                raise TrainingError(
                    f"epoch {epoch}: the {which} loss is {ev.loss} after the epoch's "
                    f"updates (action term {ev.action_loss}, strength term "
                    f"{ev.strength_loss}); the weights diverged: lower lr (now {lr:g})"
                )
        stats = EpochStats(
            epoch=epoch,
            train_loss=ev_train.loss,
            val_loss=ev_val.loss,
            train_acc=ev_train.acc,
            val_acc=ev_val.acc,
            lr=lr,
            grad_norm=float(norms.mean()),
            grad_norm_max=float(norms.max()),
            val_action_loss=ev_val.action_loss,
            val_strength_loss=ev_val.strength_loss,
        )
        run.history.append(stats)
        self._print(
            f"[Epoch {epoch}/{cfg.max_epochs}] train_loss={stats.train_loss:.4f} "
            f"val_loss={stats.val_loss:.4f} train_acc={stats.train_acc:.3f} "
            f"val_acc={stats.val_acc:.3f} grad_norm={stats.grad_norm:.3f} lr={lr:.3g}",
            flush=True,
        )
        if run.scheduler is not None:
            run.scheduler.step(stats.val_loss)
        if stats.val_loss < run.best_loss:
            run.best_loss, run.best_epoch = stats.val_loss, epoch
            run.best_state = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
            summary = {"best_epoch": epoch, "best_val_loss": run.best_loss}
            ckpt = self._checkpoint(run, {**summary, "val_action_acc": ev_val.acc}, best=True)
            self._best_training_state = ckpt["training_state"]
            self._dp.rank0(save_checkpoint, ckpt, self.checkpoint_path)  # torchrun: rank 0 writes
            self._print(f"✓ Saved best model (epoch {epoch}, val_loss={run.best_loss:.4f})")
        return stats

    def _finish(
        self,
        run: TrainState,
        val: SplitTensors,
        train_actions_cpu: torch.Tensor,
        notes: list[str],
        device: torch.device,
        start: float,
    ) -> TrainingMetrics:
        """Back to the best epoch's weights; the final metrics, the outputs, the summary."""
        model, history, best_epoch = run.model, run.history, run.best_epoch
        model.load_state_dict(run.best_state)
        model.eval()
        self._model = model
        final_val = evaluate_split(model, run.loss_fn, val)
        cm = confusion_matrix(val.actions.cpu().numpy(), final_val.preds.numpy())
        warnings = overfitting_warnings(history, best_epoch)
        majority, baseline = majority_baseline(train_actions_cpu.numpy(), val.actions.cpu().numpy())
        mark = degenerate_mark(cm, majority)
        split = self.split
        metrics = TrainingMetrics(
            best_val_loss=run.best_loss,
            best_epoch=best_epoch,
            val_action_acc=final_val.acc,
            train_action_acc=history[best_epoch - 1].train_acc,
            per_class=per_class_metrics(cm),
            confusion_matrix=cm.tolist(),
            history=history,
            overfitting_warnings=warnings,
            warnings=notes,
            elapsed_s=time.perf_counter() - start,
            n_params=sum(p.numel() for p in model.parameters()),
            device=str(device),
            epochs_run=len(history),
            stopped_early=run.stopped_early,
            train_size=int(split.train.size),
            val_size=int(split.val.size),
            teacher_rows=self._teacher_rows,
            majority_action=ACTION_NAMES[majority],
            majority_baseline_acc=baseline,
            degenerate=mark,
            multitask=None if self._aux is None else self._aux.report(model),
        )
        self._metrics = metrics
        for line in warnings:
            self._print(f"warning: {line}")
        self._dp.rank0(self._write_outputs, model, metrics, device)
        summary = training_summary(metrics, ACTION_NAMES[majority], self.checkpoint_path, RULE)
        self._print(summary)
        return metrics

    def _run_epoch(
        self, run: TrainState, data: SplitTensors, order: torch.Tensor, epoch: int
    ) -> npt.NDArray[np.float64]:
        """One pass of gradient steps; returns the per-batch gradient norms (before clipping).

        The train split is gathered once in ``order`` (on its device); the batches are
        contiguous slices. ``run.flat`` holds the model's parameters (``flatten_parameters``).
        Loss terms and norms stay on the device until the end of the epoch, then a non-finite
        one raises ``TrainingError`` naming the first bad batch and term.
        """
        cfg = self.cfg
        model, optimizer, loss_fn = run.model, run.optimizer, run.loss_fn
        model.train()
        n = int(order.numel())
        bs = cfg.batch_size
        n_batches = math.ceil(n / bs)
        states, actions, strengths = data.states[order], data.actions[order], data.strengths[order]
        plan = self._dp.plan(loss_fn, actions, bs, data.ordered_weights(order))
        aux = None if self._aux is None else self._aux.epoch(model, order, bs)
        s_weights = strength_weights(actions, bs)
        grad = run.flat.grad
        assert grad is not None
        clip = cfg.grad_clip
        action_terms: list[torch.Tensor] = []
        strength_terms: list[torch.Tensor] = []
        norm_list: list[torch.Tensor] = []
        show = cfg.progress and n >= PROGRESS_MIN_ROWS
        bar = progress_bar(n_batches, epoch, cfg.max_epochs) if show else None
        try:
            for b in range(n_batches):
                sl = plan.rows(b)  # the global batch b, or this rank's shard of it
                if aux is None:
                    logits, strength = self._forward(states[sl])
                else:  # one process (see _fit); the extra heads' loss is kept for aux.add
                    logits, strength = aux.forward(model, states[sl], sl)
                loss = plan.terms(b, logits, strength, actions[sl], strengths[sl], s_weights[sl])
                grad.zero_()
                torch.autograd.backward(loss.total if aux is None else aux.add(loss.total))
                norm = clip_flat_grad_(grad, clip)
                optimizer.step()
                action_terms.append(loss.action.detach())
                strength_terms.append(loss.strength.detach())
                norm_list.append(norm)
                if bar is not None:
                    bar.update(1)
                    if b % 50 == 0:
                        bar.set_postfix(loss=f"{float(loss.total.detach()):.4f}")
        finally:
            if bar is not None:
                bar.close()
        if aux is not None:
            aux.check(epoch, float(optimizer.param_groups[0]["lr"]))
        terms = torch.stack([torch.stack(action_terms), torch.stack(strength_terms)], dim=1)
        norms = torch.stack(norm_list)
        return check_finite_batches(terms, norms, epoch, float(optimizer.param_groups[0]["lr"]))

    # -- checkpoints and outputs -----------------------------------------------------------

    def _checkpoint(
        self, run: TrainState, metrics: Mapping[str, Any], *, best: bool
    ) -> dict[str, Any]:
        """The current epoch's checkpoint with its training state; a state file (``best=False``)
        also carries the best epoch's weights."""
        return checkpoint_dict(
            run.model,
            run_id=self.run_id,
            config=self.cfg.to_dict(),
            metrics=metrics,
            state=run,
            with_best_weights=not best,
        )

    def _write_outputs(
        self, model: PolicyNetwork, metrics: TrainingMetrics, device: torch.device
    ) -> None:
        """The final ``policy_best.pt`` (the best epoch's weights and training state, the run's
        metrics), ``metadata.json``, ``history.csv`` and the plots."""
        final = checkpoint_dict(
            model, run_id=self.run_id, config=self.cfg.to_dict(), metrics=metrics.to_dict()
        )
        if self._best_training_state is not None:
            final["training_state"] = self._best_training_state
        save_checkpoint(final, self.checkpoint_path)
        files = [CHECKPOINT_NAME, "history.csv", "training_curves.png", "confusion_matrix.png"]
        if self._export:
            files += [ONNX_NAME, ONNX_NAME + ".sha256"]
        meta = run_metadata(
            run_id=self.run_id,
            config=self.cfg.to_dict(),
            model=model,
            metrics=metrics,
            dataset=self.dataset,
            dataset_sha256=self._dataset_sha256,
            split=self.split,
            device=device,
            files=files,
        )
        write_run_files(Path(self.cfg.output_dir), meta, metrics)
