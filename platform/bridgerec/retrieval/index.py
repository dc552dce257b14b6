"""faiss indexes over item vectors: inner product (domain-model retrieval) or L2 (text grounding).

An :class:`ItemIndex` is exact (``IndexFlatIP`` / ``IndexFlatL2``) up to
``retrieval.exact_max_items`` items and approximate above (HNSW or IVF, parameters from
:class:`~bridgerec.retrieval.config.RetrievalConfig`). Row ``i`` of the vectors is item id ``i``.

:meth:`ItemIndex.search` takes a batch of queries and, per query, the item ids it must not return
(a CSR over the batch: ``exclude_indptr``, ``exclude_indices``). It asks faiss for ``k`` plus the
longest exclusion list, masks the excluded candidates for the whole batch at once (sorted-key
membership, no Python loop per query) and keeps the first ``k``. Results are ordered by score
descending, then item id ascending (the pyfunc recommender's order), so an exact index gives the
same ranking as a brute-force matrix product. Scores are "higher is better": the inner product, or
the negated squared L2 distance.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

import numpy as np

from bridgerec._csr import contains
from bridgerec.retrieval.config import RetrievalConfig

__all__ = ["ItemIndex", "build_index", "load_index", "exact_topk", "Metric"]

Metric = Literal["ip", "l2"]
_META = ".json"  # the side file beside an index file: metric, kind, size, search parameters


def _faiss():
    import faiss

    return faiss


def _as_matrix(x: Any, what: str) -> np.ndarray:
    a = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if a.ndim != 2:
        raise ValueError(f"{what} must be a 2-D (n, dim) array, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{what} holds NaN or infinite values")
    return a


@dataclass
class ItemIndex:
    """A faiss index over ``n`` item vectors with its metric and kind (flat, hnsw, ivf)."""

    index: Any
    metric: Metric
    kind: str
    n: int
    dim: int
    build_seconds: float = 0.0
    params: dict = field(default_factory=dict)

    # -- searching -------------------------------------------------------------------------
    def search(self, queries: Any, k: int, exclude_indptr: Optional[np.ndarray] = None,
               exclude_indices: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` per query: ``(ids, scores)``, both ``(len(queries), k)``; rows with fewer than
        ``k`` admissible items are padded with id -1 and score -inf."""
        q = _as_matrix(queries, "queries")
        if q.shape[1] != self.dim:
            raise ValueError(f"queries have dimension {q.shape[1]}, the index {self.dim}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        n_q = len(q)
        if exclude_indptr is None:
            exclude_indptr, exclude_indices = np.zeros(n_q + 1, np.int64), np.zeros(0, np.int64)
        exclude_indptr = np.asarray(exclude_indptr, dtype=np.int64)
        exclude_indices = np.asarray(exclude_indices, dtype=np.int64)
        if len(exclude_indptr) != n_q + 1:
            raise ValueError(f"exclude_indptr has {len(exclude_indptr)} entries for {n_q} queries (need {n_q + 1})")
        longest = int(np.diff(exclude_indptr).max()) if n_q else 0
        fetch = min(self.n, k + longest)
        self._prepare(fetch)
        dist, ids = self.index.search(q, fetch) if n_q else (np.zeros((0, fetch), np.float32), np.zeros((0, fetch), np.int64))
        scores = (dist if self.metric == "ip" else -dist).astype(np.float32, copy=False)
        ids = ids.astype(np.int64, copy=False)
        bad = ids < 0
        if exclude_indices.size:
            rows = np.repeat(np.arange(n_q, dtype=np.int64), np.diff(exclude_indptr))
            keys = np.sort(rows * self.n + exclude_indices)
            bad |= contains(keys, np.arange(n_q, dtype=np.int64)[:, None] * self.n + np.maximum(ids, 0))
        scores = np.where(bad, -np.inf, scores).astype(np.float32)
        ids = np.where(bad, np.iinfo(np.int64).max, ids)  # sorts after every real id on ties
        order = np.lexsort((ids, -scores), axis=1)[:, :k]
        ids, scores = np.take_along_axis(ids, order, 1), np.take_along_axis(scores, order, 1)
        ids = np.where(np.isfinite(scores), ids, -1)
        if ids.shape[1] < k:  # fewer items than k in the whole catalog
            pad = k - ids.shape[1]
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        return ids, scores

    def _prepare(self, fetch: int) -> None:
        if self.kind == "hnsw":
            self.index.hnsw.efSearch = max(int(self.params.get("ef_search", 64)), fetch)
        elif self.kind == "ivf":
            self.index.nprobe = int(self.params.get("nprobe", 16))

    # -- saving ----------------------------------------------------------------------------
    def save(self, path: str) -> str:
        """Write the index to ``path`` and its description to ``path + '.json'``; returns ``path``."""
        faiss = _faiss()
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        index = self.index
        if hasattr(faiss, "index_gpu_to_cpu") and type(index).__name__.startswith("Gpu"):
            index = faiss.index_gpu_to_cpu(index)
        faiss.write_index(index, path)
        meta = {"metric": self.metric, "kind": self.kind, "n": self.n, "dim": self.dim,
                "build_seconds": round(self.build_seconds, 3), "params": self.params}
        with open(path + _META, "w") as fh:
            json.dump(meta, fh, indent=1)
        return path

    def memory_bytes(self) -> int:
        """Size of the serialised index (what it holds in memory, to within a few percent)."""
        faiss = _faiss()
        return int(faiss.serialize_index(self.index).nbytes)


def _kind_for(n: int, cfg: RetrievalConfig) -> str:
    return "flat" if n <= cfg.exact_max_items else cfg.approximate


def build_index(vectors: Any, metric: Metric, cfg: Optional[RetrievalConfig] = None, *, kind: Optional[str] = None,
                seed: int = 0) -> ItemIndex:
    """Build an index over ``vectors`` (row = item id). ``kind`` overrides the size rule
    (``flat``, ``hnsw``, ``ivf``)."""
    cfg = cfg or RetrievalConfig()
    faiss = _faiss()
    if cfg.threads:
        faiss.omp_set_num_threads(cfg.threads)
    x = _as_matrix(vectors, "item vectors")
    if metric not in ("ip", "l2"):
        raise ValueError(f"metric must be 'ip' or 'l2', got {metric!r}")
    n, dim = x.shape
    if n == 0:
        raise ValueError("cannot build an index over 0 items")
    kind = kind or _kind_for(n, cfg)
    fmetric = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
    t0 = time.perf_counter()
    params: dict = {}
    if kind == "flat":
        index = faiss.IndexFlatIP(dim) if metric == "ip" else faiss.IndexFlatL2(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, fmetric)
        index.hnsw.efConstruction = cfg.hnsw_ef_construction
        params = {"m": cfg.hnsw_m, "ef_construction": cfg.hnsw_ef_construction, "ef_search": cfg.hnsw_ef_search}
    elif kind == "ivf":
        nlist = cfg.ivf_nlist or max(1, min(n // 39, int(4 * math.sqrt(n))))
        quantizer = faiss.IndexFlatIP(dim) if metric == "ip" else faiss.IndexFlatL2(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, fmetric)
        rng = np.random.default_rng(seed)
        m = max(cfg.train_sample, 39 * nlist)  # faiss wants >= 39 points per cell
        sample = x if n <= m else x[np.sort(rng.choice(n, m, replace=False))]
        index.train(sample)
        params = {"nlist": nlist, "nprobe": cfg.ivf_nprobe}
    else:
        raise ValueError(f"index kind must be flat, hnsw or ivf, got {kind!r}")
    index.add(x)
    out = ItemIndex(index, metric, kind, n, dim, time.perf_counter() - t0, params)
    return _maybe_gpu(out, cfg)


def _maybe_gpu(idx: ItemIndex, cfg: RetrievalConfig) -> ItemIndex:
    if not cfg.use_gpu:
        return idx
    faiss = _faiss()
    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() < 1:
        raise RuntimeError("retrieval.use_gpu is true but this faiss has no GPU support or sees no GPU "
                           "(install faiss-gpu on a GPU machine, or set retrieval.use_gpu=false)")
    if idx.kind == "hnsw":
        raise ValueError("retrieval.use_gpu: faiss has no GPU HNSW index; set retrieval.approximate=ivf")
    res = faiss.StandardGpuResources()
    idx.index = faiss.index_cpu_to_gpu(res, 0, idx.index)
    idx.params = {**idx.params, "gpu": 0}
    return idx


def load_index(path: str, cfg: Optional[RetrievalConfig] = None) -> ItemIndex:
    """Read an index written by :meth:`ItemIndex.save` (search parameters from ``cfg`` when given)."""
    if not os.path.exists(path) or not os.path.exists(path + _META):
        raise FileNotFoundError(f"no faiss index at {path} (with its description {os.path.basename(path)}{_META})")
    faiss = _faiss()
    with open(path + _META) as fh:
        meta = json.load(fh)
    index = faiss.read_index(path)
    params = dict(meta.get("params") or {})
    if cfg is not None and meta["kind"] == "hnsw":
        params["ef_search"] = cfg.hnsw_ef_search
    if cfg is not None and meta["kind"] == "ivf":
        params["nprobe"] = cfg.ivf_nprobe
    out = ItemIndex(index, meta["metric"], meta["kind"], int(meta["n"]), int(meta["dim"]),
                    float(meta.get("build_seconds", 0.0)), params)
    return _maybe_gpu(out, cfg) if cfg is not None else out


def exact_topk(queries: Any, items: Any, k: int, metric: Metric = "ip", exclude_indptr: Optional[np.ndarray] = None,
               exclude_indices: Optional[np.ndarray] = None, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-``k`` with torch matrix products: the reference the index is checked and
    benchmarked against. Same exclusion, order and padding as :meth:`ItemIndex.search`."""
    import torch

    q = torch.from_numpy(_as_matrix(queries, "queries"))
    x = torch.from_numpy(_as_matrix(items, "item vectors"))
    n = x.shape[0]
    kk = min(k, n)
    out_ids = np.full((len(q), k), -1, dtype=np.int64)
    out_scores = np.full((len(q), k), -np.inf, dtype=np.float32)
    norms = (x * x).sum(1) if metric == "l2" else None
    for start in range(0, len(q), chunk):
        qs = q[start : start + chunk]
        s = qs @ x.T
        if metric == "l2":
            s = 2 * s - norms[None, :] - (qs * qs).sum(1, keepdim=True)
        if exclude_indptr is not None:
            lo, hi = int(exclude_indptr[start]), int(exclude_indptr[min(start + chunk, len(q))])
            rows = np.repeat(np.arange(len(qs)), np.diff(exclude_indptr[start : start + len(qs) + 1]))
            s[torch.from_numpy(rows), torch.from_numpy(np.asarray(exclude_indices[lo:hi], dtype=np.int64))] = -math.inf
        vals, idx = torch.topk(s, kk, dim=1)
        ids, scores = idx.numpy().astype(np.int64), vals.numpy().astype(np.float32)
        order = np.lexsort((ids, -scores), axis=1)
        ids, scores = np.take_along_axis(ids, order, 1), np.take_along_axis(scores, order, 1)
        out_ids[start : start + len(qs), :kk] = np.where(np.isfinite(scores), ids, -1)
        out_scores[start : start + len(qs), :kk] = scores
    return out_ids, out_scores
