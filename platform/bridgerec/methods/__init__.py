"""Method plugins (one module per paper method) behind the :class:`Method` contract, and their registry.

Names resolve lazily (PEP 562) so that the root config, which imports
:mod:`bridgerec.methods.config`, does not pull in torch and the models.
"""

from bridgerec._lazy import lazy_exports

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

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
