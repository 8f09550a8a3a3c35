"""Model versioning: ``models/<name>/<UTC timestamp>/`` folders and the ``latest`` pointer.

Every trained model gets its own folder named by the UTC time it was made
(``20261201T061500Z``: sorts by time as text). ``models/<name>/latest`` is a one-line text file
holding the name of the promoted version (a plain file rather than a symlink, so it works on
every OS and in every git checkout); ``models/<name>/default`` names the version to use while
nothing is promoted (the repository ships one, tracked in git; ``latest`` and the versions you
train are not). ``otonom_runtime.load_rl_policy("models/<name>")`` follows ``latest``, else
``default`` (the rule lives in ``otonom_runtime.policy.resolve_version_dir``;
``current_version`` here uses it), so a daemon configured with the folder serves whatever was
promoted last.

A version is promoted by ``otonom-train check MODEL --promote`` (only when every production
check passes) or by the pipeline's last stage; nothing else moves ``latest``, and nothing here
writes ``default``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from pathlib import Path
from typing import Final

from otonom_runtime import PolicyError
from otonom_runtime.policy import (
    DEFAULT_POINTER,
    LATEST_POINTER,
    MODEL_FILENAME,
    resolve_version_dir,
)
from otonom_schema import DateError, atomic_write, parse_iso_date
from otonom_trainer._errors import OtonomTrainerError

__all__ = [
    "DEFAULT_POINTER",
    "LATEST_POINTER",
    "RegistryError",
    "current_version",
    "latest_version",
    "list_versions",
    "new_version_dir",
    "promote",
    "replacement_note",
    "trained_period",
    "trained_symbols",
    "version_name",
]

_VERSION_RE: Final = re.compile(r"^\d{8}T\d{6}Z(-\d+)?$")


class RegistryError(OtonomTrainerError, ValueError):
    """A model folder that is not what versioning expects (the message says what was found)."""


def version_name(when: dt.datetime | None = None) -> str:
    """The folder name for a model made at ``when`` (default: now), in UTC."""
    when = dt.datetime.now(dt.timezone.utc) if when is None else when
    if when.tzinfo is None:
        raise RegistryError(f"version time {when} has no timezone; expected an aware datetime")
    return when.astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def new_version_dir(root: str | os.PathLike[str], when: dt.datetime | None = None) -> Path:
    """Create and return ``root/<UTC timestamp>/`` (``-2``, ``-3``... when one already exists)."""
    base = Path(root)
    base.mkdir(parents=True, exist_ok=True)
    name = version_name(when)
    for n in range(1, 1000):
        candidate = base / (name if n == 1 else f"{name}-{n}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise RegistryError(f"{base} already holds 999 versions named {name}*")


def list_versions(root: str | os.PathLike[str]) -> list[Path]:
    """The version folders under ``root`` that hold a model, oldest first."""
    base = Path(root)
    if not base.is_dir():
        return []
    return sorted(
        p
        for p in base.iterdir()
        if p.is_dir() and _VERSION_RE.match(p.name) and (p / MODEL_FILENAME).is_file()
    )


def latest_version(root: str | os.PathLike[str]) -> Path | None:
    """The promoted version (what ``root/latest`` names), or None when nothing is promoted."""
    pointer = Path(root) / LATEST_POINTER
    if not pointer.is_file():
        return None
    name = pointer.read_text(encoding="utf-8").strip()
    target = Path(root) / name
    if not name or "/" in name or "\\" in name or name in (".", "..") or not target.is_dir():
        raise RegistryError(
            f"{pointer} holds {name!r}; expected the name of a version folder in {root}"
        )
    return target


def current_version(root: str | os.PathLike[str]) -> Path | None:
    """The version ``load_rl_policy(root)`` serves when ``root`` holds no model of its own: the
    promoted one (``latest``), else the default (``default``), else None."""
    try:
        return resolve_version_dir(root)
    except PolicyError as exc:
        raise RegistryError(str(exc)) from None


def promote(version_dir: str | os.PathLike[str]) -> Path:
    """Point ``<parent>/latest`` at ``version_dir`` (atomically); returns the pointer file."""
    version = Path(version_dir)
    if not (version / MODEL_FILENAME).is_file():
        raise RegistryError(
            f"cannot promote {version}: it holds no {MODEL_FILENAME}; expected a trained "
            "model's version folder"
        )
    pointer = version.parent / LATEST_POINTER
    return atomic_write(pointer, version.name + "\n")


def _dataset_record(version_dir: str | os.PathLike[str]) -> dict[str, object]:
    """The training dataset's metadata a version's ``metadata.json`` holds ({} where the file
    or the record is missing or unreadable)."""
    try:
        run = json.loads((Path(version_dir) / "metadata.json").read_text(encoding="utf-8"))
        record = run["dataset"]["metadata"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return record if isinstance(record, dict) else {}


def trained_symbols(version_dir: str | os.PathLike[str]) -> tuple[str, ...]:
    """The symbols a version was trained on (its ``metadata.json``'s dataset symbols, in their
    order); () where the file or the list is missing or unreadable."""
    names = _dataset_record(version_dir).get("symbols")
    return tuple(n for n in names if isinstance(n, str)) if isinstance(names, list) else ()


def trained_period(version_dir: str | os.PathLike[str]) -> tuple[dt.date | None, dt.date | None]:
    """The first and last day of a version's training data (its ``metadata.json``'s dataset
    ``start_date`` / ``end_date``); None for either where it is missing or not a date."""
    record = _dataset_record(version_dir)

    def day(key: str) -> dt.date | None:
        value = record.get(key)
        try:
            return parse_iso_date(value) if isinstance(value, str) else None
        except DateError:
            return None

    return day("start_date"), day("end_date")


def replacement_note(version_dir: str | os.PathLike[str]) -> str | None:
    """A note when promoting ``version_dir`` replaces the version in service of its folder
    (``current_version``) with one trained on other symbols: whatever serves the folder (a
    daemon whose strategy's ``model_path`` names it) then serves a model of other markets for
    the symbols it decides. None when the symbols are the same, either is unknown, or nothing
    is in service."""
    version = Path(version_dir)
    try:
        current = current_version(version.parent)
    except RegistryError:
        return None
    if current is None or current.resolve() == version.resolve():
        return None
    new, old = trained_symbols(version), trained_symbols(current)
    if not new or not old or set(new) == set(old):
        return None
    return (
        f"{version.name} (trained on {', '.join(new)}) replaces {current.name} (trained "
        f"on {', '.join(old)}) in service under {version.parent}: a strategy whose model_path "
        "names that folder now serves it for the symbols it decides"
    )
