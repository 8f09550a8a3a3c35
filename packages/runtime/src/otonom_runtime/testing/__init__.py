"""Test helpers shipped as public API (like ``structlog.testing``).

* ``otonom_runtime.testing.postgres``: a throwaway PostgreSQL server for tests.
* ``otonom_runtime.testing.models``: small real ONNX policies that follow docs/model-format.md.
* ``otonom_runtime.testing.rows``: decision rows (and their run row) without a backtest.
"""
