"""``otonom_runtime._text.counted``: the counts of the runtime's messages (``otonom status``, the
tick's summary, the importers' and the strategy checker's counts) in the singular for one only."""

from __future__ import annotations

from otonom_runtime._text import counted


def test_counted_says_one_in_the_singular_only() -> None:
    assert [counted(n, "tick") for n in (0, 1, 2)] == ["0 ticks", "1 tick", "2 ticks"]
    assert counted(1, "bad row") == "1 bad row"
    assert counted(12, "candidate") == "12 candidates"
