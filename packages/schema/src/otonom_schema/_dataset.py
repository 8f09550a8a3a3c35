"""The offline dataset file: a plain ``.npz`` readable without pickle.

Arrays: ``states`` (N, 34) float32, ``actions`` (N,) int64 (``Action`` values), ``strengths``
(N,) float32 in [0, 1], ``symbols`` (N,) unicode, ``dates`` (N,) datetime64[D], and
``metadata``: a 0-d unicode array holding JSON with ``format``, ``format_version``,
``schema_version``, ``schema_fingerprint``, ``feature_names``, ``source``, ``created_at`` (UTC ISO
8601) and any extra keys the producer adds (run ids, strategy, ...).

Format versions: 1 is the above; 2 adds the optional forward labels (``OfflineDataset.labels``,
``otonom_schema._labels``): the arrays ``forward_returns`` (N,) float32, ``forward_volatility``
(N,) float32, ``risk_levels`` (N,) int8 and ``label_end_dates`` (N,) datetime64[D], and the
metadata key ``labels`` (``horizon``, ``tercile_cuts``, ``cut_rows``, row counts, the
definition). A dataset is written as version 1 when it has no labels (the same file as before
labels existed) and as version 2 when it has them; both are read (a version 1 file holding
label arrays, or a version 2 file lacking one, is refused). Version 3 adds the optional
per-row rewards (``OfflineDataset.rewards``): the array ``rewards`` (N,) float32 (NaN where a
row has none) and the metadata key ``rewards`` (its definition and the rows that have one); a
dataset with rewards is written as version 3 (its labels, when it has them, as in version 2,
present when the metadata has the key ``labels``); versions 1 and 2 files load as before.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from otonom_schema._errors import DatasetError, SchemaError
from otonom_schema._io import atomic_path
from otonom_schema._labels import LABEL_ARRAYS, ForwardLabels
from otonom_schema._spec import (
    FEATURE_NAMES,
    SCHEMA_VERSION,
    Action,
    require_schema,
    schema_fingerprint,
)
from otonom_schema._state import validate_states

__all__ = [
    "DATASET_FORMAT",
    "DATASET_FORMAT_VERSION",
    "OfflineDataset",
    "load_dataset",
    "save_dataset",
]

DATASET_FORMAT: Final = "otonom-rl/offline-dataset"
DATASET_FORMAT_VERSION: Final = 3
"""The newest dataset format version (2: optional forward labels, 3: optional rewards); 1, 2
and 3 are read."""
_PLAIN_VERSION: Final = 1  # a dataset without labels (written as before labels existed)
_LABELS_VERSION: Final = 2  # labels, no rewards (written as before rewards existed)
_VERSIONS: Final = (_PLAIN_VERSION, _LABELS_VERSION, DATASET_FORMAT_VERSION)
REWARDS_ARRAY: Final = "rewards"
_ARRAYS: Final = ("states", "actions", "strengths", "symbols", "dates", "metadata")


def _utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


@dataclass(frozen=True)
class OfflineDataset:
    """(state, action, strength) tuples with their symbol and date, validated when made.

    ``metadata`` holds at least ``source``; the schema keys (version, fingerprint, feature
    names) and ``created_at`` are filled in when missing. ``labels``: optional forward labels
    (one per row, ``ForwardLabels``); ``format_version`` and ``labels`` in the metadata follow
    them (1 and no key without labels, 2 and their description with). ``rewards``: optional
    (N,) per-row rewards (float32, NaN where a row has none; ``otonom_trainer.rewards``);
    with them the format version is 3 and the metadata key ``rewards`` describes them (the
    producer's description, given as ``metadata["rewards"]``, plus the count of rows with one).
    """

    states: npt.NDArray[np.float32]
    actions: npt.NDArray[np.int64]
    strengths: npt.NDArray[np.float32]
    symbols: npt.NDArray[np.str_]
    dates: npt.NDArray[np.datetime64]
    metadata: Mapping[str, Any] = field(default_factory=dict)
    labels: ForwardLabels | None = None
    rewards: npt.NDArray[np.float32] | None = None

    def __post_init__(self) -> None:
        states = validate_states(self.states)
        n = states.shape[0]
        try:
            actions = np.asarray(self.actions)
            if actions.dtype.kind not in "iu":
                raise SchemaError(f"actions have dtype {actions.dtype}; expected integers")
            actions = actions.astype(np.int64)
        except (TypeError, ValueError) as exc:
            raise SchemaError(f"actions: {exc}") from None
        strengths = np.asarray(self.strengths, dtype=np.float32)
        symbols = np.asarray(self.symbols, dtype=np.str_)
        try:
            dates = np.asarray(self.dates, dtype="datetime64[D]")
        except (TypeError, ValueError) as exc:
            raise SchemaError(f"dates: {exc}") from None
        for name, arr in (
            ("actions", actions),
            ("strengths", strengths),
            ("symbols", symbols),
            ("dates", dates),
        ):
            if arr.shape != (n,):
                raise SchemaError(f"{name} has shape {arr.shape}; expected ({n},) like states")
        bad = np.flatnonzero((actions < 0) | (actions > max(Action)))
        if bad.size:
            i = int(bad[0])
            raise SchemaError(
                f"actions at row {i} is {actions[i]}; expected 0 (HOLD), 1 (BUY) or 2 (SELL)"
            )
        bad = np.flatnonzero(~np.isfinite(strengths) | (strengths < 0) | (strengths > 1))
        if bad.size:
            i = int(bad[0])
            raise SchemaError(f"strengths at row {i} is {strengths[i]}; expected a value in [0, 1]")
        if np.isnat(dates).any():
            raise SchemaError(f"dates at row {int(np.argmax(np.isnat(dates)))} is not a date")
        meta: dict[str, Any] = {
            "format": DATASET_FORMAT,
            "format_version": _PLAIN_VERSION,
            "schema_version": SCHEMA_VERSION,
            "schema_fingerprint": schema_fingerprint(),
            "feature_names": list(FEATURE_NAMES),
            "source": "unknown",
            "created_at": _utc_now(),
        }
        meta.update(self.metadata)
        described = meta.pop("rewards", None)
        meta.pop("labels", None)
        meta["format_version"] = _PLAIN_VERSION
        if self.labels is not None:
            if not isinstance(self.labels, ForwardLabels) or len(self.labels) != n:
                got = len(self.labels) if isinstance(self.labels, ForwardLabels) else self.labels
                raise SchemaError(f"labels: got {got!r}; expected ForwardLabels of {n} rows")
            meta["format_version"] = _LABELS_VERSION
            meta["labels"] = self.labels.metadata()
        if self.rewards is not None:
            rewards = np.asarray(self.rewards, dtype=np.float32)
            if rewards.shape != (n,) or np.isinf(rewards).any():
                raise SchemaError(
                    f"rewards: got shape {rewards.shape} (inf: {bool(np.isinf(rewards).any())}); "
                    f"expected ({n},) finite values or NaN (no reward)"
                )
            rewards.flags.writeable = False
            object.__setattr__(self, "rewards", rewards)
            meta["format_version"] = DATASET_FORMAT_VERSION
            about = dict(described) if isinstance(described, Mapping) else {}
            meta["rewards"] = {**about, "rows": int(np.isfinite(rewards).sum())}
        for name, arr in (
            ("states", states),
            ("actions", actions),
            ("strengths", strengths),
            ("symbols", symbols),
            ("dates", dates),
        ):
            arr.flags.writeable = False
            object.__setattr__(self, name, arr)
        object.__setattr__(self, "metadata", meta)

    def __len__(self) -> int:
        return int(self.states.shape[0])

    def action_counts(self) -> dict[Action, int]:
        """Rows per action, in ``Action`` order."""
        counts = np.bincount(self.actions, minlength=len(Action))
        return {a: int(counts[a]) for a in Action}

    def summary(self) -> str:
        """The guide's "Action distribution" block."""
        n = len(self)
        lines = ["Action distribution:"]
        for action, count in self.action_counts().items():
            share = 100.0 * count / n if n else 0.0
            lines.append(f"  {action.name}: {count} ({share:.1f}%)")
        return "\n".join(lines)


def save_dataset(dataset: OfflineDataset, path: str | os.PathLike[str]) -> Path:
    """Write ``dataset`` to ``path`` (a ``.npz``; folders are created) atomically; return the path.

    The file is written next to its destination and renamed into place, so a crash never leaves
    a half-written dataset under the final name.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = json.dumps(dict(dataset.metadata), sort_keys=True, allow_nan=False, default=str)
    labels = dataset.labels
    arrays: dict[str, Any] = {
        "states": dataset.states,
        "actions": dataset.actions,
        "strengths": dataset.strengths,
        "symbols": dataset.symbols,
        "dates": dataset.dates,
        "metadata": np.array(meta),
    }
    if labels is not None:
        arrays.update(zip(LABEL_ARRAYS, _label_arrays(labels), strict=True))
    if dataset.rewards is not None:
        arrays[REWARDS_ARRAY] = dataset.rewards
    with atomic_path(out) as tmp, tmp.open("wb") as fh:
        np.savez(fh, **arrays)
    return out


def _label_arrays(labels: ForwardLabels) -> tuple[npt.NDArray[Any], ...]:
    return labels.returns, labels.volatility, labels.risk, labels.ends


_ZIP_MAGIC: Final = b"PK\x03\x04"  # a .npz file is a zip archive
_EMPTY_ZIP_MAGIC: Final = b"PK\x05\x06"


def _check_zip_magic(src: Path, head: bytes) -> None:
    """``DatasetError`` unless ``head`` starts a zip archive (what ``np.savez`` writes)."""
    if head[:4] in (_ZIP_MAGIC, _EMPTY_ZIP_MAGIC):
        return
    if not head:
        found = "it is empty"
    elif head.startswith(b"\x93NUMPY"):
        found = "it is a single-array .npy file"
    else:
        try:
            with src.open("r", encoding="utf-8") as fh:
                line = fh.readline(80).strip()
            found = f"it starts with the text {line!r}"
        except (UnicodeDecodeError, OSError):
            found = f"it starts with the bytes {head!r}"
    raise DatasetError(
        f"{src} is not an otonom dataset (.npz) file: {found}; expected the numpy .npz archive "
        "(a zip file) that save_dataset and `otonom-train dataset` write"
    )


def load_dataset(path: str | os.PathLike[str], *, check_schema: bool = True) -> OfflineDataset:
    """Read a dataset written by ``save_dataset``.

    Raises ``FileNotFoundError`` if there is no file, ``DatasetError`` for a truncated, foreign
    or inconsistent file, and ``SchemaMismatchError`` when the file was made under another
    schema fingerprint (``check_schema=False`` skips only that check).
    """
    src = Path(path)
    if not src.is_file():
        raise FileNotFoundError(f"no dataset file at {src}")
    try:
        # Open the file ourselves: np.load leaks its handle when the archive is truncated.
        with src.open("rb") as fh:
            _check_zip_magic(src, fh.read(8))
            fh.seek(0)
            with np.load(fh, allow_pickle=False) as npz:
                found = set(npz.files)
                missing = [k for k in _ARRAYS if k not in found]
                if missing:
                    raise DatasetError(
                        f"{src} is not an otonom-rl dataset: missing arrays {missing} "
                        f"(found {sorted(found)}); expected {list(_ARRAYS)}"
                    )
                arrays = {k: npz[k] for k in (*_ARRAYS, *LABEL_ARRAYS, REWARDS_ARRAY) if k in found}
    except DatasetError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        reason = (  # numpy's advice to load pickles does not apply: a dataset never holds one
            "it holds pickled (object) arrays, which an otonom dataset never has"
            if "pickle" in str(exc)
            else str(exc)
        )
        raise DatasetError(
            f"{src} cannot be read as a .npz dataset (truncated or not a numpy archive): {reason}"
        ) from None
    try:
        meta = json.loads(str(arrays["metadata"]))
        if not isinstance(meta, dict):
            raise TypeError(f"metadata is a {type(meta).__name__}")
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{src}: the metadata entry is not a JSON object ({exc})") from None
    if meta.get("format") != DATASET_FORMAT:
        raise DatasetError(f"{src}: format is {meta.get('format')!r}; expected {DATASET_FORMAT!r}")
    version = meta.get("format_version")
    if version not in _VERSIONS or isinstance(version, bool):
        raise DatasetError(
            f"{src}: dataset format version {version!r}; this otonom-schema reads versions "
            f"{', '.join(map(str, _VERSIONS))}"
        )
    if check_schema:
        require_schema(
            src,
            meta.get("schema_fingerprint"),
            meta.get("schema_version"),
            "Regenerate the dataset with the installed schema (otonom-train dataset ...).",
        )
    try:
        labels = _read_labels(src, meta, arrays)
        rewards = _read_rewards(src, meta, arrays)
    except DatasetError:
        raise
    except SchemaError as exc:
        raise DatasetError(f"{src}: {exc}") from None
    try:
        return OfflineDataset(
            states=arrays["states"],
            actions=arrays["actions"],
            strengths=arrays["strengths"],
            symbols=arrays["symbols"],
            dates=arrays["dates"],
            metadata=meta,
            labels=labels,
            rewards=rewards,
        )
    except SchemaError as exc:
        raise DatasetError(f"{src}: {exc}") from None


def _read_rewards(
    src: Path, meta: Mapping[str, Any], arrays: Mapping[str, npt.NDArray[Any]]
) -> npt.NDArray[Any] | None:
    """The rewards of a version 3 file (None for versions 1 and 2); ``DatasetError`` when the
    array and the metadata key do not match the version."""
    has = REWARDS_ARRAY in arrays
    if meta["format_version"] != DATASET_FORMAT_VERSION:
        if has:
            raise DatasetError(
                f"{src}: format version {meta['format_version']} holds a rewards array; "
                f"expected none (rewards are format version {DATASET_FORMAT_VERSION})"
            )
        return None
    if not has or not isinstance(meta.get("rewards"), Mapping):
        raise DatasetError(
            f"{src}: format version {DATASET_FORMAT_VERSION} lacks the rewards array or the "
            "metadata key rewards; expected both"
        )
    return arrays[REWARDS_ARRAY]


def _read_labels(
    src: Path, meta: Mapping[str, Any], arrays: Mapping[str, npt.NDArray[Any]]
) -> ForwardLabels | None:
    """The forward labels of a version 2 file (None for version 1); ``DatasetError`` when the
    label arrays do not match the version, or ``SchemaError`` when they are inconsistent."""
    present = [k for k in LABEL_ARRAYS if k in arrays]
    version = meta["format_version"]
    if version == _PLAIN_VERSION or (version == DATASET_FORMAT_VERSION and "labels" not in meta):
        if present:
            raise DatasetError(
                f"{src}: format version {version} holds label arrays {present} without the "
                "metadata key labels; expected none (labels are format version "
                f"{_LABELS_VERSION}, or {DATASET_FORMAT_VERSION} with that key)"
            )
        return None
    described = meta.get("labels")
    missing = [k for k in LABEL_ARRAYS if k not in arrays]
    if missing or not isinstance(described, Mapping):
        raise DatasetError(
            f"{src}: format version {version} lacks "
            f"{missing or 'the metadata key labels'}; expected the arrays {list(LABEL_ARRAYS)} "
            "and the metadata key labels (horizon, tercile_cuts, cut_rows)"
        )
    try:
        returns, vol, risk, ends = (arrays[k] for k in LABEL_ARRAYS)
        cuts = described["tercile_cuts"]
        return ForwardLabels(
            horizon=described["horizon"],
            returns=returns,
            volatility=vol,
            risk=risk,
            ends=ends,
            cuts=(cuts[0], cuts[1]),
            cut_rows=int(described["cut_rows"]),
        )
    except (KeyError, TypeError, IndexError, ValueError) as exc:
        if isinstance(exc, SchemaError):
            raise
        raise DatasetError(
            f"{src}: metadata labels = {described!r} is malformed ({exc!r}); expected horizon, "
            "tercile_cuts [q1, q2] and cut_rows"
        ) from None
