"""Domain models behind the :class:`DomainModel` contract, and their registry.

Names resolve lazily (PEP 562): importing :mod:`bridgerec.models.config` or the registry (as the
root config does) does not import torch or the models.
"""

from bridgerec._lazy import lazy_exports

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
    "known_at": "histories",
    "load_domain_embeddings": "pretrained",
    "local_model_source": "pretrained",
    "MODELS": "registry",
    "build_model": "registry",
    "build_model_for_dataset": "registry",
    "check_objective": "registry",
    "model_class": "registry",
    "model_names": "registry",
    "register_model": "registry",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
