"""The one atomic write of the project: a file appears under its final name whole or not at all.

``atomic_path(final)`` yields a temporary path next to ``final`` (same folder, so the rename
stays on one file system); whatever the caller writes there is renamed onto ``final`` when the
block ends normally, and removed when it raises. ``atomic_write(final, data)`` is the one-call
form for bytes or text. Every writer of a file a reader may open meanwhile goes through them:
datasets, checkpoints, sealed models and their sidecars, registry and pipeline pointers.
``sha256_file`` is the one chunked hash of a file (datasets, model sidecars).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "atomic_write", "sha256_file"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """``with atomic_path(final) as tmp:`` write ``tmp``; it becomes ``final`` on success and is
    removed on an error. The temporary name (``.<name>.<pid>.<random>.tmp``) is unique per
    call, so two writers of one file never share a temporary; the last rename wins."""
    final = Path(path)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        tmp.replace(final)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.filename == str(tmp):  # the caller's name, not the temporary's, in the message
            raise type(exc)(exc.errno, exc.strerror, str(final)) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically; returns the path."""
    final = Path(path)
    with atomic_path(final) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
    return final


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The sha256 (lowercase hex) of a file, read in 1 MiB chunks: a dataset's hash in a
    model's metadata, a model's ``.sha256`` sidecar."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
