"""The architecture registry: ``TrainingConfig.model`` (a name) -> the network class.

Training (``BehaviorCloningTrainer``), loading (``load_checkpoint``), export (``export_onnx``)
and the CPU thread heuristic look the network up here instead of naming ``PolicyNet``. A
registered class is a ``otonom_trainer.model.PolicyNetwork``: ``forward(states) -> (logits (N,
3), strength (N, 1) in [0, 1])``, ``probabilities``, ``hparams()`` (the constructor's keyword
arguments, saved in the checkpoint), ``from_config(cfg)`` and ``work_per_row(cfg)``.

Built in: ``"mlp"`` -> ``PolicyNet`` (the default), ``"multitask"`` -> ``MultiTaskPolicyNet``
(plus expected-return and risk heads) and ``"attention"`` -> ``AttentionPolicyNet`` (softmax
attention over the features), both in ``otonom_trainer.networks``. Others are added with
``register_architecture(name, cls)``. Checkpoints record the name (``"architecture"``); one
written before the registry existed has none and loads as ``"mlp"``.

Not to be confused with ``otonom_trainer.registry`` (versions of trained models on disk).
Importing this module does not import torch: the built-in class is imported on first lookup.
"""

from __future__ import annotations

import importlib
import re
from typing import TYPE_CHECKING, Final

from otonom_trainer._errors import ArchitectureError

if TYPE_CHECKING:
    from otonom_trainer.model import PolicyNetwork

__all__ = [
    "DEFAULT_ARCHITECTURE",
    "ArchitectureError",
    "architecture_name",
    "architecture_names",
    "get_architecture",
    "is_architecture",
    "register_architecture",
    "unregister_architecture",
]

DEFAULT_ARCHITECTURE: Final = "mlp"
_NAME_RE: Final = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
# built-in names -> "module:class", imported on first use (keeps this module torch-free)
_BUILTIN: Final[dict[str, str]] = {
    "mlp": "otonom_trainer.model:PolicyNet",
    "multitask": "otonom_trainer.networks:MultiTaskPolicyNet",
    "attention": "otonom_trainer.networks:AttentionPolicyNet",
}
_REGISTERED: dict[str, type[PolicyNetwork]] = {}


def architecture_names() -> tuple[str, ...]:
    """Every known name, built-in first, then registered ones in registration order."""
    return (*_BUILTIN, *(n for n in _REGISTERED if n not in _BUILTIN))


def is_architecture(name: str) -> bool:
    """Whether ``name`` is registered (no import)."""
    return name in _BUILTIN or name in _REGISTERED


def get_architecture(name: str) -> type[PolicyNetwork]:
    """The class registered as ``name``; ``ArchitectureError`` naming the known ones."""
    cls = _REGISTERED.get(name)
    if cls is not None:
        return cls
    target = _BUILTIN.get(name)
    if target is None:
        raise ArchitectureError(
            f"model: got {name!r}; expected one of {', '.join(map(repr, architecture_names()))} "
            "(register others with otonom_trainer.architectures.register_architecture)"
        )
    module, _, qualname = target.partition(":")
    found: type[PolicyNetwork] = getattr(importlib.import_module(module), qualname)
    _REGISTERED[name] = found
    return found


def register_architecture(
    name: str, cls: type[PolicyNetwork], *, replace: bool = False
) -> type[PolicyNetwork]:
    """Make ``cls`` (a ``PolicyNetwork`` subclass) trainable as ``TrainingConfig(model=name)``.

    ``name``: lowercase letters, digits, ``_`` and ``-``, starting with a letter. A name already
    taken raises ``ArchitectureError`` unless ``replace``; built-in names cannot be replaced.
    Returns ``cls`` (usable as a decorator through ``functools.partial``).
    """
    from otonom_trainer.model import PolicyNetwork

    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ArchitectureError(
            f"architecture name: got {name!r}; expected lowercase letters, digits, '_' or '-', "
            "starting with a letter (at most 64)"
        )
    if not (isinstance(cls, type) and issubclass(cls, PolicyNetwork)):
        raise ArchitectureError(
            f"architecture {name!r}: got {cls!r}; expected a subclass of "
            "otonom_trainer.model.PolicyNetwork"
        )
    if name in _BUILTIN or (name in _REGISTERED and not replace):
        raise ArchitectureError(
            f"architecture {name!r} is already registered (as "
            f"{get_architecture(name).__qualname__}); pick another name"
            + ("" if name in _BUILTIN else " or pass replace=True")
        )
    _REGISTERED[name] = cls
    return cls


def unregister_architecture(name: str) -> None:
    """Forget a registered (not built-in) name; a no-op for an unknown one."""
    if name not in _BUILTIN:
        _REGISTERED.pop(name, None)


def architecture_name(net: object) -> str:
    """The registered name of ``net``'s class (exact class match); ``ArchitectureError`` if none."""
    for name in architecture_names():
        if type(net) is get_architecture(name):
            return name
    raise ArchitectureError(
        f"{type(net).__qualname__} is not a registered architecture; register it with "
        "otonom_trainer.architectures.register_architecture"
    )
