"""otonom-trainer: offline dataset generation, behaviour cloning in PyTorch, ONNX export.

Importing it does not import torch; the modules that train do, when they are used.
"""

__version__ = "0.1.0"

__all__: list[str] = []
