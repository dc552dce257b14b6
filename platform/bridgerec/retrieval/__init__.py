"""faiss item indexes: build, save, load and search with per-query exclusions (:mod:`.index`).

The package face stays light: importing :mod:`bridgerec.retrieval.config` never imports faiss.
"""

from bridgerec._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "ItemIndex": "index",
    "build_index": "index",
    "load_index": "index",
    "exact_topk": "index",
    "RetrievalConfig": "config",
})
