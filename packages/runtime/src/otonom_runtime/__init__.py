"""otonom-runtime: the torch-free runtime a trading daemon imports.

It will hold the market-data store, the live state builder, the ONNX Runtime policy, the
analysts, the ensemble and the backtester (see the project's issues). Importing it does nothing
but define names, and it never imports torch.
"""

__version__ = "0.1.0"

__all__: list[str] = []
