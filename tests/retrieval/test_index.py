"""faiss item indexes: exact search equals brute force (with per-query exclusions), the approximate
indexes keep their recall, save/load round-trips, and bad input is refused with a reason."""

from __future__ import annotations

import numpy as np
import pytest

from bridgerec.retrieval.config import RetrievalConfig
from bridgerec.retrieval.index import build_index, exact_topk, load_index


def _data(n=2000, d=32, q=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(np.float32), rng.standard_normal((q, d)).astype(np.float32)


def _clustered(n=5000, d=32, q=100, clusters=50, seed=0):
    """Embeddings with structure, as trained ones have (uniform noise is the worst case of IVF)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d)).astype(np.float32) * 3
    items = centres[rng.integers(0, clusters, n)] + rng.standard_normal((n, d)).astype(np.float32)
    queries = centres[rng.integers(0, clusters, q)] + rng.standard_normal((q, d)).astype(np.float32)
    return items, queries


def _exclusions(q: int, n: int, seed=1):
    rng = np.random.default_rng(seed)
    lists = [np.unique(rng.integers(0, n, size=rng.integers(0, 40))) for _ in range(q)]
    lists[3] = np.arange(0, n, 2)  # one heavy user: half the catalog excluded
    indptr = np.zeros(q + 1, dtype=np.int64)
    np.cumsum([len(x) for x in lists], out=indptr[1:])
    return lists, indptr, np.concatenate(lists).astype(np.int64)


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_exact_index_equals_brute_force_with_exclusions(metric):
    items, queries = _data()
    lists, indptr, indices = _exclusions(len(queries), len(items))
    index = build_index(items, metric)
    assert index.kind == "flat"
    ids, scores = index.search(queries, 10, indptr, indices)
    ref_ids, ref_scores = exact_topk(queries, items, 10, metric, indptr, indices)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-4, atol=1e-3)
    for row, excluded in enumerate(lists):
        assert not set(ids[row].tolist()) & set(excluded.tolist())
    assert (ids[3] % 2 == 1).all()  # the heavy user's 10 come from the odd half


def test_results_sorted_by_score_then_id_and_padded():
    items = np.ones((5, 4), dtype=np.float32)  # every score ties
    index = build_index(items, "ip")
    ids, scores = index.search(np.ones((1, 4), dtype=np.float32), 8, np.array([0, 2]), np.array([1, 3]))
    assert ids[0].tolist() == [0, 2, 4, -1, -1, -1, -1, -1]
    assert np.isneginf(scores[0, 3:]).all()


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_index_recall(kind):
    items, queries = _clustered()
    cfg = RetrievalConfig(exact_max_items=1000, approximate=kind, ivf_nprobe=16)
    index = build_index(items, "ip", cfg)
    assert index.kind == kind
    ids, _ = index.search(queries, 10)
    ref, _ = exact_topk(queries, items, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids.tolist(), ref.tolist())])
    assert recall >= 0.9, f"{kind} recall@10 {recall:.3f}"


def test_save_load_round_trip(tmp_path):
    items, queries = _data(n=3000)
    cfg = RetrievalConfig(exact_max_items=100, approximate="hnsw", hnsw_ef_search=128)
    index = build_index(items, "ip", cfg)
    path = index.save(str(tmp_path / "idx.faiss"))
    loaded = load_index(path, cfg)
    assert (loaded.kind, loaded.n, loaded.dim, loaded.metric) == ("hnsw", 3000, 32, "ip")
    np.testing.assert_array_equal(loaded.search(queries, 5)[0], index.search(queries, 5)[0])
    with pytest.raises(FileNotFoundError, match="no faiss index"):
        load_index(str(tmp_path / "missing.faiss"))


def test_bad_input_is_refused():
    items, queries = _data(n=100)
    index = build_index(items, "ip")
    with pytest.raises(ValueError, match="dimension"):
        index.search(queries[:, :5], 3)
    with pytest.raises(ValueError, match="k must be"):
        index.search(queries, 0)
    with pytest.raises(ValueError, match="exclude_indptr"):
        index.search(queries, 3, np.array([0, 1]), np.array([2]))
    with pytest.raises(ValueError, match="NaN"):
        build_index(np.full((3, 4), np.nan), "ip")
    with pytest.raises(ValueError, match="metric"):
        build_index(items, "cos")
    with pytest.raises(RuntimeError, match="use_gpu"):
        build_index(items, "ip", RetrievalConfig(use_gpu=True))
