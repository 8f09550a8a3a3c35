"""otonom-trainer: offline dataset generation, behaviour cloning in PyTorch, ONNX export.

``evaluate`` lives in ``otonom_trainer.evaluate`` (a function named like its module is not
re-exported here). Names load on first use (PEP 562): ``import otonom_trainer`` imports
neither torch nor the store, and changes no torch setting; the modules that train import
torch when used.

The error tree (``otonom_trainer._errors``; each class is importable from the module that
raises it, and keeps the builtin base callers caught before the tree)::

    Exception
    └── OtonomTrainerError
        ├── ConfigError (+ ValueError)          otonom_trainer.config
        ├── ArchitectureError (+ ValueError)    otonom_trainer.architectures
        ├── TrainingError (+ RuntimeError)      otonom_trainer.train
        ├── CheckpointError (+ ValueError)      otonom_trainer.train (training.checkpoint)
        ├── ExportError (+ RuntimeError)        otonom_trainer.export
        ├── EnsembleError (+ ValueError)        otonom_trainer.ensemble
        ├── RangeError (+ ValueError)           otonom_trainer.ranges
        ├── RegistryError (+ ValueError)        otonom_trainer.registry
        ├── PipelineError (+ ValueError)        otonom_trainer.pipeline
        ├── CheckError (+ ValueError)           otonom_trainer.check
        ├── WalkForwardError (+ ValueError)     otonom_trainer.walkforward
        ├── ExplainError (+ ValueError)         otonom_trainer.explain
        ├── TuneError (+ ValueError)            otonom_trainer.tune (tune_space)
        └── StatsError (+ ValueError)           otonom_trainer.stats

``otonom-train`` shows the message of any of them (and of the runtime's and schema's trees, and
``OSError``) in one line; anything else is a bug and keeps its traceback.
"""

import importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

if _TYPE_CHECKING:
    from otonom_trainer._errors import ArchitectureError, OtonomTrainerError
    from otonom_trainer.architectures import register_architecture
    from otonom_trainer.config import ConfigError, TrainingConfig
    from otonom_trainer.dataset import (
        DatasetGenerationError,
        OfflineDatasetGenerator,
        save_dataset,
    )
    from otonom_trainer.evaluate import EvaluationReport
    from otonom_trainer.export import ExportError, export_onnx
    from otonom_trainer.model import PolicyNet, PolicyNetwork
    from otonom_trainer.train import (
        BehaviorCloningTrainer,
        TrainingError,
        TrainingMetrics,
        load_checkpoint,
    )

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "ArchitectureError": "otonom_trainer._errors",
    "OtonomTrainerError": "otonom_trainer._errors",
    "register_architecture": "otonom_trainer.architectures",
    "ConfigError": "otonom_trainer.config",
    "TrainingConfig": "otonom_trainer.config",
    "DatasetGenerationError": "otonom_trainer.dataset",
    "OfflineDatasetGenerator": "otonom_trainer.dataset",
    "save_dataset": "otonom_trainer.dataset",
    "EvaluationReport": "otonom_trainer.evaluate",
    "ExportError": "otonom_trainer.export",
    "export_onnx": "otonom_trainer.export",
    "PolicyNet": "otonom_trainer.model",
    "PolicyNetwork": "otonom_trainer.model",
    "BehaviorCloningTrainer": "otonom_trainer.train",
    "TrainingError": "otonom_trainer.train",
    "TrainingMetrics": "otonom_trainer.train",
    "load_checkpoint": "otonom_trainer.train",
}

__all__ = [
    "ArchitectureError",
    "BehaviorCloningTrainer",
    "ConfigError",
    "DatasetGenerationError",
    "EvaluationReport",
    "ExportError",
    "OfflineDatasetGenerator",
    "OtonomTrainerError",
    "PolicyNet",
    "PolicyNetwork",
    "TrainingConfig",
    "TrainingError",
    "TrainingMetrics",
    "export_onnx",
    "load_checkpoint",
    "register_architecture",
    "save_dataset",
]


def __getattr__(name: str) -> _Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'otonom_trainer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
