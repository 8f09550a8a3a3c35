"""The one date parser of the project and the one conversion of a date-like value to a day.

``parse_iso_date`` reads a day written as text (``datetime.date.fromisoformat``:
``YYYY-MM-DD``, and the other ISO 8601 day forms Python accepts such as ``20180101``); every
user-facing date (the CLIs' flags, the importers' ISO cells, the builder's and the dataset
generator's arguments) goes through it, so the same text gives the same day, or the same error,
everywhere. ``to_date`` adds the non-text date-likes (``datetime``, ``date``, numpy
``datetime64``). Both raise ``DateError`` (a ``ValueError``) naming the value and the expected
form; callers wrap it in their own error class. argparse prints it as is, so
``parse_iso_date`` is also the CLIs' ``type=`` for date flags. Arrays of dates are read by
numpy (``datetime64[D]``) in the feature maths, a vectorised path this module does not replace.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from otonom_schema._errors import DateError

__all__ = ["DateLike", "parse_iso_date", "to_date"]

DateLike = dt.date | np.datetime64 | str
"""What the date arguments of the project accept."""


def _not_a_date(value: object) -> DateError:
    return DateError(f"{value!r} is not a date; expected YYYY-MM-DD, e.g. 2018-01-01")


def parse_iso_date(text: str) -> dt.date:
    """The day ``text`` names (``datetime.date.fromisoformat``, nothing stripped); raises
    ``DateError("'x' is not a date; expected YYYY-MM-DD, e.g. 2018-01-01")``."""
    try:
        return dt.date.fromisoformat(text)
    except (TypeError, ValueError):
        raise _not_a_date(text) from None


def to_date(value: object) -> dt.date:
    """``value`` as a ``datetime.date``: a ``datetime`` gives its date, a ``date`` itself, a
    ``datetime64`` its day, text ``parse_iso_date``'s day; anything else (``NaT`` included)
    raises ``parse_iso_date``'s ``DateError``."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        return parse_iso_date(value)
    if isinstance(value, np.datetime64):
        day = value.astype("datetime64[D]").astype(object)
        if isinstance(day, dt.date):
            return day
    raise _not_a_date(value)
