"""Method plugins (one module per paper method) behind the :class:`Method` contract, and their registry.

Names resolve lazily (PEP 562) so that the root config, which imports
:mod:`bridgerec.methods.config`, does not pull in torch and the models.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "MethodConfig": "config",
    "SemanticInputConfig": "config",
    "RLMRecConfig": "config",
    "DaRecConfig": "config",
    "RLMRecCon": "rlmrec",
    "RLMRecGen": "rlmrec",
    "DaRec": "darec",
    "semantic_embeddings": "semantic",
    "Method": "base",
    "weighted_sum": "base",
    "METHODS": "registry",
    "INPUT_LOADERS": "inputs",
    "load_method_inputs": "inputs",
    "build_method": "registry",
    "method_class": "registry",
    "method_names": "registry",
    "register_method": "registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f"bridgerec.methods.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'bridgerec.methods' has no attribute {name!r}")
