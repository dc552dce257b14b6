"""The one registry helper behind every plugin registry (models, methods, sources, augmentation
stages, LLM engines, method inputs).

A :class:`Registry` maps a name to an object (a class or a factory). Names are registered once
(a duplicate is an error), and a lookup of an unknown name raises :class:`ValueError` naming the
config key that selects the plugin and listing the registered names. Built-in plugins can be
declared *lazily* as ``"module:attribute"`` strings: their names are known (so the config can be
validated) without importing the module (so importing a section's config never imports torch),
and the module is imported on first lookup. Reading the registry as a mapping
(``name in reg``, ``reg[name]``, ``sorted(reg)``) works as with a dict.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Generic, Iterator, Mapping, Optional, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Name -> plugin. ``what`` names the kind in messages ("domain model"), ``key`` the config
    key that selects one ("model.name"); ``check(name, obj)`` may reject a wrong object (raise)."""

    def __init__(self, what: str, key: Optional[str] = None, *, lazy: Optional[dict[str, str]] = None,
                 check: Optional[Callable[[str, Any], None]] = None):
        self.what, self.key, self._check = what, key, check
        self._items: dict[str, T] = {}
        self._lazy: dict[str, str] = dict(lazy or {})

    # -- registering -------------------------------------------------------------------------
    def register(self, name: str, obj: T) -> T:
        """Register ``obj`` under ``name`` (a name already taken, eagerly or lazily, is an error)."""
        if name in self._items or name in self._lazy:
            by = self._items.get(name, self._lazy.get(name))
            by = getattr(by, "__name__", by)
            raise ValueError(f"{self.what} {name!r} is already registered (by {by})")
        if self._check is not None:
            self._check(name, obj)
        self._items[name] = obj
        return obj

    def decorator(self, name: str) -> Callable[[T], T]:
        """``@reg.decorator("name")`` on a class or function registers it."""
        return lambda obj: self.register(name, obj)

    def register_lazy(self, name: str, target: str) -> None:
        """Declare ``name`` -> ``"module:attribute"``, imported on first lookup."""
        if name in self._items or name in self._lazy:
            raise ValueError(f"{self.what} {name!r} is already registered")
        self._lazy[name] = target

    # -- looking up --------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Every registered name (eager and lazy), sorted."""
        return sorted({*self._items, *self._lazy})

    def get_plugin(self, name: str) -> T:
        """The plugin registered under ``name``; an unknown name is a ValueError listing the names."""
        if name in self._items:
            return self._items[name]
        if name in self._lazy:
            module, _, attr = self._lazy[name].partition(":")
            obj = getattr(importlib.import_module(module), attr)
            del self._lazy[name]
            return self.register(name, obj)
        raise ValueError(self.unknown_message(name))

    def unknown_message(self, name: Any) -> str:
        prefix = f"{self.key}: " if self.key else ""
        return f"{prefix}unknown {self.what} {name!r}; registered: {', '.join(self.names())}"

    def validate(self, name: Any) -> None:
        """Raise ValueError (naming the key and the registered names) unless ``name`` is registered."""
        if name not in self:
            raise ValueError(self.unknown_message(name))

    # -- Mapping -----------------------------------------------------------------------------
    def __getitem__(self, name: str) -> T:
        try:
            return self.get_plugin(name)
        except ValueError:
            if name in self:
                raise
            raise KeyError(name) from None

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self._lazy

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.what!r}, {self.names()})"
