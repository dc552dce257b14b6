"""Interaction sources and their registry (``data.source.kind`` -> source class).

Each source implements :class:`~bridgerec.data.sources.base.Source`. Register new kinds with
:func:`register_source`; names are unique.
"""

from __future__ import annotations

import importlib
from typing import Callable

from bridgerec.config import SourceConfig
from bridgerec.data.sources.base import RAW_COLUMNS, Source

__all__ = ["RAW_COLUMNS", "Source", "build_source", "register_source", "source_kinds"]

_REGISTRY: dict[str, Callable[[SourceConfig, int], Source]] = {}


def register_source(kind: str, factory: Callable[[SourceConfig, int], Source]) -> None:
    """Register ``factory(cfg, seed) -> Source`` under ``kind``; duplicates are rejected."""
    if kind in _REGISTRY:
        raise ValueError(f"source kind {kind!r} is already registered")
    _REGISTRY[kind] = factory


def source_kinds() -> list[str]:
    _ensure_builtins()
    return sorted(_REGISTRY)


def build_source(cfg: SourceConfig, seed: int = 0) -> Source:
    """Build the source named by ``cfg.kind``."""
    _ensure_builtins()
    try:
        factory = _REGISTRY[cfg.kind]
    except KeyError:
        raise ValueError(f"data.source.kind: unknown source {cfg.kind!r}; known: {source_kinds()}") from None
    return factory(cfg, seed)


def _ensure_builtins() -> None:
    """Register the built-in kinds on first use (imported lazily: no import cycles)."""
    if "synthetic" in _REGISTRY:
        return
    def lazy(module: str, cls: str, with_seed: bool) -> Callable[[SourceConfig, int], Source]:
        def factory(cfg: SourceConfig, seed: int) -> Source:
            klass = getattr(importlib.import_module(module), cls)
            return klass.from_config(cfg, seed) if with_seed else klass.from_config(cfg)

        return factory

    register_source("synthetic", lazy("bridgerec.data.synthetic", "SyntheticSource", True))
    register_source("movielens", lazy("bridgerec.data.sources.movielens", "MovieLensSource", False))
    register_source("amazon", lazy("bridgerec.data.sources.amazon", "AmazonSource", False))
    register_source("table", lazy("bridgerec.data.sources.table", "TableSource", False))

