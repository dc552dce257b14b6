"""BIGRec's grounding, reweighting, beam merge, gamma selection and instruction sampling
(:mod:`bridgerec.methods.bigrec_core`), on small hand-made inputs with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bridgerec.methods import bigrec_core as bc
from bridgerec.retrieval.index import build_index

# three users' time-ordered histories: 0 -> [5, 1, 2, 7], 1 -> [3], 2 -> [4, 0, 6]
INDPTR = np.array([0, 4, 5, 8])
ITEMS = np.array([5, 1, 2, 7, 3, 4, 0, 6])


def test_full_instruction_set_is_every_position_after_the_first():
    ex = bc.next_item_examples(INDPTR, ITEMS, history_len=2)
    assert [(e.uid, e.history, e.target) for e in ex] == [
        (0, (5,), 1), (0, (5, 1), 2), (0, (1, 2), 7),  # the window keeps the 2 most recent, oldest first
        (2, (4,), 0), (2, (4, 0), 6),
    ]  # user 1 has a single item: nothing to predict from


def test_few_shot_draws_distinct_users_reproducibly():
    rng = np.random.default_rng(3)
    counts = rng.integers(1, 12, size=200)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    items = rng.integers(0, 50, size=int(counts.sum()))
    a = bc.next_item_examples(indptr, items, history_len=5, samples=64, seed=7)
    b = bc.next_item_examples(indptr, items, history_len=5, samples=64, seed=7)
    c = bc.next_item_examples(indptr, items, history_len=5, samples=64, seed=8)
    assert a == b and a != c
    assert len(a) == 64 and len({e.uid for e in a}) == 64  # one example per sampled user
    for e in a:  # each example is a real window of its user's history
        seq = items[indptr[e.uid]:indptr[e.uid + 1]].tolist()
        t = next(t for t in range(1, len(seq)) if seq[t] == e.target and tuple(seq[max(0, t - 5):t]) == e.history)
        assert t >= 1
    # more samples than users: drawn from every example, without repeats
    many = bc.next_item_examples(INDPTR, ITEMS, samples=4, seed=0)
    assert len(many) == 4 and len(set(many)) == 4
    assert bc.next_item_examples(INDPTR, ITEMS, samples=99) == bc.next_item_examples(INDPTR, ITEMS)


def test_grounding_matches_the_faiss_l2_index_and_is_normalised():
    rng = np.random.default_rng(0)
    items = rng.normal(size=(40, 8)).astype(np.float32)
    gen = rng.normal(size=(5, 8)).astype(np.float32)
    dist = bc.grounding_distances(gen, items)
    assert dist.shape == (5, 40)
    assert torch.allclose(dist.min(1).values, torch.zeros(5)) and torch.allclose(dist.max(1).values, torch.ones(5))
    ids, _ = build_index(items, "l2", kind="flat").search(gen, 5)
    assert (torch.argsort(dist, dim=1)[:, :5].numpy() == ids).all()
    with pytest.raises(ValueError, match="same width"):
        bc.grounding_distances(gen[:, :4], items)


def test_popularity_reweighting_pulls_popular_items_forward():
    train_items = np.array([3] * 50 + [1] * 5 + [0, 2])
    pop = bc.popularity_prior(train_items, 5)
    assert pop.shape == (1, 5) and float(pop.max()) == 1.0 and float(pop.min()) == 0.0
    dist = torch.tensor([[0.0, 0.3, 0.5, 0.6, 1.0]])
    plain = bc.reweighted_scores(dist, pop, 0.0)
    assert torch.equal(plain, -dist)
    ranks = [int((torch.argsort(-bc.reweighted_scores(dist, pop, g), dim=1) == 3).nonzero()[0, 1]) for g in (0, 0.5, 1, 4)]
    assert ranks == sorted(ranks, reverse=True) and ranks[0] == 3 and ranks[-1] == 1  # item 3 climbs
    assert int(torch.argmax(bc.reweighted_scores(dist, pop, 4.0))) == 0  # the exact match (distance 0) stays first
    with pytest.raises(ValueError, match="gamma"):
        bc.reweighted_scores(dist, pop, -1.0)


def test_merge_by_rank_interleaves_beams():
    beam0 = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]])  # order 0 1 2 3 4
    beam1 = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0]])  # order 4 3 2 1 0
    merged = bc.merge_by_rank([beam0, beam1])
    assert torch.argsort(-merged, dim=1).tolist() == [[0, 4, 1, 3, 2]]
    assert torch.equal(bc.merge_by_rank([beam0]), beam0)


def _pairs(rows):
    a = np.array(rows, dtype=np.int64).reshape(-1, 2)
    return a[:, 0], a[:, 1]


def test_gamma_is_chosen_on_validation_only():
    """Validation targets are the popular item, test targets the text match: the chosen gamma
    follows validation, whatever the test split would prefer."""
    n_users, n_items = 6, 8
    train = _pairs([(u, 7) for u in range(n_users)] + [(0, 0), (1, 0), (2, 0)])  # item 0 is the popular one (7 is known)
    pop = bc.popularity_prior(train[1], n_items)
    dist = bc.row_minmax(torch.arange(n_items, dtype=torch.float32).flip(0).repeat(n_users, 1))  # text points at item 6
    seen = []

    def score_fn(uids, gamma):
        seen.append(gamma)
        return bc.reweighted_scores(dist[uids], pop, gamma)

    valid_popular = _pairs([(u, 0) for u in range(3, n_users)])
    choice = bc.select_gamma(score_fn, [0.0, 1.0, 8.0], n_users, n_items, train, valid_popular, metric="hr@1", ks=(1,))
    assert choice.gamma > 0 and choice.value == 1.0 and choice.table[0.0] == 0.0
    valid_text = _pairs([(u, 6) for u in range(3, n_users)])
    choice = bc.select_gamma(score_fn, [0.0, 1.0, 8.0], n_users, n_items, train, valid_text, metric="ndcg@1", ks=(1,))
    assert choice.gamma == 0.0 and choice.value == 1.0  # ties at a perfect score go to the smaller gamma
    assert sorted(set(seen)) == [0.0, 1.0, 8.0]
    with pytest.raises(ValueError, match="unknown selection metric"):
        bc.select_gamma(score_fn, [0.0], n_users, n_items, train, valid_text, metric="hr@20", ks=(1,))


def test_generation_validity():
    v = bc.generation_validity(["Red Fox", "blue whale ", "nothing"], np.array([0.0, 0.1, 2.0]),
                               ["red fox", "Blue Whale", "Green Tree"], threshold=0.5)
    assert (v.n, v.exact) == (3, pytest.approx(2 / 3)) and v.near == pytest.approx(2 / 3) and v.median_distance == pytest.approx(0.1)
