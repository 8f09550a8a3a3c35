"""Bad CSVs: a seeded family of OHLCV files, each with one corrupted row of a random kind.

Every variant is refused whole (``DataImportError`` naming exactly that line and what is wrong,
nothing written to a real SQLite store), and with ``drop_bad_rows=True`` it imports every row
but that one and reports it in ``ImportReport.dropped``. Then the ``--drop-bad-rows`` flag of
``otonom data import-csv`` and of ``otonom-train pipeline`` in real subprocess runs.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select

from otonom_runtime._errors import DataImportError
from otonom_runtime.importers import OHLC_TOLERANCE, import_ohlcv_csv
from otonom_runtime.store import Bar, Symbol, get_session, init_db

ROOT = Path(__file__).resolve().parents[2]
SEED = 20261204
VARIANTS = 200
ROWS = 12
HEADER = ["Date", "Open", "High", "Low", "Close", "Volume"]
FIRST_DAY = dt.date(2020, 1, 1)

Row = list[str]


def _base_rows() -> list[Row]:
    """``ROWS`` valid bars, one a day from ``FIRST_DAY``: low <= open, close <= high."""
    rows = []
    for i in range(ROWS):
        o = 10.0 + 0.25 * i
        c = o + (0.5 if i % 2 else -0.5)
        rows.append(
            [
                (FIRST_DAY + dt.timedelta(days=i)).isoformat(),
                repr(o),
                repr(max(o, c) + 1.0),
                repr(min(o, c) - 1.0),
                repr(c),
                repr(1000.0 + i),
            ]
        )
    return rows


# Each corruption edits row ``r`` in place (``rows`` is the whole file's body, so a duplicate
# can copy the previous date) and returns what the listing must say about that line.
Corrupt = Callable[[random.Random, list[Row], int], str]
_VALUES = {"Open": 1, "High": 2, "Low": 3, "Close": 4, "Volume": 5}


def _close_above_high(rng: random.Random, rows: list[Row], r: int) -> str:
    high = float(rows[r][2])
    close = round(high + rng.uniform(0.01, 5.0), 4)
    rows[r][4] = repr(close)
    return f"close {close!r} > high {high!r}"


def _open_below_low(rng: random.Random, rows: list[Row], r: int) -> str:
    low = float(rows[r][3])
    open_ = round(low - rng.uniform(0.01, low / 2), 4)
    rows[r][1] = repr(open_)
    return f"open {open_!r} < low {low!r}"


def _high_below_low(rng: random.Random, rows: list[Row], r: int) -> str:
    low = float(rows[r][3])
    high = round(low - rng.uniform(0.01, low / 2), 4)
    rows[r][2] = repr(high)
    return f"high {high!r} < low {low!r}"


def _negative_volume(rng: random.Random, rows: list[Row], r: int) -> str:
    volume = -round(rng.uniform(0.5, 1e6), 2)
    rows[r][5] = repr(volume)
    return f"volume {volume!r} < 0"


def _non_finite(texts: tuple[str, ...]) -> Corrupt:
    def corrupt(rng: random.Random, rows: list[Row], r: int) -> str:
        name = rng.choice(list(_VALUES))
        text = rng.choice(texts)
        rows[r][_VALUES[name]] = text
        return f"{name.lower()} is {text!r}; expected a finite number"

    return corrupt


def _non_positive_price(rng: random.Random, rows: list[Row], r: int) -> str:
    name = rng.choice(["Open", "High", "Low", "Close"])
    value = rng.choice([0.0, -0.0, -1.5, -round(rng.uniform(0.001, 100.0), 3)])
    rows[r][_VALUES[name]] = repr(value)
    return f"{name.lower()} {value!r} <= 0"


def _bad_date(rng: random.Random, rows: list[Row], r: int) -> str:
    text = rng.choice(["2020-13-45", "2020-02-30", "yesterday", "20201399", "2020/02/31", "-"])
    rows[r][0] = text
    return repr(text)


def _duplicate_date(rng: random.Random, rows: list[Row], r: int) -> str:
    first = rng.randrange(r)  # an earlier row's date: this row is the repeat
    rows[r][0] = rows[first][0]
    return f"duplicate date {rows[first][0]} (first on line {first + 2})"


def _column_count(rng: random.Random, rows: list[Row], r: int) -> str:
    if rng.random() < 0.5:
        rows[r].append("extra")
        return f"{len(HEADER) + 1} columns; expected {len(HEADER)}"
    del rows[r][rng.randrange(1, len(HEADER))]
    return f"{len(HEADER) - 1} columns; expected {len(HEADER)}"


def _empty_cell(rng: random.Random, rows: list[Row], r: int) -> str:
    name = rng.choice(["Date", *_VALUES])
    rows[r][0 if name == "Date" else _VALUES[name]] = rng.choice(["", "  "])
    return "empty date" if name == "Date" else f"{name.lower()} is empty"


def _garbage(rng: random.Random, rows: list[Row], r: int) -> str:
    """A byte-order mark or other stray characters (valid UTF-8) inside a cell."""
    column = rng.randrange(len(HEADER))
    junk = rng.choice(["\ufeff", "\ufffd", "\u00ff\u00fe", "#", "x"])
    cell = rows[r][column]
    rows[r][column] = junk + cell if rng.random() < 0.5 else cell + junk
    return repr(rows[r][column].strip())


KINDS: dict[str, Corrupt] = {
    "close>high": _close_above_high,
    "open<low": _open_below_low,
    "high<low": _high_below_low,
    "volume<0": _negative_volume,
    "nan": _non_finite(("nan", "NaN", "-nan")),
    "inf": _non_finite(("inf", "-inf", "Infinity", "1e999")),
    "price<=0": _non_positive_price,
    "bad-date": _bad_date,
    "duplicate-date": _duplicate_date,
    "column-count": _column_count,
    "empty-cell": _empty_cell,
    "garbage": _garbage,
}


@dataclass(frozen=True)
class Variant:
    index: int
    kind: str
    row: int  # 0-based index into the body; the file's line is row + 2
    expected: str  # what the listing says about that line
    text: str  # the CSV file

    @property
    def line(self) -> int:
        return self.row + 2


def _variants() -> Iterator[Variant]:
    names = sorted(KINDS)
    for index in range(VARIANTS):
        rng = random.Random(SEED + index)
        kind = names[index % len(names)]  # every kind about VARIANTS / 12 times
        row = rng.randrange(1 if kind == "duplicate-date" else 0, ROWS)
        rows = _base_rows()
        expected = KINDS[kind](rng, rows, row)
        text = "".join(",".join(cells) + "\n" for cells in [HEADER, *rows])
        yield Variant(index, kind, row, expected, text)


ALL = list(_variants())
BASE = {
    dt.date.fromisoformat(cells[0]): tuple(float(x) for x in cells[1:]) for cells in _base_rows()
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One real SQLite store for the family; each variant imports under its own symbol."""
    url = f"sqlite:///{(tmp_path_factory.mktemp('bad-csvs') / 'otonom.db').as_posix()}"
    init_db(url)
    return url


def _counts(url: str) -> tuple[int, int]:
    with get_session(url) as session:
        bars = session.execute(select(func.count()).select_from(Bar)).scalar_one()
        symbols = session.execute(select(func.count()).select_from(Symbol)).scalar_one()
    return int(bars), int(symbols)


def test_the_family_covers_every_kind() -> None:
    assert len(ALL) == VARIANTS
    assert {v.kind for v in ALL} == set(KINDS)
    assert min(sum(v.kind == k for v in ALL) for k in KINDS) >= VARIANTS // len(KINDS)


@pytest.mark.parametrize("variant", ALL, ids=[f"{v.index}-{v.kind}" for v in ALL])
def test_a_bad_row_is_refused_then_dropped_alone(
    store: str, tmp_path: Path, variant: Variant
) -> None:
    path = tmp_path / "bars.csv"
    path.write_text(variant.text, encoding="utf-8")
    symbol = f"V{variant.index}"
    before = _counts(store)

    with pytest.raises(DataImportError) as info, get_session(store) as session:
        import_ohlcv_csv(session, path, symbol)
    lines = str(info.value).splitlines()
    assert lines[0] == (
        f"bars.csv: 1 bad row in OHLCV file {path}; nothing was imported; --drop-bad-rows "
        f"imports the {ROWS - 1} valid rows instead"
    )
    assert len(lines) == 2, lines
    assert lines[1].startswith(f"  line {variant.line}: "), (lines, variant.expected)
    assert variant.expected in lines[1], (lines, variant.expected)
    assert _counts(store) == before  # nothing written

    with get_session(store) as session:
        report = import_ohlcv_csv(session, path, symbol, drop_bad_rows=True)
    assert len(report.dropped) == 1
    assert report.dropped[0][0] == variant.line
    assert f"  line {report.dropped[0][0]}: {report.dropped[0][1]}" == lines[1]
    assert f"; dropped 1 bad row (line {variant.line}: " in report.summary()
    with get_session(store) as session:
        stored = session.execute(
            select(Bar.date, Bar.open, Bar.high, Bar.low, Bar.close, Bar.volume)
            .join(Symbol, Symbol.id == Bar.symbol_id)
            .where(Symbol.name == symbol)
        ).all()
    wanted = dict(BASE)
    del wanted[FIRST_DAY + dt.timedelta(days=variant.row)]
    assert {r.date: tuple(r[1:]) for r in stored} == wanted
    assert (report.rows, report.inserted) == (ROWS - 1, ROWS - 1)


def test_float_noise_within_the_tolerance_is_stored_as_given(store: str, tmp_path: Path) -> None:
    """close above high by less than OHLC_TOLERANCE (relative) is noise; 10x more is refused."""
    high = 12.0
    noisy = high * (1 + OHLC_TOLERANCE / 2)
    path = tmp_path / "noise.csv"
    path.write_text(f"Date,Open,High,Low,Close,Volume\n2020-01-01,11,{high},10,{noisy!r},5\n")
    with get_session(store) as session:
        report = import_ohlcv_csv(session, path, "NOISE")
    assert (report.rows, report.dropped) == (1, ())
    with get_session(store) as session:
        closes = session.execute(select(Bar.close).join(Symbol).where(Symbol.name == "NOISE"))
        assert closes.scalars().all() == [noisy]
    beyond = high * (1 + 10 * OHLC_TOLERANCE)
    path.write_text(f"Date,Open,High,Low,Close,Volume\n2020-01-02,11,{high},10,{beyond!r},5\n")
    refused = pytest.raises(DataImportError, match=r"line 2: 2020-01-02: close .* > high 12\.0")
    with refused, get_session(store) as session:
        import_ohlcv_csv(session, path, "NOISE")


def test_dropping_still_fails_on_a_file_with_no_valid_row(store: str, tmp_path: Path) -> None:
    path = tmp_path / "all-bad.csv"
    path.write_text(
        "Date,Open,High,Low,Close,Volume\n2020-01-01,10,12,9,12.5,1\n2020-01-02,x,1,1,1,1\n"
    )
    before = _counts(store)
    with pytest.raises(DataImportError) as info, get_session(store) as session:
        import_ohlcv_csv(session, path, "ALLBAD", drop_bad_rows=True)
    assert str(info.value).splitlines() == [
        f"all-bad.csv: 2 bad rows in OHLCV file {path}; nothing was imported",
        "  line 2: 2020-01-01: close 12.5 > high 12.0; expected low <= open, close <= high",
        "  line 3: 2020-01-02: open 'x' is not a number",
    ]
    for text in ("", "Date,Open,High,Low,Close\n2020-01-01,10,12,9,11\n"):  # empty; no volume
        path.write_text(text)
        with pytest.raises(DataImportError), get_session(store) as session:
            import_ohlcv_csv(session, path, "ALLBAD", drop_bad_rows=True)
    assert _counts(store) == before


# --- the command lines ---------------------------------------------------------------------------

BAD_FILE = (
    "Date,Open,High,Low,Close,Volume\n"
    + "".join(f"2020-01-{d:02d},10,12,9,11,100\n" for d in range(1, 3))
    + "2020-01-03,10,12.0,9,12.5,100\n"  # line 4: close above high
    + "".join(f"2020-01-{d:02d},10,12,9,11,100\n" for d in range(4, 9))
    + "2020-01-09,8.5,12,9,11,100\n"  # line 10: open below low
    + "2020-01-10,10,12,9,11,100\n"
)
LISTED = (
    "  line 4: 2020-01-03: close 12.5 > high 12.0; expected low <= open, close <= high",
    "  line 10: 2020-01-09: open 8.5 < low 9.0; expected low <= open, close <= high",
)


def _cli(module: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "OTONOM_DATABASE_URL"}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,  # PYTHONPATH passes through: the code under test, not an installed copy
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_otonom_data_import_csv_refuses_or_drops_with_the_flag(tmp_path: Path) -> None:
    (tmp_path / "old.csv").write_text(BAD_FILE)
    db = tmp_path / "store" / "otonom.db"
    url = ["--database-url", f"sqlite:///{db.as_posix()}"]
    refused = _cli(
        "otonom_runtime", [*url, "data", "import-csv", "old.csv", "--symbol", "OLD"], tmp_path
    )
    assert refused.returncode == 1, refused.stderr
    assert refused.stderr.splitlines() == [
        "error: old.csv: 2 bad rows in OHLCV file old.csv; nothing was imported; "
        "--drop-bad-rows imports the 8 valid rows instead",
        *LISTED,
    ]
    assert not db.exists()  # the store this call created is removed again

    args = [*url, "data", "import-csv", "old.csv", "--symbol", "OLD", "--drop-bad-rows"]
    dropped = _cli("otonom_runtime", args, tmp_path)
    assert dropped.returncode == 0, dropped.stderr
    assert dropped.stdout.strip() == (
        "OLD: 8 bars 2020-01-01 .. 2020-01-10 from old.csv (8 inserted, 0 updated, 0 unchanged)"
        "; dropped 2 bad rows (line 4: 2020-01-03: close 12.5 > high 12.0; expected low <= "
        "open, close <= high; line 10: 2020-01-09: open 8.5 < low 9.0; expected low <= open, "
        "close <= high)"
    )
    with get_session(f"sqlite:///{db.as_posix()}") as session:
        days = session.execute(select(Bar.date).order_by(Bar.date)).scalars().all()
    assert [d.day for d in days] == [1, 2, 4, 5, 6, 7, 8, 10]

    helped = _cli("otonom_runtime", ["data", "import-csv", "--help"], tmp_path)
    assert "--drop-bad-rows" in helped.stdout


def test_the_pipeline_passes_drop_bad_rows_to_its_import(tmp_path: Path) -> None:
    """Refused without the flag; with it the 8 good bars are imported (and reported), then the
    pipeline stops because 8 bars are too few: cheap, and proof the import ran."""
    (tmp_path / "old.csv").write_text(BAD_FILE)
    strategy = str(ROOT / "strategies" / "baseline_v1.yaml")
    args = ["pipeline", "--strategy-path", strategy, "--import-csv", "old.csv", "--symbol", "OLD"]
    refused = _cli("otonom_trainer.cli", args, tmp_path)
    assert refused.returncode == 1, refused.stderr
    error = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert error == [
        "error: old.csv: 2 bad rows in OHLCV file old.csv; nothing was imported; "
        "--drop-bad-rows imports the 8 valid rows instead"
    ]
    assert all(line in refused.stderr.splitlines() for line in LISTED)

    dropped = _cli("otonom_trainer.cli", [*args, "--drop-bad-rows"], tmp_path)
    assert dropped.returncode == 1, dropped.stderr
    assert "OLD: 8 bars 2020-01-01 .. 2020-01-10 from old.csv" in dropped.stdout
    assert "; dropped 2 bad rows (line 4: 2020-01-03: close 12.5 > high 12.0;" in dropped.stdout
    assert dropped.stderr.splitlines()[-1].startswith("error: OLD has 8 bars")

    helped = _cli("otonom_trainer.cli", ["pipeline", "--help"], tmp_path)
    assert "--drop-bad-rows" in helped.stdout
