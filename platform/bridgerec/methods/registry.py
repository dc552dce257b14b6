"""Explicit registry of method plugins: name -> Method class. Duplicates and unknowns are errors."""

from __future__ import annotations

from typing import Callable

import numpy as np

from bridgerec.methods.base import Method
from bridgerec.models.base import DomainModel

__all__ = ["register_method", "method_class", "method_names", "build_method"]

_METHODS: dict[str, type[Method]] = {}

# Built-in plugins: name -> "module:Class", imported on first lookup (no import cycles).
_BUILTINS = {
    "base": "bridgerec.methods.base_method:BaseMethod",
    "rlmrec-con": "bridgerec.methods.rlmrec:RLMRecCon",
    "rlmrec-gen": "bridgerec.methods.rlmrec:RLMRecGen",
    "darec": "bridgerec.methods.darec:DaRec",
}


def _ensure_builtins() -> None:
    import importlib

    for name, target in _BUILTINS.items():
        if name not in _METHODS:
            module, cls = target.split(":")
            try:
                register_method(name)(getattr(importlib.import_module(module), cls))
            except ModuleNotFoundError as exc:
                if exc.name != module:
                    raise


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    def deco(cls: type[Method]) -> type[Method]:
        if name in _METHODS:
            raise ValueError(f"method {name!r} is already registered (by {_METHODS[name].__name__})")
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise TypeError(f"{cls!r} is not a Method subclass")
        cls.name = name
        _METHODS[name] = cls
        return cls

    return deco


def method_names() -> list[str]:
    _ensure_builtins()
    return sorted(_METHODS)


def method_class(name: str) -> type[Method]:
    _ensure_builtins()
    try:
        return _METHODS[name]
    except KeyError:
        raise ValueError(f"method.name: unknown method {name!r}; registered: {method_names()}") from None


def build_method(cfg, domain: DomainModel, inputs: dict[str, np.ndarray] | None = None) -> Method:
    """``cfg`` is the root Config (methods read ``cfg.method`` and their own sections)."""
    return method_class(cfg.method.name)(cfg, domain, inputs or {})
