"""What a tick's cache holds between reads: the rows read before they are due
(``daemon.ahead.Ahead``) and the row ids it has read up to (``daemon.seen.Seen``, PostgreSQL's
writers in progress included), with constructed inputs."""

from __future__ import annotations

import numpy as np

from otonom_runtime.daemon.ahead import Ahead
from otonom_runtime.daemon.seen import Seen
from otonom_runtime.store.ticks import Marks, NewRows


def _i(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def _rows(ahead: Ahead) -> list[tuple[int, int, float]]:
    return list(
        zip(ahead.keys.tolist(), ahead.days.tolist(), ahead.values[0].tolist(), strict=True)
    )


def test_rows_are_held_by_day_then_key_and_a_row_put_again_replaces_the_held_one() -> None:
    ahead = Ahead(1)
    ahead.put(_i(2, 1, 2), _i(11, 12, 10), np.array([[2.11, 1.12, 2.10]]))
    ahead.put(_i(1, 3), _i(12, 10), np.array([[9.0, 3.10]]))  # (1, 12) again: replaced
    assert _rows(ahead) == [(2, 10, 2.10), (3, 10, 3.10), (2, 11, 2.11), (1, 12, 9.0)]
    assert len(ahead) == 4
    ahead.put(_i(), _i(), np.zeros((1, 0)))  # nothing: nothing changes
    assert len(ahead) == 4


def test_take_gives_the_rows_due_by_key_then_day_and_holds_the_rest() -> None:
    ahead = Ahead(2)
    keys, days = _i(1, 2, 1, 2, 3), _i(10, 10, 11, 12, 11)
    ahead.put(keys, days, np.vstack([keys * 100.0 + days, -days.astype(float)]))
    got_keys, got_days, values = ahead.take(11)  # two days: ordered by key, then day
    assert got_keys.tolist() == [1, 1, 2, 3]
    assert got_days.tolist() == [10, 11, 10, 11]
    assert values.tolist() == [[110.0, 111.0, 210.0, 311.0], [-10.0, -11.0, -10.0, -11.0]]
    assert _rows(ahead) == [(2, 12, 212.0)]
    assert [a.tolist() for a in ahead.take(11)[:2]] == [[], []]  # none due
    assert ahead.take(12)[0].tolist() == [2]
    assert len(ahead) == 0


def test_drop_forgets_keys_and_put_rows_keeps_those_asked() -> None:
    ahead = Ahead(1)
    days = np.array([20000, 20001, 20001], dtype="datetime64[D]")
    ahead.put_rows(NewRows(_i(1, 2, 3), days, np.array([[1.0, 2.0, 3.0]])), among=_i(1, 3))
    assert _rows(ahead) == [(1, 20000, 1.0), (3, 20001, 3.0)]
    ahead.drop({3, 7})
    assert _rows(ahead) == [(1, 20000, 1.0)]
    ahead.drop(set())
    assert len(ahead) == 1


def _marks(bars: int, oldest: int | None = None, nxt: int | None = None) -> Marks:
    return Marks({"bars": bars, "news": bars, "macro": 0}, (3, 3), oldest, nxt)


def test_sqlite_reads_on_from_the_largest_ids_at_once() -> None:
    seen = Seen()
    seen.read(_marks(10))
    assert seen.ids["bars"] == 10
    seen.read(_marks(25))
    assert seen.ids["bars"] == 25


def test_postgresql_reads_on_from_the_latest_tick_every_writer_in_progress_began_after() -> None:
    """Marks of successive ticks (largest ids, the oldest transaction still writing, the next
    transaction id): with no writer in progress the bound is the tick's own ids; with one, the
    ids of the latest earlier tick whose next transaction id it is not older than; with one
    older than every tick kept, the bound stays where it was."""
    seen = Seen()
    seen.read(_marks(10, oldest=100, nxt=100))  # nothing in progress
    assert seen.ids["bars"] == 10
    seen.read(_marks(20, oldest=105, nxt=110))  # writer 105 began after the first tick
    assert seen.ids["bars"] == 10
    seen.read(_marks(30, oldest=112, nxt=115))  # 105 ended; 112 began after the second tick
    assert seen.ids["bars"] == 20
    seen.read(_marks(40, oldest=99, nxt=120))  # a writer older than every tick kept
    assert seen.ids["bars"] == 20
    seen.read(_marks(50, oldest=130, nxt=130))  # all ended
    assert seen.ids["bars"] == 50


def test_the_first_read_with_a_writer_in_progress_takes_its_marks() -> None:
    seen = Seen()
    seen.read(_marks(10, oldest=90, nxt=100))  # no earlier tick to read on from
    assert seen.ids["bars"] == 10
    seen.read(_marks(20, oldest=95, nxt=105))  # still in progress: the bound stays
    assert seen.ids["bars"] == 10


def test_rows_put_into_an_empty_hold_are_ordered_by_day_then_key() -> None:
    """An empty hold given one day's rows by key keeps them as they are; rows of several days
    (or keys out of order) are ordered all the same."""
    one = Ahead(1)
    one.put(_i(1, 2, 5), _i(7, 7, 7), np.array([[1.0, 2.0, 5.0]]))
    assert _rows(one) == [(1, 7, 1.0), (2, 7, 2.0), (5, 7, 5.0)]
    mixed = Ahead(1)
    mixed.put(_i(1, 2, 3), _i(9, 8, 9), np.array([[1.0, 2.0, 3.0]]))  # first and last day equal
    assert _rows(mixed) == [(2, 8, 2.0), (1, 9, 1.0), (3, 9, 3.0)]
    again = Ahead(1)
    again.put(_i(3, 1), _i(7, 7), np.array([[3.0, 1.0]]))
    assert _rows(again) == [(1, 7, 1.0), (3, 7, 3.0)]
