"""The shared helpers of the lowest package: the one atomic write, the one file hash and the
one date parser."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import numpy as np
import pytest

from otonom_schema import (
    DateError,
    atomic_path,
    atomic_write,
    parse_iso_date,
    sha256_file,
    to_date,
)


def test_atomic_write_bytes_and_text(tmp_path: Path) -> None:
    out = tmp_path / "f.bin"
    assert atomic_write(out, b"\x00\x01") == out
    assert out.read_bytes() == b"\x00\x01"
    atomic_write(out, "héllo\n")
    assert out.read_bytes() == "héllo\n".encode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_atomic_path_keeps_the_old_file_on_an_error(tmp_path: Path) -> None:
    out = tmp_path / "f.txt"
    out.write_text("old", encoding="utf-8")
    seen: list[Path] = []

    def write_half() -> None:
        with atomic_path(out) as tmp:
            seen.append(tmp)
            tmp.write_text("half", encoding="utf-8")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_half()
    assert out.read_text(encoding="utf-8") == "old"
    assert not seen[0].exists()
    assert seen[0].parent == tmp_path
    assert seen[0].name.startswith(".f.txt.")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_a_write_that_cannot_happen_names_the_final_file(tmp_path: Path) -> None:
    """A folder that does not exist: the error names the file asked for, not the hidden
    temporary beside it (``.x.prom.<pid>.<random>.tmp``)."""
    target = tmp_path / "missing" / "x.prom"
    with pytest.raises(FileNotFoundError) as caught:
        atomic_write(target, "x")
    assert caught.value.filename == str(target)
    assert str(caught.value) == f"[Errno 2] No such file or directory: '{target}'"


def test_sha256_file_reads_a_file_larger_than_its_chunk(tmp_path: Path) -> None:
    data = np.random.default_rng(0).bytes((1 << 20) * 2 + 123)  # three chunks, the last short
    path = tmp_path / "d.npz"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert sha256_file(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()


def test_atomic_path_temporaries_are_unique(tmp_path: Path) -> None:
    out = tmp_path / "f.txt"
    with atomic_path(out) as a, atomic_path(out) as b:
        assert a != b
        a.write_text("a", encoding="utf-8")
        b.write_text("b", encoding="utf-8")
    assert out.read_text(encoding="utf-8") == "a"  # the outer block ends last


@pytest.mark.parametrize(
    ("text", "day"),
    [("2018-01-01", dt.date(2018, 1, 1)), ("20180102", dt.date(2018, 1, 2))],
)
def test_parse_iso_date(text: str, day: dt.date) -> None:
    assert parse_iso_date(text) == day
    assert to_date(text) == day


@pytest.mark.parametrize("text", ["01/02/2020", "2018-13-01", "", " 2018-01-01", "2018"])
def test_parse_iso_date_refuses(text: str) -> None:
    with pytest.raises(DateError) as info:
        parse_iso_date(text)
    assert str(info.value) == f"{text!r} is not a date; expected YYYY-MM-DD, e.g. 2018-01-01"
    assert isinstance(info.value, ValueError)


def test_to_date_reads_every_date_like() -> None:
    day = dt.date(2021, 3, 4)
    assert to_date(day) == day
    assert to_date(dt.datetime(2021, 3, 4, 23, 59)) == day
    assert to_date(np.datetime64("2021-03-04")) == day
    assert to_date(np.datetime64("2021-03-04T23:00")) == day
    for bad in (np.datetime64("NaT"), 20210304, None):
        with pytest.raises(ValueError, match="is not a date; expected YYYY-MM-DD"):
            to_date(bad)
