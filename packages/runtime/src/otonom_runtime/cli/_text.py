"""Plain-text output of the commands: aligned tables and the number formats of the metrics."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["num", "pct", "table"]


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def pct(value: object) -> str:
    return "-" if not isinstance(value, (int, float)) else f"{value:+.1%}"


def num(value: object) -> str:
    return "-" if not isinstance(value, (int, float)) else f"{value:.2f}"
