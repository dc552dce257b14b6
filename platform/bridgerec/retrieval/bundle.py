"""The index files of a serving bundle: what a trained run ships so a server only loads.

Written beside the pyfunc recommender's artifacts (or under a run's ``serving/`` artifacts by
``bridgerec index build``)::

    retrieval.faiss (+ .json)   inner-product index over the item embeddings (domain retrieval)
    grounding.faiss (+ .json)   L2 index over the encoder's embeddings of the item titles (text
                                -> items); only when an encoder is given
    serving.json                what the server needs to rebuild the query side: the encoder
                                settings of the grounding index, the index kinds, sizes, times
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Optional, Sequence

import numpy as np

from bridgerec.retrieval.config import RetrievalConfig
from bridgerec.retrieval.index import build_index

__all__ = ["RETRIEVAL_INDEX", "GROUNDING_INDEX", "SERVING_META", "write_indexes", "bundle_files"]

RETRIEVAL_INDEX = "retrieval.faiss"
GROUNDING_INDEX = "grounding.faiss"
SERVING_META = "serving.json"


def write_indexes(out_dir: str, item_embeddings: np.ndarray, titles: Sequence[str], cfg: RetrievalConfig,
                  encode: Optional[Callable[[list[str]], np.ndarray]] = None,
                  encoder_settings: Optional[dict[str, Any]] = None) -> dict[str, str]:
    """Build and save the bundle's indexes into ``out_dir``; returns {file name: path} of every file
    written (index files, their descriptions and ``serving.json``)."""
    os.makedirs(out_dir, exist_ok=True)
    if len(titles) != len(item_embeddings):
        raise ValueError(f"{len(titles)} titles for {len(item_embeddings)} item embeddings")
    retrieval = build_index(item_embeddings, "ip", cfg)
    retrieval.save(os.path.join(out_dir, RETRIEVAL_INDEX))
    meta: dict[str, Any] = {"retrieval": {"kind": retrieval.kind, "n": retrieval.n, "dim": retrieval.dim,
                                          "build_seconds": round(retrieval.build_seconds, 3)}}
    if encode is not None:
        text_emb = np.asarray(encode([str(t) for t in titles]), dtype=np.float32)
        grounding = build_index(text_emb, "l2", cfg)
        grounding.save(os.path.join(out_dir, GROUNDING_INDEX))
        meta["grounding"] = {"kind": grounding.kind, "n": grounding.n, "dim": grounding.dim, "text": "title",
                             "build_seconds": round(grounding.build_seconds, 3), "encoder": encoder_settings or {}}
    with open(os.path.join(out_dir, SERVING_META), "w") as fh:
        json.dump(meta, fh, indent=1)
    return bundle_files(out_dir)


def bundle_files(out_dir: str) -> dict[str, str]:
    """{file name: path} of the bundle index files present in ``out_dir``."""
    names = [SERVING_META] + [n + s for n in (RETRIEVAL_INDEX, GROUNDING_INDEX) for s in ("", ".json")]
    return {n: os.path.join(out_dir, n) for n in names if os.path.exists(os.path.join(out_dir, n))}
