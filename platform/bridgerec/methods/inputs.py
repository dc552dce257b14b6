"""Loading the inputs a method declares (``Method.required_augmentations``).

:data:`INPUT_LOADERS` maps an input name to ``loader(cfg, data) -> np.ndarray``. The built-in
loaders are declared here by name (imported on first use), so which module provides an input is
written in one place instead of being registered as a side effect of importing a method module.
Other inputs register with ``INPUT_LOADERS.register(name, loader)``.
"""

from __future__ import annotations

import os

import numpy as np

from bridgerec._registry import Registry
from bridgerec.data.dataset import DatasetDir

__all__ = ["load_method_inputs", "pin_method_inputs", "INPUT_LOADERS"]

INPUT_LOADERS: Registry = Registry(
    "method input",
    lazy={
        "user_semantic": "bridgerec.methods.semantic:user_semantic",
        "item_semantic": "bridgerec.methods.semantic:item_semantic",
        "train_interactions": "bridgerec.methods.semantic:train_interactions",
        "bdlm": "bridgerec.methods.bdlm:bdlm_context",
    },
)
"""Input name -> ``loader(cfg, data)``: an array, or an LLM method's context object (``bdlm``)."""


def load_method_inputs(cfg, data: DatasetDir) -> dict[str, np.ndarray]:
    """Arrays for every input the configured method requires."""
    from bridgerec.methods.registry import method_class

    needed = method_class(cfg.method.name).required_augmentations
    missing = [n for n in needed if n not in INPUT_LOADERS]
    if missing:
        raise ValueError(f"method {cfg.method.name!r} needs inputs {missing} that no loader provides")
    return {name: INPUT_LOADERS.get_plugin(name)(cfg, data) for name in needed}


_READS_TEXT_EMBEDDINGS = {"user_semantic", "item_semantic"}
"""Inputs computed from a ``text_embeddings`` augmentation output (see :mod:`bridgerec.methods.semantic`)."""


def pin_method_inputs(cfg, data: DatasetDir) -> dict[str, str]:
    """Decide once, on the driver, which augmentation output the configured method consumes.

    Without ``method.semantic.embeddings_dir`` the semantic inputs read the newest matching
    ``text_embeddings`` output; this resolves that choice now and writes it into
    ``cfg.method.semantic.embeddings_dir``, so every training worker and the later evaluation
    read the same output (not whatever is newest when each of them starts) and the run's
    params name it. Returns what to record with the run: ``input.text_embeddings`` =
    ``text_embeddings/<content hash>`` (or ``none``: item texts are encoded by the method) and
    its path. Methods that read no augmentation output return ``{}``.
    """
    from bridgerec.methods.registry import method_class

    if not _READS_TEXT_EMBEDDINGS & set(method_class(cfg.method.name).required_augmentations):
        return {}
    from bridgerec.methods.semantic import find_text_embeddings

    path = find_text_embeddings(cfg, data)
    if path is None:
        return {"input.text_embeddings": "none"}
    cfg.method.semantic.embeddings_dir = path
    return {"input.text_embeddings": f"text_embeddings/{os.path.basename(path)}", "input.text_embeddings.path": path}
