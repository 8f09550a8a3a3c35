"""A reader process for ``test_concurrent_store.py`` (run by file path, not collected by pytest).

``python _store_worker.py URL EXPECTED_JSON STOP_FILE OUT_JSON`` reads the store at ``URL`` in a
loop while writer processes import, generate and backtest, until ``STOP_FILE`` exists (then one
last round). Each round reads, each in one SQL statement (one snapshot):

* the bar count and the sum of closes of every symbol: a symbol being imported or generated
  must show 0 bars or its whole series (``EXPECTED_JSON``: ``{"bars": {symbol: [n, sum]}}``),
  never a part of it;
* every backtest run with its status and decision count: a ``complete`` run must hold one
  decision per symbol and bar day of its range (counted from the bars in the same statement);

and, dataset-style, the store's readers (``list_symbols``, ``load_history``, ``load_news``,
``load_macro``) for every symbol that shows bars. Any exception (``database is locked``
included) or broken rule ends the process with exit code 1 and a one-line message; at the
end ``OUT_JSON`` gets the counts of what was seen: ``{"rounds", "rounds_with_symbols_missing",
"complete_runs_seen", "running_runs_seen"}`` (the last two count runs, summed over rounds).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text

from otonom_runtime.store import get_session, list_symbols, load_history, load_macro, load_news

_BARS = text(
    "SELECT s.name, count(b.id), coalesce(sum(b.close), 0) FROM symbols s "
    "LEFT JOIN bars b ON b.symbol_id = s.id GROUP BY s.name"
)
_RUNS = text(
    "SELECT r.id, r.status, r.start_date, r.end_date, "
    "(SELECT count(*) FROM decisions d WHERE d.run_id = r.id) FROM backtest_runs r"
)
_RUN_SYMBOLS = text(
    "SELECT count(*) FROM bars b JOIN symbols s ON s.id = b.symbol_id "
    "WHERE s.name = :name AND b.date >= :start AND b.date <= :end"
)


def _round(url: str, expected: dict[str, list[float]], seen: dict[str, Any]) -> None:
    with get_session(url) as session:
        present = set()
        for name, count, total in session.execute(_BARS).all():
            want = expected.get(name)
            if want is None or count == 0:
                continue
            present.add(name)
            if count != want[0] or abs(float(total) - want[1]) > 1e-6 * max(1.0, abs(want[1])):
                raise AssertionError(
                    f"symbol {name}: {count} bars (close sum {total}) seen; expected 0 or "
                    f"{want[0]} (close sum {want[1]}): a half-written import"
                )
        if present != set(expected):
            seen["rounds_with_symbols_missing"] += 1
    with get_session(url) as session:
        runs = session.execute(_RUNS).all()
        for run_id, status, start, end, decisions in runs:
            if status == "running":
                seen["running_runs_seen"] += 1
            if status != "complete":
                continue
            symbols = session.execute(
                text("SELECT symbols FROM backtest_runs WHERE id = :id"), {"id": run_id}
            ).scalar_one()
            if isinstance(symbols, str):
                symbols = json.loads(symbols)
            wanted = sum(
                session.execute(
                    _RUN_SYMBOLS, {"name": name, "start": start, "end": end}
                ).scalar_one()
                for name in symbols
            )
            if decisions != wanted:
                raise AssertionError(
                    f"run {run_id} is complete with {decisions} decisions; expected {wanted}"
                )
            seen["complete_runs_seen"] += 1
    with get_session(url) as session:
        for info in list_symbols(session):
            if info.bars == 0:
                continue
            history = load_history(session, info.name)
            if len(history.dates) not in (0, expected.get(info.name, [len(history.dates)])[0]):
                raise AssertionError(f"{info.name}: load_history gave {len(history.dates)} bars")
            load_news(session, info.name)
        load_macro(session, source="synthetic")
    seen["rounds"] += 1


def main(argv: list[str]) -> int:
    url, expected_json, stop_file, out_json = argv
    expected = json.loads(Path(expected_json).read_text(encoding="utf-8"))["bars"]
    stop = Path(stop_file)
    seen = {
        "rounds": 0,
        "rounds_with_symbols_missing": 0,
        "complete_runs_seen": 0,
        "running_runs_seen": 0,
    }
    try:
        while True:
            last = stop.exists()
            _round(url, expected, seen)
            if last:
                break
            time.sleep(0.01)
    except Exception as exc:
        print(f"reader failed: {type(exc).__name__}: {exc}".replace("\n", " "), file=sys.stderr)
        return 1
    finally:
        Path(out_json).write_text(json.dumps(seen), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
