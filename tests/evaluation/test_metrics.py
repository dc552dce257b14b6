"""Per-user ranking metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from bridgerec.evaluation.metrics import (
    METRIC_NAMES,
    compute_metrics,
    hit_rate,
    metric_key,
    mrr,
    ndcg,
    precision,
    recall,
)

# Four users, K_max = 4 (1 = the item at that rank is relevant).
HITS = np.array(
    [
        [0, 1, 0, 1],  # u0: hits at ranks 2 and 4, |R| = 3
        [1, 0, 0, 0],  # u1: hit at rank 1, |R| = 1
        [0, 0, 0, 0],  # u2: no hit, |R| = 2
        [1, 1, 1, 0],  # u3: hits at ranks 1..3, |R| = 5 (more relevant items than K_max)
    ],
    dtype=bool,
)
N_REL = np.array([3, 1, 2, 5])
KS = [1, 2, 4]


def _disc(r: int) -> float:
    """1 / log2(r + 1), the DCG discount of rank r."""
    return 1.0 / np.log2(r + 1)


def test_recall_hand_computed() -> None:
    out = recall(HITS, N_REL, KS)
    assert list(out) == ["recall@1", "recall@2", "recall@4"]
    # u0: 0/3, 1/3, 2/3 | u1: 1/1 everywhere | u2: 0 | u3: 1/5, 2/5, 3/5
    np.testing.assert_allclose(out["recall@1"], [0.0, 1.0, 0.0, 0.2])
    np.testing.assert_allclose(out["recall@2"], [1 / 3, 1.0, 0.0, 0.4])
    np.testing.assert_allclose(out["recall@4"], [2 / 3, 1.0, 0.0, 0.6])


def test_precision_hand_computed() -> None:
    out = precision(HITS, N_REL, KS)
    # hits in top K divided by K: u0 0/1, 1/2, 2/4 | u1 1/1, 1/2, 1/4 | u2 0 | u3 1/1, 2/2, 3/4
    np.testing.assert_allclose(out["precision@1"], [0.0, 1.0, 0.0, 1.0])
    np.testing.assert_allclose(out["precision@2"], [0.5, 0.5, 0.0, 1.0])
    np.testing.assert_allclose(out["precision@4"], [0.5, 0.25, 0.0, 0.75])


def test_hit_rate_hand_computed() -> None:
    out = hit_rate(HITS, N_REL, KS)
    # u0's first hit is at rank 2, so HR@1 = 0 and HR@2 = HR@4 = 1
    np.testing.assert_array_equal(out["hr@1"], [0.0, 1.0, 0.0, 1.0])
    np.testing.assert_array_equal(out["hr@2"], [1.0, 1.0, 0.0, 1.0])
    np.testing.assert_array_equal(out["hr@4"], [1.0, 1.0, 0.0, 1.0])


def test_mrr_hand_computed() -> None:
    out = mrr(HITS, N_REL, KS)
    # first hit: u0 rank 2 (1/2 once K >= 2), u1 rank 1, u2 none, u3 rank 1
    np.testing.assert_allclose(out["mrr@1"], [0.0, 1.0, 0.0, 1.0])
    np.testing.assert_allclose(out["mrr@2"], [0.5, 1.0, 0.0, 1.0])
    np.testing.assert_allclose(out["mrr@4"], [0.5, 1.0, 0.0, 1.0])


def test_ndcg_hand_computed() -> None:
    out = ndcg(HITS, N_REL, KS)
    d1, d2, d3, d4 = _disc(1), _disc(2), _disc(3), _disc(4)  # 1, 0.6309, 0.5, 0.4307
    # u0, hits [0,1,0,1], |R| = 3:
    #   @1: DCG = 0                         -> 0
    #   @2: DCG = 1/log2(3); IDCG over min(3,2) = 2 positions = 1 + 1/log2(3)  -> 0.38685
    #   @4: DCG = 1/log2(3) + 1/log2(5); IDCG over min(3,4) = 3 positions
    #       = 1 + 1/log2(3) + 1/log2(4)  -> 1.06161 / 2.13093 = 0.49819
    u0 = [0.0, d2 / (d1 + d2), (d2 + d4) / (d1 + d2 + d3)]
    np.testing.assert_allclose(u0, [0.0, 0.38685280723454163, 0.49818925746641285])
    # u1, hit at rank 1, |R| = 1: DCG = IDCG = 1 at every K
    u1 = [1.0, 1.0, 1.0]
    # u2: no hits -> 0
    u2 = [0.0, 0.0, 0.0]
    # u3, hits [1,1,1,0], |R| = 5: @1 = 1/1, @2 = (1 + d2) / (1 + d2) = 1,
    #   @4: DCG = 1 + d2 + d3; IDCG over min(5,4) = 4 positions = 1 + d2 + d3 + d4 -> 0.83187
    u3 = [1.0, 1.0, (d1 + d2 + d3) / (d1 + d2 + d3 + d4)]
    np.testing.assert_allclose(u3[2], 0.8318724637288826)
    expected = np.array([u0, u1, u2, u3])  # (users, len(KS))
    for j, k in enumerate(KS):
        np.testing.assert_allclose(out[f"ndcg@{k}"], expected[:, j])


def test_compute_metrics_keys_and_agreement() -> None:
    out = compute_metrics(HITS, N_REL, [4, 1, 2, 2])  # unsorted, repeated ks are normalised
    assert list(out) == [metric_key(n, k) for n in METRIC_NAMES for k in (1, 2, 4)]
    np.testing.assert_array_equal(out["ndcg@4"], ndcg(HITS, N_REL, [4])["ndcg@4"])
    assert all(v.shape == (4,) and v.dtype == np.float64 for v in out.values())
    only = compute_metrics(HITS, N_REL, [2], names=["hr"])
    assert list(only) == ["hr@2"]


def test_integer_hits_are_accepted() -> None:
    out = recall(HITS.astype(np.int8), N_REL, [4])
    np.testing.assert_allclose(out["recall@4"], [2 / 3, 1.0, 0.0, 0.6])


@pytest.mark.parametrize("fn", [recall, ndcg, hit_rate, mrr, precision])
def test_users_without_relevant_items_are_rejected(fn) -> None:
    with pytest.raises(ValueError, match="n_relevant"):
        fn(HITS, np.array([3, 1, 0, 5]), KS)


def test_invalid_inputs() -> None:
    with pytest.raises(ValueError, match="K must be"):
        recall(HITS, N_REL, [5])  # K beyond K_max = 4
    with pytest.raises(ValueError, match="K must be"):
        recall(HITS, N_REL, [0])
    with pytest.raises(ValueError, match="more hits"):
        recall(HITS, np.array([1, 1, 2, 5]), KS)  # u0 has 2 hits but |R| = 1
    with pytest.raises(ValueError, match="shape"):
        recall(HITS, N_REL[:3], KS)
    with pytest.raises(ValueError, match="2-D"):
        recall(HITS[0], N_REL, KS)
    with pytest.raises(ValueError, match="unknown metric"):
        compute_metrics(HITS, N_REL, KS, names=["auc"])
