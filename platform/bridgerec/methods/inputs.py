"""Loading the inputs a method declares (``Method.required_augmentations``).

:data:`INPUT_LOADERS` maps an input name to ``loader(cfg, data) -> np.ndarray``. The built-in
loaders are declared here by name (imported on first use), so which module provides an input is
written in one place instead of being registered as a side effect of importing a method module.
Other inputs register with ``INPUT_LOADERS.register(name, loader)``.
"""

from __future__ import annotations

import numpy as np

from bridgerec._registry import Registry
from bridgerec.data.dataset import DatasetDir

__all__ = ["load_method_inputs", "INPUT_LOADERS"]

INPUT_LOADERS: Registry = Registry(
    "method input",
    lazy={
        "user_semantic": "bridgerec.methods.semantic:user_semantic",
        "item_semantic": "bridgerec.methods.semantic:item_semantic",
        "train_interactions": "bridgerec.methods.semantic:train_interactions",
    },
)
"""Input name -> ``loader(cfg, data) -> np.ndarray``."""


def load_method_inputs(cfg, data: DatasetDir) -> dict[str, np.ndarray]:
    """Arrays for every input the configured method requires."""
    from bridgerec.methods.registry import method_class

    needed = method_class(cfg.method.name).required_augmentations
    missing = [n for n in needed if n not in INPUT_LOADERS]
    if missing:
        raise ValueError(f"method {cfg.method.name!r} needs inputs {missing} that no loader provides")
    return {name: INPUT_LOADERS.get_plugin(name)(cfg, data) for name in needed}
