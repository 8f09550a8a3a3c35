"""Reading a model file safely: its sha256 sidecar, its size limit, and one read of its bytes
that feeds the hash (the bytes onnxruntime later loads are the bytes that were hashed)."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Final

from otonom_runtime._errors import PolicyError
from otonom_schema import atomic_write, sha256_file

__all__ = ["MAX_MODEL_BYTES", "read_verified", "write_sha256_sidecar"]

MAX_MODEL_BYTES: Final = 256 * 2**20
"""The largest model file ``load_rl_policy`` reads (256 MiB), checked before reading anything;
``load_rl_policy(..., max_bytes=N)`` raises it. A policy MLP is a few hundred KiB."""
_SHA256_RE: Final = re.compile(r"^[0-9a-fA-F]{64}$")
_CHUNK: Final = 1 << 20
_SIDECAR_READ: Final = 4096


def _sidecar_path(model: Path) -> Path:
    return model.with_name(model.name + ".sha256")


def write_sha256_sidecar(model_path: str | os.PathLike[str]) -> Path:
    """Write ``<model>.sha256`` beside the model in ``sha256sum`` format and return its path.

    The content is ``"<64 hex digits>  <file name>\\n"``, so ``sha256sum -c`` checks it.
    """
    model = Path(model_path)
    return atomic_write(_sidecar_path(model), f"{sha256_file(model)}  {model.name}\n")


def _read_sidecar(model: Path) -> str:
    """The digest the model's sidecar names (64 lowercase hex digits)."""
    sidecar = _sidecar_path(model)
    if not sidecar.is_file():
        raise PolicyError(
            f"no sha256 sidecar for {model}: expected {sidecar} in sha256sum format "
            f"('<hex>  {model.name}'). Make one with `cd {model.parent} && sha256sum "
            f"{model.name} > {sidecar.name}` or "
            "otonom_runtime.policy.write_sha256_sidecar(path)"
        )
    try:
        with sidecar.open("rb") as f:
            head = f.read(_SIDECAR_READ)  # a digest and a file name: never more than this
    except OSError as exc:
        raise PolicyError(f"cannot read sha256 sidecar {sidecar}: {exc}") from exc
    fields = head.decode("utf-8", errors="replace").split()
    expected = fields[0].lower() if fields else ""
    if not _SHA256_RE.match(expected):
        raise PolicyError(
            f"sha256 sidecar {sidecar} starts with {expected[:80]!r}; expected 64 hex digits "
            f"then the file name (sha256sum format: '<hex>  {model.name}')"
        )
    return expected


def read_verified(model: Path, max_bytes: int = MAX_MODEL_BYTES) -> tuple[bytes, str]:
    """The model's bytes and sha256, checked against the sidecar.

    The size is checked (on the opened file) before anything is read; the file is then read
    once, in chunks that feed the hash, and these very bytes are what onnxruntime loads.
    """
    expected = _read_sidecar(model)
    try:
        with model.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > max_bytes:
                raise PolicyError(
                    f"{model} is {size} bytes; expected at most {max_bytes} bytes "
                    f"({max_bytes / 2**20:g} MiB, MAX_MODEL_BYTES; a policy MLP is a few "
                    "hundred KiB): refused by its size before reading it (raise the limit "
                    "with load_rl_policy(..., max_bytes=N) for a model that is this big on "
                    "purpose)"
                )
            h = hashlib.sha256()
            buf = bytearray()
            # a file that grows while it is read stops at the limit (+1 to notice)
            while chunk := f.read(min(_CHUNK, max_bytes + 1 - len(buf))):
                h.update(chunk)
                buf += chunk
    except OSError as exc:
        raise PolicyError(f"cannot read model file {model}: {exc}") from exc
    if len(buf) > max_bytes:
        raise PolicyError(
            f"{model} grew past {max_bytes} bytes while it was read; expected a file that "
            "does not change while it is loaded (write models to a temporary name, then rename)"
        )
    actual = h.hexdigest()
    if actual != expected:
        raise PolicyError(
            f"sha256 mismatch for {model}: the file hashes to {actual} but "
            f"{_sidecar_path(model).name} says {expected}; the model was changed or corrupted "
            "after export (re-export it, or re-copy both files)"
        )
    return bytes(buf), actual
