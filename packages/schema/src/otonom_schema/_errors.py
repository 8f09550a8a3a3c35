"""The error tree of otonom-schema.

::

    ValueError
    └── SchemaError                 bad state or feature input: names the feature/row and value
        ├── SchemaMismatchError     an artefact made under another schema (version, fingerprint)
        └── DatasetError            a dataset file that is truncated, foreign or inconsistent

Every message says what was received and what was expected.
"""

from __future__ import annotations

__all__ = ["DatasetError", "SchemaError", "SchemaMismatchError"]


class SchemaError(ValueError):
    """Input that does not fit the 34-feature state schema."""


class SchemaMismatchError(SchemaError):
    """An artefact (dataset, model) was built under a different schema than the installed one."""


class DatasetError(SchemaError):
    """A dataset file that cannot be read as an otonom-rl offline dataset."""
