"""The error tree of otonom-schema.

::

    ValueError
    └── SchemaError                 bad state or feature input: names the feature/row and value
        ├── SchemaMismatchError     an artefact made under another schema (version, fingerprint)
        ├── DatasetError            a dataset file that is truncated, foreign or inconsistent
        └── DateError               a value that is not a day (also argparse.ArgumentTypeError)

Every message says what was received and what was expected.
"""

from __future__ import annotations

import argparse

__all__ = ["DatasetError", "DateError", "SchemaError", "SchemaMismatchError"]


class SchemaError(ValueError):
    """Input that does not fit the 34-feature state schema."""


class SchemaMismatchError(SchemaError):
    """An artefact (dataset, model) was built under a different schema than the installed one."""


class DatasetError(SchemaError):
    """A dataset file that cannot be read as an otonom-rl offline dataset."""


class DateError(SchemaError, argparse.ArgumentTypeError):
    """A value that is not a date (``parse_iso_date``, ``to_date``). Also an
    ``argparse.ArgumentTypeError``, so ``type=parse_iso_date`` makes argparse print the message
    as is (``argument --start-date: '01/02/2020' is not a date; expected YYYY-MM-DD, ...``)."""
