"""Explicit registry of domain models: name -> class. Duplicate and unknown names are errors."""

from __future__ import annotations

from typing import Callable

from bridgerec.config import ModelConfig
from bridgerec.models.base import DomainModel

__all__ = ["register_model", "build_model", "model_names"]

_MODELS: dict[str, type[DomainModel]] = {}


def register_model(name: str) -> Callable[[type[DomainModel]], type[DomainModel]]:
    """Class decorator (or call ``register_model(name)(cls)``) registering a DomainModel."""

    def deco(cls: type[DomainModel]) -> type[DomainModel]:
        if name in _MODELS:
            raise ValueError(f"domain model {name!r} is already registered (by {_MODELS[name].__name__})")
        if not (isinstance(cls, type) and issubclass(cls, DomainModel)):
            raise TypeError(f"{cls!r} is not a DomainModel subclass")
        _MODELS[name] = cls
        return cls

    return deco


def model_names() -> list[str]:
    return sorted(_MODELS)


def build_model(cfg: ModelConfig, n_users: int, n_items: int, **data: object) -> DomainModel:
    """Instantiate ``cfg.name`` with the dataset sizes; ``data`` carries extras a model may need
    (e.g. ``train_pairs`` for graph models)."""
    try:
        cls = _MODELS[cfg.name]
    except KeyError:
        raise ValueError(f"model.name: unknown domain model {cfg.name!r}; registered: {model_names()}") from None
    return cls(cfg, n_users, n_items, **data)
