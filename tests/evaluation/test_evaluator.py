"""Full and sampled ranking, masking, ties, determinism and slices on tiny hand-built data."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from bridgerec.evaluation import evaluator
from bridgerec.evaluation import (
    CSR,
    SLICE_NAMES,
    EvalResult,
    full_ranking,
    item_group_masks,
    long_tail_user_mask,
    popularity_scores,
    sampled_ranking,
)


def _pairs(d: dict[int, list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """{user: [items]} -> (uids, iids) int64 arrays."""
    u = [uid for uid, items in d.items() for _ in items]
    i = [iid for items in d.values() for iid in items]
    return np.array(u, dtype=np.int64), np.array(i, dtype=np.int64)


def _matrix_fn(scores: torch.Tensor):
    """score_fn looking rows up in a fixed (n_users, n_items) matrix."""
    return lambda users: scores[users]


# ---------------------------------------------------------------------------------------------
# CSR and slice helpers
# ---------------------------------------------------------------------------------------------


def test_csr_sorts_dedupes_and_gathers() -> None:
    csr = CSR.from_pairs(np.array([2, 0, 2, 2, 0]), np.array([5, 3, 1, 5, 3]), n_rows=4)
    np.testing.assert_array_equal(csr.indptr, [0, 1, 1, 3, 3])  # (0,3) and (2,5) repeated once
    np.testing.assert_array_equal(csr.row(2), [1, 5])
    np.testing.assert_array_equal(csr.counts(), [1, 0, 2, 0])
    pos, cols = csr.gather(np.array([2, 1, 0]))
    np.testing.assert_array_equal(pos, [0, 0, 2])  # row 2 -> position 0, row 0 -> position 2
    np.testing.assert_array_equal(cols, [1, 5, 3])
    np.testing.assert_array_equal(csr.keys(10), [3, 21, 25])  # row * 10 + col, ascending


def test_item_group_masks() -> None:
    counts = np.array([4, 3, 2, 1, 0, 0, 0, 0, 0, 0])
    g = item_group_masks(counts, cold_item_max_train=1, head_item_fraction=0.2)
    assert np.flatnonzero(g["head_items"]).tolist() == [0, 1]  # floor(0.2 * 10) = 2 most popular
    assert np.flatnonzero(g["tail_items"]).tolist() == list(range(2, 10))
    assert np.flatnonzero(g["cold_items"]).tolist() == list(range(3, 10))  # count <= 1
    # ties at the head boundary go to the lower item id; never-seen items are never head
    tied = item_group_masks(np.array([0, 2, 2, 2, 0, 0, 0, 0, 0, 0]), head_item_fraction=0.2)
    assert np.flatnonzero(tied["head_items"]).tolist() == [1, 2]
    assert not item_group_masks(np.zeros(10, dtype=np.int64))["head_items"].any()


def test_long_tail_user_mask() -> None:
    # sorted counts [0, 2, 3, 4]: 0.2 quantile = 0 + 0.6 * (2 - 0) = 1.2 (linear interpolation)
    np.testing.assert_array_equal(long_tail_user_mask(np.array([4, 3, 2, 0]), 0.2), [0, 0, 0, 1])
    np.testing.assert_array_equal(long_tail_user_mask(np.array([4, 3, 2, 0]), 1.0), [1, 1, 1, 1])


# ---------------------------------------------------------------------------------------------
# Full ranking
# ---------------------------------------------------------------------------------------------

# 4 users x 6 items; user 3 has no truth item and is not evaluated.
SCORES = torch.tensor(
    [
        [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
        [0.1, 0.5, 0.5, 0.5, 0.2, 0.3],  # items 1, 2, 3 tie
        [0.6, 0.5, 0.4, 0.3, 0.2, 0.1],
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    ]
)
TRAIN = _pairs({0: [0], 1: [5], 2: [0, 1]})
TRUTH = _pairs({0: [2], 1: [3], 2: [4]})
VALID = _pairs({2: [2]})


def test_full_ranking_masks_train_and_breaks_ties_by_item_id() -> None:
    res = full_ranking(_matrix_fn(SCORES), 4, 6, TRAIN, TRUTH, ks=[1, 2, 3])
    np.testing.assert_array_equal(res.users, [0, 1, 2])
    # u0: item 0 (train) masked -> list 1, 2, ... -> truth 2 at rank 2 (rank 3 without masking)
    # u1: item 5 masked; 1, 2, 3 tie at 0.5 -> list 1, 2, 3, 4, 0 -> truth 3 at rank 3
    # u2: items 0, 1 masked -> list 2, 3, 4, 5 -> truth 4 at rank 3
    np.testing.assert_allclose(res.per_user["mrr@3"], [1 / 2, 1 / 3, 1 / 3])
    np.testing.assert_array_equal(res.per_user["hr@2"], [1, 0, 0])
    assert res.overall["hr@3"] == 1.0
    assert res.overall["mrr@3"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 3) / 3)
    assert res.n_users["all"] == 3


def test_full_ranking_exclude_masks_validation_items() -> None:
    res = full_ranking(_matrix_fn(SCORES), 4, 6, TRAIN, TRUTH, ks=[1, 2, 3], exclude=VALID)
    # u2: items 0, 1 (train) and 2 (validation) masked -> list 3, 4, 5 -> truth 4 at rank 2
    np.testing.assert_allclose(res.per_user["mrr@3"], [1 / 2, 1 / 3, 1 / 2])


def test_full_ranking_masked_truth_and_k_equal_to_catalogue() -> None:
    # u0's truth item 0 is also in train: it stays in |R_u| but can never be retrieved.
    truth = _pairs({0: [0, 2]})
    res = full_ranking(_matrix_fn(SCORES), 4, 6, TRAIN, truth, ks=[6])
    # 5 rankable items fill ranks 1..5, the masked item 0 is an empty slot at rank 6
    np.testing.assert_allclose(res.per_user["recall@6"], [1 / 2])
    np.testing.assert_allclose(res.per_user["precision@6"], [1 / 6])


def test_full_ranking_rejects_k_beyond_catalogue() -> None:
    with pytest.raises(ValueError, match=r"K=10 is larger than the catalogue of 6 items.*eval\.ks"):
        full_ranking(_matrix_fn(SCORES), 4, 6, TRAIN, TRUTH, ks=[1, 10])


def test_full_ranking_rejects_bad_scores_and_ids() -> None:
    with pytest.raises(ValueError, match="shape"):
        full_ranking(lambda u: SCORES[u, :5], 4, 6, TRAIN, TRUTH, ks=[1])
    with pytest.raises(ValueError, match="NaN"):
        full_ranking(lambda u: torch.full((len(u), 6), float("nan")), 4, 6, TRAIN, TRUTH, ks=[1])
    with pytest.raises(ValueError, match="item ids"):
        full_ranking(_matrix_fn(SCORES), 4, 6, TRAIN, _pairs({0: [6]}), ks=[1])
    with pytest.raises(ValueError, match="no user"):
        full_ranking(_matrix_fn(SCORES), 4, 6, TRAIN, _pairs({}), ks=[1])


def _random_problem(seed: int = 0, n_users: int = 40, n_items: int = 30):
    """Integer scores in [0, 4) so ties are everywhere; random train / truth / exclude."""
    rng = np.random.default_rng(seed)
    scores = torch.from_numpy(rng.integers(0, 4, size=(n_users, n_items)).astype(np.float32))
    cells = rng.permutation(n_users * n_items)[: n_users * n_items // 2]  # distinct (u, i) cells
    u, i = cells // n_items, cells % n_items
    a, b = len(cells) * 6 // 10, len(cells) * 8 // 10
    return scores, (u[:a], i[:a]), (u[a:b], i[a:b]), (u[b:], i[b:])


def _reference_ranks(scores: np.ndarray, masked: set, u: int) -> list[int]:
    """Brute force: sort the unmasked items by (score descending, item id ascending)."""
    items = [i for i in range(scores.shape[1]) if (u, i) not in masked]
    return sorted(items, key=lambda i: (-scores[u, i], i))


def test_full_ranking_matches_brute_force_and_is_batch_size_independent() -> None:
    scores, train, truth, exclude = _random_problem()
    n_users, n_items = scores.shape
    ks = [1, 5, 10]
    results = [
        full_ranking(_matrix_fn(scores), n_users, n_items, train, truth, ks, user_batch_size=bs, exclude=exclude)
        for bs in (1, 7, 1024)
    ]
    for other in results[1:]:
        assert other.overall == results[0].overall
        assert other.slices == results[0].slices
        for key, v in results[0].per_user.items():
            np.testing.assert_array_equal(other.per_user[key], v)

    masked = set(zip(*map(np.ndarray.tolist, train))) | set(zip(*map(np.ndarray.tolist, exclude)))
    rel = {}
    for uu, ii in zip(*truth):
        rel.setdefault(int(uu), set()).add(int(ii))
    res = results[0]
    for row, u in enumerate(res.users):
        top10 = _reference_ranks(scores.numpy(), masked, int(u))[:10]
        n_hit = sum(i in rel[int(u)] for i in top10)
        assert res.per_user["recall@10"][row] == pytest.approx(n_hit / len(rel[int(u)]))
        first = next((r + 1 for r, i in enumerate(top10) if i in rel[int(u)]), None)
        assert res.per_user["mrr@10"][row] == pytest.approx(0.0 if first is None else 1 / first)


def test_popularity_baseline_with_expanded_scores() -> None:
    train = _pairs({0: [0, 1], 1: [1, 2], 2: [1], 3: [2, 4]})
    pop = popularity_scores(train, 6)
    np.testing.assert_array_equal(pop.numpy(), [1, 3, 2, 0, 1, 0])
    truth = _pairs({0: [2], 2: [3]})
    res = full_ranking(lambda u: pop.expand(len(u), -1), 4, 6, train, truth, ks=[2])
    # u0 (0, 1 masked): list 2, 4, 3, 5 -> hit at rank 1; u2 (1 masked): list 2, 0, 4, ... -> miss
    np.testing.assert_array_equal(res.per_user["hr@2"], [1.0, 0.0])
    np.testing.assert_array_equal(pop.numpy(), [1, 3, 2, 0, 1, 0])  # not written to


# ---------------------------------------------------------------------------------------------
# Slices (full ranking)
# ---------------------------------------------------------------------------------------------


def test_slices_hand_built() -> None:
    n_users, n_items = 5, 10
    # training counts per item: 0 -> 4, 1 -> 3, 2 -> 2, 3 -> 1, others 0
    # head (floor(0.2 * 10) = 2 most popular) = {0, 1}; tail = {2..9}; cold (<= 1) = {3..9}
    train = _pairs({0: [0, 1, 2, 3], 1: [0, 1, 2], 2: [0, 1], 3: [0]})
    truth = _pairs({0: [5, 6], 1: [3], 2: [9], 4: [0, 4]})
    scores = torch.arange(10, 0, -1, dtype=torch.float32).expand(n_users, -1)  # item 0 best
    res = full_ranking(lambda u: scores[u], n_users, n_items, train, truth, ks=[1, 5], cold_item_max_train=1)
    # Ranked lists after masking, and per-user recall@1 / recall@5:
    #   u0 (train 0-3): 4 5 6 7 8 | truth {5, 6}: @1 0,   @5 2/2
    #   u1 (train 0-2): 3 4 5 6 7 | truth {3}:    @1 1,   @5 1
    #   u2 (train 0-1): 2 3 4 5 6 | truth {9}:    @1 0,   @5 0
    #   u4 (no train):  0 1 2 3 4 | truth {0, 4}: @1 1/2, @5 2/2
    assert res.overall["recall@1"] == pytest.approx((0 + 1 + 0 + 0.5) / 4)
    assert res.overall["recall@5"] == pytest.approx((1 + 1 + 0 + 1) / 4)
    # users' training counts: u0 4, u1 3, u2 2, u4 0; 0.2 quantile of [0, 2, 3, 4] = 1.2
    # -> long-tail users = {u4}, head users = {u0, u1, u2}
    assert res.slices["long_tail_users"]["recall@1"] == pytest.approx(0.5)
    assert res.slices["head_users"]["recall@1"] == pytest.approx(1 / 3)
    assert res.slices["head_users"]["recall@5"] == pytest.approx(2 / 3)
    # cold items: truth restricted to {3..9}: u0 {5, 6}, u1 {3}, u2 {9}, u4 {4} (item 0 dropped)
    #   u4: |R| = 1, item 4 at rank 5 -> recall@1 0, recall@5 1, ndcg@5 = 1 / log2(6)
    assert res.slices["cold_items"]["recall@1"] == pytest.approx((0 + 1 + 0 + 0) / 4)
    assert res.slices["cold_items"]["recall@5"] == pytest.approx((1 + 1 + 0 + 1) / 4)
    # ndcg@5: u0 hits at ranks 2, 3 with |R| = 2 -> (1/log2 3 + 1/log2 4) / (1 + 1/log2 3);
    #         u1 rank 1 -> 1; u2 -> 0; u4 -> 1/log2 6
    d = lambda r: 1 / np.log2(r + 1)  # noqa: E731
    cold_ndcg = ((d(2) + d(3)) / (d(1) + d(2)) + 1 + 0 + d(5)) / 4
    assert res.slices["cold_items"]["ndcg@5"] == pytest.approx(cold_ndcg)
    assert cold_ndcg == pytest.approx(0.5200698027129531)
    # head items {0, 1}: only u4 has one (item 0, at rank 1)
    assert res.slices["head_items"]["recall@1"] == 1.0
    # tail items {2..9}: same truth sets as cold here
    assert res.slices["tail_items"]["recall@5"] == pytest.approx(3 / 4)
    assert res.n_users == {
        "all": 4,
        "long_tail_users": 1,
        "head_users": 3,
        "cold_items": 4,
        "head_items": 1,
        "tail_items": 4,
    }
    assert list(res.slices) == list(SLICE_NAMES)


def test_empty_slice_is_omitted_but_counted() -> None:
    train = _pairs({0: [1]})
    truth = _pairs({0: [2]})
    res = full_ranking(lambda u: torch.zeros(len(u), 4), 1, 4, train, truth, ks=[1])
    assert res.n_users["head_items"] == 0 and "head_items" not in res.slices  # item 2 is not head


def test_flat_keys_are_valid_mlflow_metric_names() -> None:
    res = full_ranking(_matrix_fn(SCORES), 4, 6, TRAIN, TRUTH, ks=[1, 3])
    flat = res.flat()
    assert flat["recall_at_3"] == res.overall["recall@3"]
    assert flat["long_tail_users/ndcg_at_1"] == res.slices["long_tail_users"]["ndcg@1"]
    # mlflow/utils/validation.py (3.17): names must match ^[/\w.\- :]*$ ('@' is rejected)
    assert all(re.fullmatch(r"[/\w.\- :]+", k) and "@" not in k for k in flat)
    assert len(flat) == len(res.overall) * (1 + len(res.slices))
    counts = res.flat(include_counts=True)
    assert counts["n_users/all"] == 3.0
    assert isinstance(res, EvalResult)


# ---------------------------------------------------------------------------------------------
# Sampled ranking
# ---------------------------------------------------------------------------------------------


class _Recorder:
    """pair_score_fn that records the candidates it was shown and scores with a fixed table."""

    def __init__(self, table: torch.Tensor | None = None) -> None:
        self.table, self.uids, self.iids = table, [], []

    def __call__(self, uids: torch.Tensor, iids: torch.Tensor) -> torch.Tensor:
        assert uids.dtype == torch.int64 and iids.shape[0] == uids.shape[0]
        self.uids.append(uids.clone())
        self.iids.append(iids.clone())
        if self.table is None:
            return torch.zeros(iids.shape)
        return self.table[uids[:, None], iids]  # (B, 1 + N)


def _sampled_problem():
    rng = np.random.default_rng(1)
    n_users, n_items = 12, 50
    cells = rng.permutation(n_users * n_items)[:200]
    u, i = cells // n_items, cells % n_items
    return n_items, (u[:150], i[:150]), (u[150:], i[150:])


def test_sampled_negatives_are_deterministic_distinct_and_never_interacted() -> None:
    n_items, train, truth = _sampled_problem()
    a, b, c = _Recorder(), _Recorder(), _Recorder()
    sampled_ranking(a, n_items, train, truth, num_negatives=20, seed=3, ks=[5], batch_size=16)
    sampled_ranking(b, n_items, train, truth, num_negatives=20, seed=3, ks=[5], batch_size=7)
    sampled_ranking(c, n_items, train, truth, num_negatives=20, seed=4, ks=[5])
    cand_a, cand_b, cand_c = (torch.cat(r.iids).numpy() for r in (a, b, c))
    uids = torch.cat(a.uids).numpy()
    assert cand_a.shape == (50, 21)  # one row per distinct (user, truth item) pair
    np.testing.assert_array_equal(cand_a, cand_b)  # same seed -> same draw, whatever the batches
    assert not np.array_equal(cand_a, cand_c)
    interacted = set(zip(*map(np.ndarray.tolist, train))) | set(zip(*map(np.ndarray.tolist, truth)))
    truth_set = set(zip(*map(np.ndarray.tolist, truth)))
    for u, row in zip(uids.tolist(), cand_a.tolist()):
        assert (u, row[0]) in truth_set  # column 0 is the positive
        assert len(set(row[1:])) == 20  # distinct negatives
        assert not any((u, i) in interacted for i in row[1:])


@pytest.mark.parametrize("rounds", [0, 32])  # 0 forces the exact per-row fallback
def test_sampled_exclude_and_near_full_users(rounds: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(evaluator, "_REJECTION_ROUNDS", rounds)
    # user 0 interacted with 8 of 12 items (train + truth + exclude): 4 negatives = the complement
    train = _pairs({0: [0, 1, 2, 3, 4]})
    truth = _pairs({0: [5]})
    exclude = _pairs({0: [6, 7]})
    rec = _Recorder()
    sampled_ranking(rec, 12, train, truth, num_negatives=4, seed=0, ks=[1], exclude=exclude)
    assert sorted(rec.iids[0][0, 1:].tolist()) == [8, 9, 10, 11]
    with pytest.raises(ValueError, match="num_negatives"):
        sampled_ranking(rec, 12, train, truth, num_negatives=5, ks=[1], exclude=exclude)


def test_sampled_ranks_are_pessimistic_on_ties() -> None:
    n_items, train, truth = _sampled_problem()
    # all scores equal: the positive ranks last, 1 + N = 4
    res = sampled_ranking(_Recorder(), n_items, train, truth, num_negatives=3, ks=[1, 4])
    assert res.overall["hr@1"] == 0.0
    assert res.overall["hr@4"] == 1.0 and res.overall["mrr@4"] == pytest.approx(0.25)
    assert res.overall["ndcg@4"] == pytest.approx(1 / np.log2(5))


def test_sampled_metrics_and_slices() -> None:
    # score = item id, so the positive's rank is 1 + #negatives with a larger (or equal) id
    n_users, n_items = 3, 8
    table = torch.arange(n_items, dtype=torch.float32).expand(n_users, -1)
    train = _pairs({0: [0, 1, 2], 1: [0, 3], 2: [0]})
    truth = _pairs({0: [7], 1: [4, 5], 2: [1]})
    # user 1 can only draw negatives from {1, 2, 6, 7}; with N = 4 that is all of them
    res = sampled_ranking(_Recorder(table), n_items, train, truth, num_negatives=4, seed=0, ks=[1, 5])
    # u0: positive 7 is the largest id -> rank 1
    # u1: positive 4 beats 1, 2 -> rank 3; positive 5 beats 1, 2 -> rank 3 (negatives 6, 7 above)
    # u2: positive 1 (interacted 0, 1): every negative from {2..7} is larger -> rank 5
    np.testing.assert_array_equal(res.users, [0, 1, 2])
    np.testing.assert_allclose(res.per_user["mrr@5"], [1.0, 1 / 3, 1 / 5])
    np.testing.assert_allclose(res.per_user["hr@1"], [1.0, 0.0, 0.0])
    assert res.overall["mrr@5"] == pytest.approx((1 + 1 / 3 + 1 / 5) / 3)
    # item training counts: 0 -> 3, 1 -> 1, 2 -> 1, 3 -> 1; head = floor(0.2 * 8) = 1 item = {0}
    # cold (<= 5): every item -> same as overall
    assert res.slices["cold_items"] == res.overall
    assert res.n_users["head_items"] == 0 and "head_items" not in res.slices
    # user training counts 3, 2, 1: 0.2 quantile = 1 + 0.4 * (2 - 1) = 1.4 -> long tail = {u2}
    assert res.slices["long_tail_users"]["mrr@5"] == pytest.approx(1 / 5)
    assert res.slices["head_users"]["mrr@5"] == pytest.approx((1 + 1 / 3) / 2)
