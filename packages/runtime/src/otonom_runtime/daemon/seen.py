"""What a tick's cache has seen of the store (``daemon.cache.TickCache``): ``Seen``, the row ids
up to which it has every row (and every entry of the change log), and the symbols it read by
name.

A cache reads on from the largest row ids it has seen (``store.ticks.new_rows``). On SQLite one
writer at a time takes ids, so rows become visible in the order of their ids and the largest
ids a tick's marks give (``store.ticks.tick_marks``) are a bound at once. On PostgreSQL a
writer takes its ids from a sequence when it inserts and its rows become visible when it
commits: one still in progress may add rows under ids below those another writer committed.
The bound there is the largest ids of the latest tick that every writer in progress began
after (the marks give the next transaction id and the oldest one still writing): until such
a writer ends, ticks read on from the bound before it, so its rows are read when it commits
(the rows read twice are told apart by the cache: same symbol and date)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from sqlalchemy.orm import Session

from otonom_runtime.store.ticks import Marks, changed_keys, tick_symbols

__all__ = ["Seen"]

_FENCES: Final = 64
"""Ticks' marks kept on PostgreSQL to read on from (a writer in progress longer: the bound
stays where it was until it ends)."""


class Seen:
    """The row ids a cache has every row up to (``ids``: bars, news, macro; empty before the
    first read) and its last read of the symbols (``symbols``)."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self._fences: list[tuple[int, dict[str, int]]] = []  # PostgreSQL: (next xid, ids)
        # ``symbols``' last read: the symbols' marks, the names, their ids and kinds
        self._known: tuple[tuple[int, int], list[str], dict[str, int], dict[str, bool]] | None
        self._known = None
        self._done: set[int] = set()  # change log entries given by ``changes``, above ``ids``

    def symbols(
        self, session: Session, names: Sequence[str], marks: Marks
    ) -> tuple[dict[str, int], dict[str, bool]]:
        """``tick_symbols`` of ``names`` (each one's id and whether it is synthetic): the last
        call's while the symbols table's count and largest id are as they were then, no
        symbol's row changed in place (``changes``) and the names are the same."""
        known = self._known
        if known is not None and known[0] == marks.symbols and known[1] == names:
            return known[2], known[3]
        ids, synthetic = tick_symbols(session, names)
        self._known = (marks.symbols, list(names), ids, synthetic)
        return ids, synthetic

    def changes(self, session: Session, marks: Marks) -> list[tuple[str, int | None, str | None]]:
        """The change log's entries above the bound not given before (kind, symbol id,
        source: ``store.ticks.changed_keys``), read only when its largest id in ``marks`` is
        above the bound. On PostgreSQL the bound stays back while a writer is in progress, so
        the same entries are read again: each is given once. A delete above every id left in
        its table (SQLite may give those ids again: the entry's ``row_id``, the largest id
        left) lowers that table's bound to it: the tick reads the rows on from there (a row
        read again is told apart by the cache, as behind the fence). A symbol's own row
        changed (its name or kind): the next ``symbols`` reads the names again."""
        bound = self.ids.get("changes", 0)
        if marks.ids["changes"] <= bound:
            return []
        found, done = changed_keys(session, bound), self._done
        fresh = [i for i, entry in enumerate(found.ids) if entry not in done]
        done.update(found.ids)
        ids = self.ids = dict(self.ids)  # (``marks.ids`` itself, after a read)
        for i in fresh:
            if found.kinds[i] == "symbols":
                self._known = None
            freed = found.row_ids[i]
            if freed is not None and found.kinds[i] in ids:
                ids[found.kinds[i]] = min(ids[found.kinds[i]], freed)
        return [(found.kinds[i], found.symbol_ids[i], found.sources[i]) for i in fresh]

    def read(self, marks: Marks) -> None:
        """A tick read every row with an id above ``ids`` after taking ``marks``: the new
        bound (see the module docstring; the first read's marks with a writer in progress
        then: that writer's rows under smaller ids are not seen, as before any bound); the
        change log's entries given at or below it are forgotten."""
        self._bound(marks)
        bound = self.ids.get("changes", 0)
        self._done = {i for i in self._done if i > bound}

    def _bound(self, marks: Marks) -> None:
        if marks.oldest is None or marks.next is None:  # one writer at a time
            self.ids = marks.ids
            return
        fences = self._fences
        fences.append((marks.next, marks.ids))
        safe = [i for i, (later, _) in enumerate(fences) if later <= marks.oldest]
        if safe:
            del fences[: safe[-1]]
            self.ids = fences[0][1]
            return
        del fences[:-_FENCES]
        if not self.ids:
            self.ids = marks.ids
