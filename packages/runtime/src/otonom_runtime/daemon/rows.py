"""A tick's rows kept as columns, each item made when read (``Rows``): the portfolios and
holdings a broker gives (``Portfolios``, ``Holdings``); ``tick.Decisions`` and
``paper.Inputs`` are the others. A tick of thousands of symbols then makes none of these
objects unless a caller reads it, and leaves none behind for the garbage collector.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar, overload

import numpy as np
import numpy.typing as npt

from otonom_schema import PortfolioSnapshot, portfolio_feature_matrix

__all__ = ["Holding", "Holdings", "Portfolios", "Rows", "fields"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Holding:
    """A symbol's portfolio at the close of the bar being decided (the state's portfolio
    features in raw units) and its sleeve's equity there."""

    portfolio: PortfolioSnapshot
    equity: float


class Rows(Sequence[T]):
    """A read-only sequence of a tick's rows kept as columns: each item made when read
    (``row``), so a tick of thousands of symbols makes none it does not read (nor leaves
    thousands of objects for the garbage collector). Equal to any sequence of equal items;
    a slice is a list. ``PLURAL_COLUMNS``: each field's column is its name plus ``s``
    (what ``fields`` reads)."""

    __slots__ = ()
    PLURAL_COLUMNS: ClassVar[bool] = False

    def row(self, i: int) -> T:
        """Item ``i`` (0 <= i < len)."""
        raise NotImplementedError

    @overload
    def __getitem__(self, i: int) -> T: ...
    @overload
    def __getitem__(self, i: slice) -> list[T]: ...
    def __getitem__(self, i: int | slice) -> T | list[T]:
        n = len(self)
        if isinstance(i, slice):
            return [self.row(k) for k in range(*i.indices(n))]
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"row {i} of {n}")
        return self.row(i)

    def __iter__(self) -> Iterator[T]:
        return map(self.row, range(len(self)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str | bytes):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(list(self))


class Portfolios(Rows[PortfolioSnapshot]):
    """Portfolios as four columns (``PortfolioSnapshot``'s fields, raw units), a snapshot
    made when read; ``of`` takes any sequence of snapshots. ``features``: their portfolio
    features, computed (and checked) once."""

    __slots__ = ("_features", "cash_fraction", "days_since_last_trade", "leverage", "position")

    def __init__(
        self,
        position: list[float],
        leverage: list[float],
        cash_fraction: list[float],
        days_since_last_trade: list[float],
    ) -> None:
        self.position, self.leverage = position, leverage
        self.cash_fraction, self.days_since_last_trade = cash_fraction, days_since_last_trade
        self._features: npt.NDArray[np.float64] | None = None

    def features(self) -> npt.NDArray[np.float64]:
        """``portfolio_feature_matrix`` of the four columns, (N, 4): computed on the first call
        (its ``SchemaError`` for a row out of bounds), the same array after (read only: the
        columns are never changed in place)."""
        if self._features is None:
            features = portfolio_feature_matrix(*self.columns())
            features.flags.writeable = False
            self._features = features
        return self._features

    @classmethod
    def of(cls, snapshots: Sequence[PortfolioSnapshot]) -> Portfolios:
        """``snapshots`` as columns (itself when it is one)."""
        if isinstance(snapshots, Portfolios):
            return snapshots
        return cls(
            [p.position for p in snapshots],
            [p.leverage for p in snapshots],
            [p.cash_fraction for p in snapshots],
            [p.days_since_last_trade for p in snapshots],
        )

    def columns(self) -> tuple[list[float], list[float], list[float], list[float]]:
        """The four columns, in ``PortfolioSnapshot``'s field order."""
        return self.position, self.leverage, self.cash_fraction, self.days_since_last_trade

    def __len__(self) -> int:
        return len(self.position)

    def row(self, i: int) -> PortfolioSnapshot:
        return PortfolioSnapshot(
            self.position[i], self.leverage[i], self.cash_fraction[i], self.days_since_last_trade[i]
        )


class Holdings(Rows[Holding]):
    """A tick's holdings as columns (``portfolios`` and each sleeve's ``equity``), a
    ``Holding`` made when read (``PaperBroker.holdings``)."""

    __slots__ = ("equity", "portfolios")

    def __init__(self, portfolios: Portfolios, equity: list[float]) -> None:
        self.portfolios, self.equity = portfolios, equity

    def __len__(self) -> int:
        return len(self.equity)

    def row(self, i: int) -> Holding:
        return Holding(self.portfolios.row(i), self.equity[i])


def fields(items: Sequence[Any], names: tuple[str, ...]) -> Iterator[tuple[Any, ...]]:
    """The fields ``names`` of each of ``items``, a tuple a row: zipped from the columns of a
    ``Rows`` whose columns are its fields' names plus ``s`` (``PLURAL_COLUMNS``:
    ``paper.Inputs``, ``tick.Decisions``; no item made), else read from each item."""
    if isinstance(items, Rows) and items.PLURAL_COLUMNS:
        return zip(*(getattr(items, f"{name}s") for name in names), strict=True)
    read = operator.attrgetter(*names)
    return (read(item) if len(names) > 1 else (read(item),) for item in items)
