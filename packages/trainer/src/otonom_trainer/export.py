"""Export a trained policy network (any registered ``PolicyNetwork``, e.g. ``PolicyNet``) to
the runtime's ONNX model format, then prove parity.

``export_onnx(model, path, metrics=..., training_config=..., dataset_sha256=...)`` writes
``path`` (a ``.onnx`` file following ``docs/model-format.md``: input ``state`` float32
[batch, 34], outputs ``action_probs`` float32 [batch, 3] and ``strength`` float32 [batch, 1],
then the network's extra outputs (``EXTRA_OUTPUTS``, e.g. ``expected_return``, ``risk_probs``,
``attention``; listed in ``otonom.extra_outputs``), ai.onnx opset 17, a dynamic batch axis, the
``otonom.*`` metadata, sealed as model format 2: ``otonom.digest`` and the ``otonom.golden``
sample from the parity states, see ``otonom_runtime.integrity.seal_model``) and its ``.sha256``
sidecar.
Before anything appears under ``path`` the file is loaded back through the runtime
(``otonom_runtime.load_rl_policy``, the code that serves it in production) and its answers
(every output, the extra ones through ``predict_extras``) are compared with PyTorch's at batch
sizes 1, 7 and 256; a mismatch raises ``ExportError`` and
leaves no file behind (and an older model at ``path`` untouched).

The legacy TorchScript exporter (``torch.onnx.export(..., dynamo=False)``) is used on purpose:
torch's default dynamo exporter needs ``onnxscript``, an extra dependency this project does not
carry, and the graph is a plain MLP (Gemm, Relu, Softmax, Sigmoid) that the legacy exporter
translates exactly. ``tests/test_export.py`` pins the exported signature (names, shapes, element
types, dynamic batch axis, opset 17, IR version 8) and the parity, so a torch upgrade that
changes what the exporter writes fails there first. Its deprecation warnings are silenced around
the export call only.
"""

from __future__ import annotations

import copy
import datetime as dt
import importlib.metadata
import json
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

import otonom_schema
from otonom_runtime import PolicyError
from otonom_runtime.integrity import seal_model
from otonom_runtime.policy import (
    EXTRA_OUTPUTS_KEY,
    INPUT_NAME,
    MODEL_FORMAT,
    OPTIONAL_OUTPUTS,
    OUTPUT_NAMES,
    REQUIRED_METRICS,
    RUN_ID_KEY,
    TRAINING_SUMMARY_KEY,
    load_rl_policy,
    write_sha256_sidecar,
)
from otonom_schema import FEATURE_NAMES, SCHEMA_VERSION, STATE_DIM, schema_fingerprint, sha256_file
from otonom_trainer._errors import OtonomTrainerError
from otonom_trainer.model import PolicyNetwork

__all__ = [
    "OPSET",
    "PARITY_BATCH_SIZES",
    "ExportError",
    "Reference",
    "build_metadata",
    "check_parity",
    "default_parity_states",
    "export_onnx",
    "sha256_file",
    "write_sealed",
]

OPSET: Final = 17
"""The ai.onnx opset the model format pins (docs/model-format.md)."""
PARITY_BATCH_SIZES: Final = (1, 7, 256)
"""Batch sizes at which the exported model must answer like PyTorch."""

_VERSIONED_PACKAGES: Final = (
    "otonom-trainer",
    "otonom-schema",
    "otonom-runtime",
    "torch",
    "onnx",
    "onnxruntime",
    "numpy",
)
_SHA256_RE: Final = re.compile(r"^[0-9a-fA-F]{64}$")
_RUN_ID_RE: Final = re.compile(r"^[0-9A-Za-z_-]{1,64}$")
# What torch 2.13's legacy exporter warns (DeprecationWarning) on every call; nothing else is
# silenced.
_LEGACY_EXPORT_WARNINGS: Final = (
    r"You are using the legacy TorchScript-based ONNX export",
    r"The feature will be removed\. Please remove usage of this function",
)


class ExportError(OtonomTrainerError, RuntimeError):
    """The exported model does not load in the runtime or does not answer like PyTorch."""


class _ExportWrapper(nn.Module):
    """What is exported: ``state -> (softmax(logits), strength, *extras)`` of a
    ``PolicyNetwork`` (``exported``; extras for ``EXTRA_OUTPUTS``)."""

    def __init__(self, net: PolicyNetwork) -> None:
        super().__init__()
        self.net = net

    def forward(self, states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.net.exported(states)


def _output_names(net: PolicyNetwork) -> tuple[str, ...]:
    """``OUTPUT_NAMES`` then the network's extra outputs; ``ValueError`` for a name the
    runtime does not know (``OPTIONAL_OUTPUTS``)."""
    extras = tuple(type(net).EXTRA_OUTPUTS)
    unknown = [n for n in extras if n not in OPTIONAL_OUTPUTS or extras.count(n) > 1]
    if unknown:
        raise ValueError(
            f"{type(net).__qualname__}.EXTRA_OUTPUTS {list(extras)} holds {unknown}; expected "
            f"distinct names of the runtime's optional outputs {list(OPTIONAL_OUTPUTS)}"
        )
    return (*OUTPUT_NAMES, *extras)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _to_json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} cannot be stored as JSON metadata: {exc}") from None


def _package_versions() -> dict[str, str]:
    versions: dict[str, str] = {}
    for name in _VERSIONED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def build_metadata(
    *,
    metrics: Mapping[str, Any],
    training_config: Mapping[str, Any],
    dataset_sha256: str,
    created_at: dt.datetime | None = None,
    training_run_id: str | None = None,
) -> dict[str, str]:
    """The ``metadata_props`` of an exported model (every value a string; docs/model-format.md).

    ``metrics`` must hold numbers for ``val_action_acc``, ``train_action_acc``,
    ``best_val_loss`` and ``best_epoch`` (more keys allowed; numpy scalars are converted);
    ``training_config`` is any JSON-serialisable mapping; ``dataset_sha256`` the 64-hex-digit
    sha256 of the training ``.npz`` (``sha256_file``); ``created_at`` defaults to now (UTC);
    ``training_run_id`` (optional, ``otonom.training_run_id``) the id of the training run, as in
    its checkpoint and ``metadata.json`` (the runtime refuses an export whose id differs from the
    ``metadata.json`` beside it). Raises ``ValueError`` naming what is missing or malformed.
    """
    bad = [
        k
        for k in REQUIRED_METRICS
        if isinstance(metrics.get(k), bool)
        or not isinstance(metrics.get(k), (int, float, np.integer, np.floating))
    ]
    if bad:
        raise ValueError(
            f"metrics lack numbers for {bad} (got keys {sorted(metrics)}); the model format "
            f"requires numbers for all of {list(REQUIRED_METRICS)}"
        )
    if not isinstance(dataset_sha256, str) or not _SHA256_RE.match(dataset_sha256):
        raise ValueError(
            f"dataset_sha256 is {dataset_sha256!r}; expected the 64 hex digits of the training "
            "dataset's sha256 (otonom_trainer.export.sha256_file(dataset_path))"
        )
    if training_run_id is not None and not (
        isinstance(training_run_id, str) and _RUN_ID_RE.match(training_run_id)
    ):
        raise ValueError(
            f"training_run_id is {training_run_id!r}; expected 1-64 letters, digits, '_' or '-' "
            "(BehaviorCloningTrainer uses uuid4().hex)"
        )
    when = created_at if created_at is not None else dt.datetime.now(dt.timezone.utc)
    if when.tzinfo is None:
        raise ValueError(f"created_at {when.isoformat()} has no time zone; expected UTC")
    stamp = when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    props = {
        "otonom.model_format": MODEL_FORMAT,
        "otonom.schema_version": SCHEMA_VERSION,
        "otonom.schema_fingerprint": schema_fingerprint(),
        "otonom.feature_names": json.dumps(list(FEATURE_NAMES)),
        "otonom.metrics": _to_json(dict(metrics), "metrics"),
        "otonom.training_config": _to_json(dict(training_config), "training_config"),
        "otonom.dataset_sha256": dataset_sha256.lower(),
        "otonom.created_at": stamp,
        "otonom.package_versions": json.dumps(_package_versions(), sort_keys=True),
    }
    if training_run_id is not None:
        props[RUN_ID_KEY] = training_run_id
    return props


def default_parity_states(n: int = 300, *, seed: int = 0) -> npt.NDArray[np.float32]:
    """``n`` valid, varied states for the parity check when no held-out states are given.

    Market features from ``otonom_schema.synthetic.random_history`` (calm, normal and turbulent
    spells), portfolio features drawn at random within their ranges, sentiment from
    ``random_sentiment``; computed by ``otonom_schema.compute_states`` like real data.
    """
    from otonom_schema.synthetic import random_history, random_sentiment

    rng = np.random.default_rng(seed)
    history = random_history(n, seed=seed)
    position = rng.uniform(-1.0, 1.0, n)
    portfolio = otonom_schema.portfolio_feature_matrix(
        position,
        np.abs(position) * rng.uniform(0.0, 1.0, n),
        rng.uniform(0.0, 1.0, n),
        rng.integers(0, 60, n),
    )
    return otonom_schema.compute_states(
        history,
        portfolio,
        news=random_sentiment(history.dates, seed=seed + 1),
        macro=random_sentiment(history.dates, seed=seed + 2),
    )


def _parity_states(states: npt.ArrayLike | None) -> npt.NDArray[np.float32]:
    if states is None:
        return default_parity_states()
    x = otonom_schema.validate_states(states)
    if x.shape[0] == 0:
        raise ValueError("parity_states has no rows; pass held-out states (or None)")
    return x


def _rows(states: npt.NDArray[np.float32], n: int) -> npt.NDArray[np.float32]:
    """``n`` rows of ``states``, repeating them in order when there are fewer."""
    return np.ascontiguousarray(states[np.arange(n) % states.shape[0]])


def _export_graph(net: PolicyNetwork, path: Path) -> None:
    wrapper = _ExportWrapper(net).eval()
    outputs = _output_names(net)
    with warnings.catch_warnings():
        for message in _LEGACY_EXPORT_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=DeprecationWarning)
        torch.onnx.export(
            wrapper,
            (torch.zeros(1, STATE_DIM, dtype=torch.float32),),
            str(path),
            input_names=[INPUT_NAME],
            output_names=list(outputs),
            opset_version=OPSET,
            dynamic_axes={name: {0: "batch"} for name in (INPUT_NAME, *outputs)},
            training=torch.onnx.TrainingMode.EVAL,
            do_constant_folding=True,
            dynamo=False,
        )


def _add_metadata(path: Path, metadata: Mapping[str, str]) -> None:
    import onnx

    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, dict(metadata))
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


Reference = Callable[
    [npt.NDArray[np.float32]],
    tuple[
        npt.ArrayLike, npt.ArrayLike, "npt.NDArray[np.bool_] | None", Mapping[str, npt.ArrayLike]
    ],
]
"""``states (n, 34) -> (probs (n, 3), strengths (n,), rows, extras)``: what a model must
answer; ``rows`` (a boolean mask, or None for all) are the rows whose probabilities are
compared, ``extras`` the optional outputs by name (``EXTRA_OUTPUTS``; empty for none)."""


def check_parity(
    model_path: Path,
    states: npt.NDArray[np.float32],
    reference: Reference,
    atol: float,
    *,
    what: str = "ONNX/PyTorch",
) -> None:
    """Load ``model_path`` through the runtime (``load_rl_policy``) and compare its
    ``predict_batch`` with ``reference`` on ``states`` (rows repeated in order) at each of
    ``PARITY_BATCH_SIZES``; ``ExportError`` naming ``what``, the batch size, the output and the
    largest difference when one exceeds ``atol`` (or is NaN), or when the model does not load."""
    try:
        policy = load_rl_policy(model_path)
    except PolicyError as exc:
        raise ExportError(f"the exported model does not load in the runtime: {exc}") from exc
    for n in PARITY_BATCH_SIZES:
        x = _rows(states, n)
        ref_probs, ref_strength, rows, ref_extras = reference(x)
        _, strengths, probs = policy.predict_batch(x)
        extras = policy.predict_extras(x) if ref_extras else {}
        keep = np.ones(n, dtype=bool) if rows is None else rows
        pairs: list[tuple[str, npt.NDArray[Any] | None, npt.NDArray[Any]]] = [
            ("action_probs", probs[keep], np.asarray(ref_probs)[keep]),
            ("strength", strengths, np.asarray(ref_strength).reshape(n)),
        ]
        pairs += [(k, extras.get(k), np.asarray(v)) for k, v in ref_extras.items()]
        for name, got, want in pairs:
            if got is None or got.shape != want.shape:
                raise ExportError(
                    f"the exported model's output {name!r} is {None if got is None else got.shape}"
                    f" at batch size {n}; expected shape {want.shape}, nothing was written"
                )
            diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
            worst = float(np.max(diff, initial=0.0))
            if not worst <= atol or np.isnan(diff).any():
                raise ExportError(
                    f"{what} parity failed at batch size {n}: {name} differs by up to "
                    f"{worst:.3g} (max abs difference; atol {atol:g}); the export is broken, "
                    "nothing was written"
                )


def _torch_reference(net: PolicyNetwork) -> Reference:
    def reference(x: npt.NDArray[np.float32]) -> tuple[Any, Any, None, dict[str, Any]]:
        with torch.no_grad():
            probs, strength, *extras = net.exported(torch.from_numpy(x))
        named = zip(type(net).EXTRA_OUTPUTS, extras, strict=True)
        return probs.numpy(), strength.numpy(), None, {k: v.numpy() for k, v in named}

    return reference


def export_onnx(
    model: PolicyNetwork,
    path: str | os.PathLike[str],
    *,
    metrics: Mapping[str, Any],
    training_config: Mapping[str, Any],
    dataset_sha256: str,
    parity_states: npt.ArrayLike | None = None,
    atol: float = 1e-5,
    training_run_id: str | None = None,
    training_rows: tuple[npt.ArrayLike, npt.ArrayLike] | None = None,
) -> Path:
    """Export ``model`` to ONNX at ``path`` (a ``.onnx`` file) with its sha256 sidecar.

    A CPU copy of ``model`` in eval mode is exported (dropout off; the caller's model, its
    device and its train/eval mode are left as they were), with the metadata of
    ``build_metadata(metrics=..., training_config=..., dataset_sha256=...,
    training_run_id=...)``. The file is then
    loaded through ``otonom_runtime.load_rl_policy`` and ``predict_batch`` is compared with
    ``model.probabilities`` on ``parity_states`` (held-out states, (N, 34), validated;
    ``None``: ``default_parity_states()``) at batch sizes 1, 7 and 256 (rows repeat when there
    are fewer): probabilities and strengths must agree to ``atol``.

    ``training_rows``: the training states (N, 34) and their label actions (N,); when given,
    their summary (``otonom_runtime.drift.summarize_training``, with the model's own actions
    on those states) is stored as ``otonom.training_summary`` for
    ``otonom monitor``. Metadata only: the graph, the weights and the digest are the same.

    Everything is written in a temporary folder beside ``path`` and moved into place only after
    parity holds; parent folders are created. Returns ``path``.

    Raises ``ValueError`` for bad arguments (path not ending in ``.onnx``, missing metrics,
    malformed sha256, no parity rows), ``otonom_schema.SchemaError`` for invalid
    parity states, and ``ExportError`` when the exported model does not load in the runtime or
    disagrees with PyTorch (the message names the batch size and the max abs difference); then
    no file is left behind.
    """
    out = Path(path)
    if out.suffix != ".onnx":
        raise ValueError(f"export path {out} must end in .onnx (the runtime's model file)")
    if not atol >= 0.0:
        raise ValueError(f"atol is {atol}; expected a number >= 0")
    metadata = build_metadata(
        metrics=metrics,
        training_config=training_config,
        dataset_sha256=dataset_sha256,
        training_run_id=training_run_id,
    )
    extras = _output_names(model)[len(OUTPUT_NAMES) :]
    if extras:  # the optional outputs, listed (a model without them keeps the plain metadata)
        metadata[EXTRA_OUTPUTS_KEY] = json.dumps(list(extras))
    states = _parity_states(parity_states)
    net = copy.deepcopy(model).to("cpu").float().eval()
    if training_rows is not None:
        metadata[TRAINING_SUMMARY_KEY] = _training_summary(net, *training_rows)

    return write_sealed(
        out,
        lambda staged: _export_graph(net, staged),
        metadata,
        states,
        lambda staged: check_parity(staged, states, _torch_reference(net), atol),
    )


def _training_summary(net: PolicyNetwork, states: npt.ArrayLike, actions: npt.ArrayLike) -> str:
    """``otonom.training_summary``: the summary of the training rows, with the actions the
    network itself picks on them (argmax of its probabilities, as the runtime does)."""
    from otonom_runtime.drift import summarize_training

    x = otonom_schema.validate_states(states)
    predicted = []
    with torch.no_grad():
        for start in range(0, x.shape[0], 65_536):
            probs = net.exported(torch.from_numpy(x[start : start + 65_536]))[0]
            predicted.append(probs.argmax(dim=1).numpy())
    picked = np.concatenate(predicted) if predicted else np.empty(0, dtype=np.int64)
    return _to_json(summarize_training(x, actions, picked), "training_summary")


def write_sealed(
    out: Path,
    write_graph: Callable[[Path], None],
    metadata: Mapping[str, str],
    states: npt.NDArray[np.float32],
    check: Callable[[Path], None],
) -> Path:
    """Write a model to ``out`` (a ``.onnx`` path) with its sidecar, or nothing at all.

    In a temporary folder beside ``out``: ``write_graph(staged)`` writes the graph, the
    ``metadata`` is added, the model is sealed (model format 2: digest, and the golden sample
    chosen among ``states``), its sidecar written and ``check(staged)`` run (the parity check:
    it raises ``ExportError``). Only then are the model and its sidecar moved into place (the
    model first: a reader in between sees a sha256 mismatch and refuses it). On any error the
    folder is removed and an older model at ``out`` is left as it was. Parent folders are
    created. ``export_onnx`` and ``otonom_trainer.ensemble.export_ensemble`` write through it.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".export", dir=out.parent))
    try:
        staged = staging / out.name
        write_graph(staged)
        _add_metadata(staged, metadata)
        # model format 2: the digest of graph and weights and the golden sample (chosen among
        # the parity states, away from the decision boundary), checked by every load
        try:
            seal_model(staged, states, write_sidecar=False)
        except ValueError as exc:
            raise ExportError(f"the exported model cannot be sealed: {exc}") from exc
        write_sha256_sidecar(staged)
        check(staged)
        sidecar = out.with_name(out.name + ".sha256")
        staged.replace(out)
        staged.with_name(sidecar.name).replace(sidecar)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out
