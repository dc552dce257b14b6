"""Loading the augmentation outputs a method declares (``Method.required_augmentations``)."""

from __future__ import annotations

import numpy as np

from bridgerec.data.dataset import DatasetDir

__all__ = ["load_method_inputs", "INPUT_LOADERS"]

# name -> loader(cfg, data) -> np.ndarray; filled by the methods that need augmentation outputs.
INPUT_LOADERS: dict = {}


def load_method_inputs(cfg, data: DatasetDir) -> dict[str, np.ndarray]:
    """Arrays for every augmentation output the configured method requires."""
    from bridgerec.methods import method_class

    needed = method_class(cfg.method.name).required_augmentations
    missing = [n for n in needed if n not in INPUT_LOADERS]
    if missing:
        raise ValueError(f"method {cfg.method.name!r} needs inputs {missing} that no loader provides")
    return {name: INPUT_LOADERS[name](cfg, data) for name in needed}
