"""Config section of the faiss item indexes (``cfg.retrieval``)."""

from __future__ import annotations

from typing import Literal

from bridgerec._config_base import Section

__all__ = ["RetrievalConfig"]


class RetrievalConfig(Section):
    grounding_index: bool = True
    """Ship the grounding index (text -> items) in the serving bundle: every item title is encoded
    once with the text encoder (``encoder``) when the model is logged."""
    exact_max_items: int = 200_000
    """Catalogs up to this many items get an exact index (IndexFlatIP / IndexFlatL2); larger ones the
    approximate index below."""
    approximate: Literal["hnsw", "ivf"] = "hnsw"
    """Approximate index for large catalogs: hnsw (IndexHNSWFlat: no training, best recall per query
    time here) or ivf (IndexIVFFlat: k-means trained, less memory per item)."""
    hnsw_m: int = 32
    """HNSW graph degree (links per node): more is better recall, more memory and build time."""
    hnsw_ef_construction: int = 80
    """HNSW candidate list while building."""
    hnsw_ef_search: int = 64
    """HNSW candidate list while searching (raised to the number of candidates a query asks for)."""
    ivf_nlist: int = 0
    """IVF cells; 0 picks 4 * sqrt(items)."""
    ivf_nprobe: int = 16
    """IVF cells visited per query."""
    train_sample: int = 100_000
    """Vectors that train the IVF quantiser (raised to 39 per cell, faiss's minimum)."""
    use_gpu: bool = False
    """Move the index to GPU 0 at load time (needs faiss-gpu and a visible GPU; an exact or IVF index)."""
    threads: int = 0
    """faiss OpenMP threads in this process; 0 keeps faiss's default (all cores)."""
