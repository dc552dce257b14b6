"""Explicit registry of method plugins: name -> Method class. Duplicates and unknowns are errors.

Light on purpose (no torch at import): the root config checks ``method.name`` against
:data:`METHODS`, whose built-in entries are imported on first lookup.
"""

from __future__ import annotations

from typing import Any, Callable

from bridgerec._registry import Registry

__all__ = ["METHODS", "register_method", "method_class", "method_names", "build_method"]


def _adopt(name: str, cls: Any) -> None:
    """Only Method subclasses register; a registered class carries its name (``cls.name``)."""
    from bridgerec.methods.base import Method

    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise TypeError(f"{cls!r} is not a Method subclass")
    cls.name = name


METHODS: Registry = Registry(
    "method",
    "method.name",
    lazy={
        "base": "bridgerec.methods.base_method:BaseMethod",
        "rlmrec-con": "bridgerec.methods.rlmrec:RLMRecCon",
        "rlmrec-gen": "bridgerec.methods.rlmrec:RLMRecGen",
        "darec": "bridgerec.methods.darec:DaRec",
        "bigrec": "bridgerec.methods.bigrec:BIGRec",
        "bdlm": "bridgerec.methods.bdlm:BDLM",
        "llama4rec": "bridgerec.methods.llama4rec:Llama4Rec",
    },
    check=_adopt,
)
"""Every method plugin by name; the built-ins are declared here and imported on first use."""


def register_method(name: str) -> Callable[[type], type]:
    return METHODS.decorator(name)


def method_names() -> list[str]:
    return METHODS.names()


def method_class(name: str) -> type:
    return METHODS.get_plugin(name)


def build_method(cfg, domain, inputs: dict | None = None):
    """``cfg`` is the ``method`` section (:class:`bridgerec.methods.config.MethodConfig`);
    ``domain`` the DomainModel it wraps; ``inputs`` the arrays of :mod:`bridgerec.methods.inputs`."""
    return method_class(cfg.name)(cfg, domain, inputs or {})
