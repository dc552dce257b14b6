"""Light package faces (PEP 562): a package's names resolve from its submodules on first use.

A section package's ``__init__`` lists what it exports and from which submodule, and takes its
``__all__``, ``__getattr__`` and ``__dir__`` from :func:`lazy_exports`; importing the section's
``config`` then never imports the rest of the package (torch, Ray, vLLM). A leaf module: it
imports nothing from bridgerec.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any, Callable

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``(__all__, __getattr__, __dir__)`` for ``package`` whose ``exports`` map each public name
    to the submodule (relative to ``package``) that defines it."""
    names = sorted(exports)

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(import_module(f"{package}.{exports[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return list(names)

    return names, __getattr__, __dir__
