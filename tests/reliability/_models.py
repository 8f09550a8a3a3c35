"""Shared helpers of the model-file families (test_model_files.py, test_model_mutations.py).

Not a test file: imported by the two test files (their folder is put on ``sys.path``) and by
their worker subprocesses, which run a test file as a script. Byte-level mutations of a model
file, the valid states the mutants are asked about, and the environment of a worker.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

import otonom_schema as s
from otonom_schema.testing import random_history

__all__ = [
    "bitflip",
    "initializer_ranges",
    "mutate_bytes",
    "overwrite",
    "truncate",
    "valid_states",
    "worker_env",
]


def worker_env() -> dict[str, str]:
    """The environment of a worker subprocess: any warning is an error, as in the suite."""
    return {**os.environ, "PYTHONWARNINGS": "error"}


def valid_states(n: int, seed: int) -> np.ndarray:
    """``n`` valid states: the last ``n`` rows ``compute_states`` makes of a seeded random
    history (real features, real portfolio columns), validated."""
    states = s.compute_states(random_history(n + 300, seed=seed))[-n:]
    assert states.shape[0] == n
    return np.ascontiguousarray(s.validate_states(states))


def bitflip(
    data: bytes, rng: np.random.Generator, ranges: Sequence[tuple[int, int]] | None = None
) -> bytes:
    """``data`` with one bit flipped: anywhere, or in a byte of one of ``ranges`` ([lo, hi)),
    every byte of the ranges equally likely."""
    if ranges is None:
        i = int(rng.integers(len(data)))
    else:
        sizes = np.array([hi - lo for lo, hi in ranges])
        k = int(rng.integers(int(sizes.sum())))
        r = int(np.searchsorted(np.cumsum(sizes), k, side="right"))
        i = ranges[r][0] + k - int(sizes[:r].sum())
    out = bytearray(data)
    out[i] ^= 1 << int(rng.integers(8))
    return bytes(out)


def truncate(data: bytes, rng: np.random.Generator) -> bytes:
    """``data`` cut at a random length in [0, len(data))."""
    return data[: int(rng.integers(len(data)))]


def overwrite(data: bytes, rng: np.random.Generator) -> bytes:
    """``data`` with 1-64 bytes at a random place overwritten by random bytes (never the same
    bytes)."""
    n = int(rng.integers(1, 65))
    i = int(rng.integers(len(data) - n + 1))
    new = bytearray(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
    if bytes(new) == data[i : i + n]:
        new[0] ^= 0xFF
    return data[:i] + bytes(new) + data[i + n :]


def mutate_bytes(data: bytes, family: str, rng: np.random.Generator) -> bytes:
    """One byte-level mutation of ``data``: ``bitflip`` (anywhere), ``truncate``, ``overwrite``."""
    if family == "bitflip":
        return bitflip(data, rng)
    if family == "truncate":
        return truncate(data, rng)
    if family == "overwrite":
        return overwrite(data, rng)
    raise ValueError(f"unknown byte mutation {family!r}")


def initializer_ranges(data: bytes) -> list[tuple[str, int, int]]:
    """``(name, lo, hi)``: where each graph initializer's ``raw_data`` (the weights) lies in
    the serialized model ``data``, found with ``onnx`` and checked to occur exactly once."""
    import onnx

    proto = onnx.load_model_from_string(data)
    out = []
    for tensor in proto.graph.initializer:
        raw = tensor.raw_data
        assert raw, f"initializer {tensor.name} has no raw_data"
        lo = data.find(raw)
        assert lo >= 0, tensor.name
        assert data.find(raw, lo + 1) == -1, f"{tensor.name}'s bytes occur twice"
        out.append((tensor.name, lo, lo + len(raw)))
    return out
