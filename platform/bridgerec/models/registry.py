"""Explicit registry of domain models: name -> class (duplicate and unknown names are errors),
and building a model for a prepared dataset.

Light on purpose (no torch at import): the root config validates ``model.name`` against
:data:`MODELS`, whose built-in entries are imported on first lookup.
"""

from __future__ import annotations

from typing import Any, Callable

from bridgerec._registry import Registry
from bridgerec.models.config import ModelConfig

__all__ = ["MODELS", "build_model", "check_objective", "build_model_for_dataset", "model_class", "model_names", "register_model"]


def _is_domain_model(name: str, cls: Any) -> None:
    from bridgerec.models.base import DomainModel

    if not (isinstance(cls, type) and issubclass(cls, DomainModel)):
        raise TypeError(f"{cls!r} is not a DomainModel subclass")


MODELS: Registry = Registry(
    "domain model",
    "model.name",
    lazy={
        "mf": "bridgerec.models.mf:MF",
        "lightgcn": "bridgerec.models.lightgcn:LightGCN",
        "sasrec": "bridgerec.models.sasrec:SASRec",
        "popularity": "bridgerec.models.popularity:Popularity",
    },
    check=_is_domain_model,
)
"""Every domain model by name; the built-ins are declared here and imported on first use."""


def register_model(name: str) -> Callable[[type], type]:
    """Class decorator (or call ``register_model(name)(cls)``) registering a DomainModel."""
    return MODELS.decorator(name)


def model_class(name: str) -> type:
    return MODELS.get_plugin(name)


def model_names() -> list[str]:
    return MODELS.names()


def check_objective(cfg: ModelConfig) -> None:
    """ValueError naming ``model.objective`` when ``cfg.name`` does not train for it."""
    cls = model_class(cfg.name)
    if cfg.objective not in cls.objectives:
        able = [n for n in model_names() if cfg.objective in model_class(n).objectives]
        raise ValueError(f"model.objective={cfg.objective!r}: model {cfg.name!r} trains only for {list(cls.objectives)}; "
                         f"models with that objective: {able}")


def build_model(cfg: ModelConfig, n_users: int, n_items: int, **data: object):
    """Instantiate ``cfg.name`` with the dataset sizes; ``data`` carries extras a model may need
    (e.g. ``train_pairs`` for graph models, ``rating_stats`` for rating models). The model keeps
    ``cfg`` as its ``built_with``."""
    check_objective(cfg)
    model = model_class(cfg.name)(cfg, n_users, n_items, **data)
    model.built_with = cfg
    return model


def build_model_for_dataset(cfg: ModelConfig, data):
    """:func:`build_model` with the sizes and inputs of a :class:`~bridgerec.data.dataset.DatasetDir`."""
    from bridgerec.models.histories import dataset_inputs

    return build_model(cfg, data.n_users, data.n_items, **dataset_inputs(data))
