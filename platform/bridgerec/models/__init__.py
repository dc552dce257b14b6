"""Domain models behind the :class:`DomainModel` contract, and their registry.

Names resolve lazily (PEP 562): importing :mod:`bridgerec.models.config` or the registry (as the
root config does) does not import torch or the models.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "ModelConfig": "config",
    "DomainModel": "base",
    "LightGCN": "lightgcn",
    "MF": "mf",
    "Popularity": "popularity",
    "SASRec": "sasrec",
    "SERVING_HISTORY": "histories",
    "TEST_HISTORY": "histories",
    "conditioned_on": "histories",
    "dataset_inputs": "histories",
    "histories_for": "histories",
    "MODELS": "registry",
    "build_model": "registry",
    "build_model_for_dataset": "registry",
    "model_class": "registry",
    "model_names": "registry",
    "register_model": "registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f"bridgerec.models.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'bridgerec.models' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
