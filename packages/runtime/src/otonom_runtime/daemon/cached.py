"""The symbols a tick's cache brought up to date (``daemon.cache.TickCache.refresh``): each one's
row in the cache's windows, newest bar and, when read whole, its inputs, kept as columns
(``Cached``; ``CachedSymbol``, one of them, made when read)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from otonom_runtime.daemon.rows import Rows

if TYPE_CHECKING:
    from otonom_runtime.daemon.tick import SymbolInputs

__all__ = ["Cached", "CachedSymbol"]


class CachedSymbol(NamedTuple):
    """A symbol as the cache holds it after ``TickCache.refresh``: its row in the cache's
    windows, the date of its newest bar and, when it was read whole this tick, its inputs
    (``SymbolInputs``: the history and news a replay needs): a row of ``Cached``, made when
    read (a named tuple: about half a frozen dataclass's cost)."""

    symbol: str
    symbol_id: int
    sources: dict[str, str]
    row: int
    newest: dt.date
    whole: SymbolInputs | None


class Cached(Rows[CachedSymbol]):
    """The symbols of ``TickCache.refresh`` as columns (``CachedSymbol``'s fields; each
    ``CachedSymbol`` made when read): what a tick reads of thousands of symbols without an
    object a symbol. ``pick``: some of them; ``of``: any sequence of ``CachedSymbol``."""

    __slots__ = ("ids", "newest", "rows", "sources", "symbols", "wholes")

    def __init__(
        self,
        symbols: list[str],
        ids: list[int],
        sources: list[dict[str, str]],
        rows: list[int],
        newest: list[dt.date],
        wholes: list[SymbolInputs | None],
    ) -> None:
        self.symbols, self.ids, self.sources, self.rows = symbols, ids, sources, rows
        self.newest, self.wholes = newest, wholes

    @classmethod
    def of(cls, symbols: Sequence[CachedSymbol]) -> Cached:
        """``symbols`` as columns (itself when it is ``Cached``)."""
        if isinstance(symbols, Cached):
            return symbols
        return cls(
            [s.symbol for s in symbols],
            [s.symbol_id for s in symbols],
            [s.sources for s in symbols],
            [s.row for s in symbols],
            [s.newest for s in symbols],
            [s.whole for s in symbols],
        )

    def __len__(self) -> int:
        return len(self.ids)

    def row(self, i: int) -> CachedSymbol:
        return CachedSymbol(
            self.symbols[i], self.ids[i], self.sources[i], self.rows[i], self.newest[i],
            self.wholes[i],
        )  # fmt: skip

    def pick(self, indexes: Sequence[int]) -> Cached:
        """Rows ``indexes`` of these, in that order (these themselves when it is every row in
        order: a steady tick's pending symbols; columns are never changed in place)."""
        if len(indexes) == len(self.ids) and list(indexes) == list(range(len(self.ids))):
            return self
        return Cached(
            *(  # type: ignore[arg-type]
                [column[i] for i in indexes]
                for column in (self.symbols, self.ids, self.sources, self.rows, self.newest,
                               self.wholes)
            )
        )  # fmt: skip
