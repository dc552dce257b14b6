"""Negative sampling never returns a training positive and is seeded."""

import numpy as np

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
