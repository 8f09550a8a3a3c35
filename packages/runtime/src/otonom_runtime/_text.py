"""Words of the runtime's messages written once: ``counted`` (a count and its noun)."""

from __future__ import annotations

__all__ = ["counted"]


def counted(n: int, noun: str) -> str:
    """``1 decision``, ``3 decisions``, ``0 decisions``: a count and its noun (a regular plural:
    ``s`` added), singular only for one."""
    return f"{n} {noun}" + ("" if n == 1 else "s")
