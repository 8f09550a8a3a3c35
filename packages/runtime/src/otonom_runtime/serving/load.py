"""``load_rl_policy``: every check between a path and a usable ``RlPolicy``, in order."""

from __future__ import annotations

import functools
import os

from otonom_runtime._errors import PolicyError
from otonom_runtime.integrity import (
    DIGEST_KEY,
    GOLDEN_KEY,
    check_format,
    check_golden,
    decode_golden,
    scan_model,
)
from otonom_runtime.serving.contract import (
    check_extra_outputs,
    check_signature,
    check_training_run,
    decode_metadata,
    public_metadata,
)
from otonom_runtime.serving.files import MAX_MODEL_BYTES, read_verified
from otonom_runtime.serving.paths import resolve_model_path
from otonom_runtime.serving.plan import MAX_PLAN_BYTES
from otonom_runtime.serving.rl_policy import RlPolicy
from otonom_runtime.serving.session import make_session, providers
from otonom_runtime.serving.wire import refuse_external_data

__all__ = ["load_rl_policy"]


def load_rl_policy(
    path: str | os.PathLike[str],
    device: str = "cpu",
    *,
    threads: int | None = None,
    max_bytes: int = MAX_MODEL_BYTES,
) -> RlPolicy:
    """Load and check an ONNX policy.

    ``path``: a ``.onnx`` file; a model folder; or a ``policy_best.pt`` path, which stands for
    the ``policy_best.onnx`` beside it (PyTorch checkpoints are never loaded). A model folder
    stands for, in this order: its own ``policy_best.onnx`` (with a warning when it also has a
    pointer); the version sub-folder its ``latest`` file names (the promoted version); the one
    its ``default`` file names (the repository's shipped default model). A ``policy_best.pt``
    path with neither file there follows the same pointers, so the guide's
    ``models/rl_bc/policy_best.pt`` keeps working with versioned model folders
    (``resolve_version_dir``).

    ``device``: ``"cpu"``; ``"cuda"`` (onnxruntime's CUDAExecutionProvider, ``PolicyError`` if
    it has none); ``"auto"`` (CUDA when available, else CPU).

    ``threads``: onnxruntime's intra-op threads (None: its default, one per core). 1 suits a
    caller that makes many small calls in a row, as a backtest does: a call then never hands
    work to another thread and waits for it, which costs more than a small batch itself. With
    None on the CPU, batches of over 64 rows run on whichever of the pool and a one-thread
    session of the same model (made at the first such batch) ran faster on this machine at
    that batch size's first calls (``RlPolicy.batch_plan``); the outputs are the same.

    ``max_bytes``: the largest model file accepted (``MAX_MODEL_BYTES``, 256 MiB), checked
    before anything is read.

    Checks, in order, each failing with a ``PolicyError`` that names the file and says what was
    found and what was expected: the file exists; its ``.sha256`` sidecar exists and is well
    formed; the file is at most ``max_bytes``; its bytes match the sidecar; it holds no ONNX
    external data (tensor data in other files, which the hash would not cover); its metadata is
    valid UTF-8 without repeated keys; it is model format 2 (``MODEL_FORMAT``: format 1 models,
    without a digest or golden sample, are refused with the command that re-exports them); its
    digest (``otonom_runtime.integrity.model_digest`` of the bytes read) equals its
    ``otonom.digest``, so a weight changed after export is refused even with a regenerated
    sidecar; its golden sample decodes; onnxruntime can load those same bytes; the signature is
    ``state`` float32 [batch, 34] -> ``action_probs`` float32 [batch, 3], ``strength`` float32
    [batch, 1], plus only known optional outputs (``contract.OPTIONAL_OUTPUTS``; names and dims
    valid UTF-8); the metadata holds every required key, and its JSON keys decode to the right
    types, ``otonom.extra_outputs`` listing exactly the extra outputs; when the training run's
    ``metadata.json`` is beside the model, the model is that run's export (the same training
    run id; for models made before run ids, the same metrics), else it is stale and refused,
    naming both ids and the command that re-exports it; last, the golden states are re-run
    (``predict_batch`` and ``predict``) and every action must equal the export's and every
    output agree to ``GOLDEN_ATOL`` (1e-4). A model made under another state schema
    (fingerprint or feature names) raises ``ModelSchemaMismatchError`` naming both schema
    versions and fingerprints.

    Every prediction of the returned policy is held to the output contract (finite
    probabilities >= 0 summing to 1 within ``PROBS_SUM_ATOL``, strength in [0, 1]); a
    violation raises ``PolicyError``.
    """
    import onnxruntime as ort

    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise PolicyError(f"threads={threads!r}; expected an integer >= 1, or None")
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise PolicyError(f"max_bytes={max_bytes!r}; expected an integer >= 1")
    chosen = providers(ort, device)
    model = resolve_model_path(path)
    data, digest = read_verified(model, max_bytes)
    refuse_external_data(data, model)
    scan = scan_model(data, model)
    check_format(scan.metadata, model)
    stored = scan.metadata[DIGEST_KEY]
    if scan.digest != stored:
        raise PolicyError(
            f"model digest mismatch for {model}: its graph and weights hash to {scan.digest} "
            f"but its metadata {DIGEST_KEY} says {stored}; the model was changed after export "
            "(its sha256 sidecar was regenerated, or both were written by something else): "
            "re-export it, or re-copy it from a good source"
        )
    golden = decode_golden(scan.metadata[GOLDEN_KEY], model)
    session = make_session(ort, data, model, chosen, threads)
    # threads=None on the CPU: batches over 64 rows run on the pool or on a one-thread
    # session of the same bytes, made at the first such batch, whichever runs faster here
    # (``serving.plan``); the bytes are kept for it (a policy is a few hundred KiB)
    planned = threads is None and chosen == ["CPUExecutionProvider"]
    one_thread = (
        functools.partial(make_session, ort, data, model, chosen, 1)
        if planned and len(data) <= MAX_PLAN_BYTES
        else None
    )
    del data
    if device == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
        raise PolicyError(
            f"device='cuda' but onnxruntime could not start CUDAExecutionProvider for {model} "
            f"(session providers: {session.get_providers()}); check the CUDA/cuDNN install or "
            "use device='cpu' or 'auto'"
        )
    try:
        extras = check_signature(session, model)
    except UnicodeDecodeError as exc:  # onnxruntime decodes names and dims as UTF-8
        raise PolicyError(
            f"{model}: its graph's input/output names or dimensions are not valid UTF-8 "
            f"({exc.reason} at byte {exc.start}); expected the signature in "
            "docs/model-format.md"
        ) from None
    except PolicyError:
        raise
    except Exception as exc:  # onnxruntime's own (pybind) exception types
        raise PolicyError(
            f"{model}: onnxruntime cannot describe its inputs and outputs: {exc}"
        ) from exc
    props = scan.metadata  # what the digest check read, not a second parse by onnxruntime
    decoded = decode_metadata(props, model)
    check_extra_outputs(extras, decoded, model)
    check_training_run(model, props, decoded["otonom.metrics"])
    policy = RlPolicy(
        session,
        path=model,
        sha256=digest,
        metadata=public_metadata(decoded),
        device=device,
        extra_outputs=extras,
        one_thread=one_thread,
    )
    check_golden(policy, golden)
    return policy
