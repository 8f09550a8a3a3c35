"""Sentiment provenance: the names of the sources sentiment rows come from (no dependencies).

Every news and macro sentiment row of the store carries a ``source``: ``SYNTHETIC_SOURCE`` for
the rows the synthetic market writes, ``USER_SOURCE`` (the default) for imported ones, or a
name given to ``otonom data import-sentiment --source``. A symbol reads one source per kind
(``otonom_runtime.store.sentiment_source``), so the demo's sentiment never reaches a real
symbol and a user's never reaches the demo. Kept apart from ``store`` so that the strategy
loader can check names without importing SQLAlchemy.
"""

from __future__ import annotations

import re
from typing import Final

SYNTHETIC_SOURCE: Final = "synthetic"
"""The source of the sentiment the synthetic market writes (``otonom data synth``)."""
USER_SOURCE: Final = "user"
"""The default source of imported sentiment (``otonom data import-sentiment``)."""
SOURCE_MAX_LEN: Final = 64
"""The longest source name (the ``source`` columns are ``String(64)``)."""
_SOURCE_NAME: Final = re.compile(rf"[A-Za-z0-9_.-]{{1,{SOURCE_MAX_LEN}}}")
SOURCE_NAME_RULE: Final = (
    f"1-{SOURCE_MAX_LEN} letters, digits, '_', '.' or '-' (e.g. {USER_SOURCE}, {SYNTHETIC_SOURCE})"
)
"""What a source name may hold, for messages."""


def is_source_name(name: object) -> bool:
    """Whether ``name`` is a valid source name (see ``SOURCE_NAME_RULE``)."""
    return isinstance(name, str) and _SOURCE_NAME.fullmatch(name) is not None


def check_source_name(name: object) -> str:
    """``name`` when it is a valid source name, else ``ValueError`` saying what is allowed."""
    if not is_source_name(name):
        raise ValueError(
            f"sentiment source {name!r} is not a source name; expected {SOURCE_NAME_RULE}"
        )
    assert isinstance(name, str)
    return name
