"""Interaction sources and their registry (``data.source.kind`` -> source factory).

Each source implements :class:`~bridgerec.data.sources.base.Source`. Register new kinds with
:func:`register_source`; names are unique. The registry is light (no pandas at import), so the
root config can check ``data.source.kind`` against :data:`SOURCES`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Callable

from bridgerec._registry import Registry

if TYPE_CHECKING:  # annotations only: data.config's validators import this module (SOURCES), and a
    # process that imports this module first (a Ray Data worker unpickling a source) would cycle
    from bridgerec.data.config import SourceConfig

__all__ = ["RAW_COLUMNS", "SOURCES", "Source", "build_source", "register_source", "source_kinds"]

SOURCES: Registry = Registry("source", "data.source.kind")
"""``kind`` -> ``factory(cfg: SourceConfig, seed: int) -> Source``."""


def register_source(kind: str, factory: Callable[[SourceConfig, int], Any]) -> None:
    """Register ``factory(cfg, seed) -> Source`` under ``kind``; duplicates are rejected."""
    SOURCES.register(kind, factory)


def source_kinds() -> list[str]:
    return SOURCES.names()


def build_source(cfg: SourceConfig, seed: int = 0):
    """Build the source named by ``cfg.kind``."""
    return SOURCES.get_plugin(cfg.kind)(cfg, seed)


def _builtin(module: str, cls: str, with_seed: bool) -> Callable[[SourceConfig, int], Any]:
    """A factory that imports its module on first use (the registry stays light)."""

    def factory(cfg: SourceConfig, seed: int):
        klass = getattr(importlib.import_module(module), cls)
        return klass.from_config(cfg, seed) if with_seed else klass.from_config(cfg)

    return factory


register_source("synthetic", _builtin("bridgerec.data.synthetic", "SyntheticSource", True))
register_source("movielens", _builtin("bridgerec.data.sources.movielens", "MovieLensSource", False))
register_source("amazon", _builtin("bridgerec.data.sources.amazon", "AmazonSource", False))
register_source("table", _builtin("bridgerec.data.sources.table", "TableSource", False))


def __getattr__(name: str) -> Any:
    if name in ("RAW_COLUMNS", "Source"):  # the contract, with pandas behind it: imported on use
        return getattr(importlib.import_module("bridgerec.data.sources.base"), name)
    raise AttributeError(f"module 'bridgerec.data.sources' has no attribute {name!r}")
