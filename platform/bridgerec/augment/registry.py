"""The registry of augmentation stages (``augment.stages`` names -> Stage classes).

Light on purpose (no pandas at import): the root config checks ``augment.stages`` against
:data:`STAGES`. The built-in stages are declared here and imported on first lookup; other
stages register with :func:`register_stage`.
"""

from __future__ import annotations

from typing import Any

from bridgerec._registry import Registry

__all__ = ["STAGES", "register_stage"]


def _is_stage(name: str, cls: Any) -> None:
    from bridgerec.augment.base import Stage

    if not (isinstance(cls, type) and issubclass(cls, Stage)) or cls.name != name:
        raise TypeError(f"{cls!r} is not a Stage subclass named {name!r}")


STAGES: Registry = Registry(
    "augmentation stage",
    "augment.stages",
    lazy={
        "profiles": "bridgerec.augment.profiles:ProfilesStage",
        "text_embeddings": "bridgerec.augment.text_embeddings:TextEmbeddingsStage",
        "pairs": "bridgerec.augment.pairs:PairsStage",
        "attributes": "bridgerec.augment.attributes:AttributesStage",
        "prompt_aug": "bridgerec.augment.prompt_aug:PromptAugStage",
    },
    check=_is_stage,
)
"""Stage name -> class; the names are those of ``augment.stages`` in the config."""


def register_stage(cls: type) -> type:
    """Class decorator registering a stage under ``cls.name`` (a name can be registered once)."""
    return STAGES.register(cls.name, cls)
