"""The error tree of otonom-trainer.

::

    Exception
    └── OtonomTrainerError
        ├── ConfigError (+ ValueError)          a training configuration value or file
        ├── ArchitectureError (+ ValueError)    an unknown or unusable network architecture
        ├── TrainingError (+ RuntimeError)      a non-finite loss, an unusable split, a device
        ├── CheckpointError (+ ValueError)      a file that is not a policy checkpoint
        ├── ExportError (+ RuntimeError)        the ONNX export or its parity check failed
        ├── EnsembleError (+ ValueError)        members that cannot make one ensemble model
        ├── RangeError (+ ValueError)           train / test date ranges that cannot be used
        │                                       (also the runtime's DataRangeError)
        ├── RegistryError (+ ValueError)        the model-version registry
        ├── PipelineError (+ ValueError)        the pipeline's configuration or stages
        ├── CheckError (+ ValueError)           the model check's configuration or stages
        ├── WalkForwardError (+ ValueError)     the walk-forward's configuration or folds
        ├── CompareError (+ ValueError)         the comparison's configuration or windows
        ├── TrialsError (+ ValueError)          a trials ledger line that is not a JSON object
        ├── ExplainError (+ ValueError)         feature importance's options, rows or attention
        ├── TuneError (+ ValueError)            tune's options, search space or study
        ├── DatasetGenerationError (+ ValueError)  a dataset that cannot be made from the store
        ├── StatsError (+ ValueError)           return series the statistics cannot use
        ├── RlError (+ ValueError)              the RL environment's or fine-tuning's options
        ├── RetrainError (+ ValueError)         retrain's options or the model in service
        ├── LabelError (+ ValueError)           forward labels that cannot be made (horizon, rows)
        └── RewardError (+ ValueError)          rewards that cannot be made (no teacher run, rows)

The classes are
defined here (the base) and in the modules that raise them, so ``from otonom_trainer.config
import ConfigError`` keeps working; ``except OtonomTrainerError`` catches every one. The builtin
second base is what callers caught before the tree existed (``except ValueError``).
"""

from __future__ import annotations

__all__ = [
    "ArchitectureError",
    "CheckpointError",
    "EnsembleError",
    "OtonomTrainerError",
    "TrainingError",
]


class OtonomTrainerError(Exception):
    """Base of every error otonom-trainer raises on purpose (bad input, a failed stage)."""


class TrainingError(OtonomTrainerError, RuntimeError):
    """Training cannot go on: a non-finite loss, an unusable split, an unavailable device."""


class CheckpointError(OtonomTrainerError, ValueError):
    """A file is not a policy checkpoint written by ``BehaviorCloningTrainer``."""


class ArchitectureError(OtonomTrainerError, ValueError):
    """A network architecture name that is not registered, or a class that cannot be one."""


class EnsembleError(OtonomTrainerError, ValueError):
    """Members that cannot be one ensemble model: fewer than two, a checkpoint twice, not a
    ``PolicyNet``, of different state schemas or datasets (``otonom_trainer.ensemble``)."""
