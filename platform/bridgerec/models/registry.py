"""Explicit registry of domain models: name -> class. Duplicate and unknown names are errors."""

from __future__ import annotations

from typing import Callable

from bridgerec.config import ModelConfig
from bridgerec.models.base import DomainModel

__all__ = ["register_model", "build_model", "build_model_for_dataset", "dataset_inputs", "model_class", "model_names"]

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


def model_class(name: str) -> type[DomainModel]:
    try:
        return _MODELS[name]
    except KeyError:
        raise ValueError(f"model.name: unknown domain model {name!r}; registered: {model_names()}") from None


def model_names() -> list[str]:
    return sorted(_MODELS)


def build_model(cfg: ModelConfig, n_users: int, n_items: int, **data: object) -> DomainModel:
    """Instantiate ``cfg.name`` with the dataset sizes; ``data`` carries extras a model may need
    (e.g. ``train_pairs`` for graph models)."""
    return model_class(cfg.name)(cfg, n_users, n_items, **data)


def dataset_inputs(data) -> dict:
    """What models may need from a prepared dataset: ``train_pairs`` (uids, iids) and
    ``histories`` (time-ordered training items per user, CSR ``(indptr, items)``)."""
    from bridgerec.models.sasrec import histories_from_frame

    train = data.frame("train", ["uid", "iid", "ts"])
    uids, iids = train["uid"].to_numpy("int64"), train["iid"].to_numpy("int64")
    indptr, items, _ = histories_from_frame(uids, iids, train["ts"].to_numpy("int64"), data.n_users)
    return {"train_pairs": (uids, iids), "histories": (indptr, items)}


def build_model_for_dataset(cfg: ModelConfig, data) -> DomainModel:
    """:func:`build_model` with the sizes and inputs of a :class:`~bridgerec.data.dataset.DatasetDir`."""
    return build_model(cfg, data.n_users, data.n_items, **dataset_inputs(data))
