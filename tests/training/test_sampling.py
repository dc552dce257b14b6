"""Negative sampling never returns a training positive and is seeded."""

import numpy as np
import pytest

from bridgerec.data.sampling import NegativeSampler


def test_negatives_avoid_positives_and_are_seeded():
    uids = np.repeat(np.arange(5), 8)
    iids = np.concatenate([np.arange(8) + u for u in range(5)])
    s1 = NegativeSampler(20, uids, iids, 5, seed=3)
    neg = s1.sample(np.arange(5), 50)
    assert neg.shape == (5, 50)
    for u in range(5):
        assert not set(neg[u]) & set(range(u, u + 8))
    np.testing.assert_array_equal(neg, NegativeSampler(20, uids, iids, 5, seed=3).sample(np.arange(5), 50))


def test_dense_user_gets_exact_uniform_negatives():
    """A user with 9 of 12 items as positives: rejection rarely settles every draw within the
    rounds; the exact fallback must still never return a positive and stay uniform."""
    pos = np.array([0, 1, 2, 3, 5, 6, 7, 9, 11])
    s = NegativeSampler(12, np.zeros(len(pos), int), pos, 1, seed=0, max_rounds=0)  # exact path only
    neg = s.sample(np.zeros(3000, int), 1).ravel()
    values, counts = np.unique(neg, return_counts=True)
    assert values.tolist() == [4, 8, 10]
    assert counts.min() > 900  # ~1000 each


def test_user_with_every_item_is_an_error():
    s = NegativeSampler(3, np.zeros(3, int), np.arange(3), 1, seed=0, max_rounds=1)
    with pytest.raises(ValueError, match="every item"):
        s.sample(np.zeros(2, int), 1)


def test_reseed_per_epoch_and_rank_is_reproducible():
    uids, iids = np.repeat(np.arange(4), 3), np.tile(np.arange(3), 4)
    s = NegativeSampler(50, uids, iids, 4, seed=(0, 1, 0))
    a = s.sample(np.arange(4), 5)
    s.reseed(0, 2, 0)
    b = s.sample(np.arange(4), 5)
    s.reseed(0, 1, 0)
    np.testing.assert_array_equal(a, s.sample(np.arange(4), 5))
    assert not np.array_equal(a, b)
