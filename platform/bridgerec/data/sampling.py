"""Negative sampling for training batches (uniform over items, rejecting the user's positives)."""

from __future__ import annotations

import numpy as np

from bridgerec.evaluation.evaluator import CSR, _contains

__all__ = ["NegativeSampler"]


class NegativeSampler:
    """Draw ``n`` negatives per user uniformly from items the user has no training event with.

    Rejection sampling against the sorted ``uid * n_items + iid`` keys of the training pairs;
    after ``max_rounds`` the rare leftovers are accepted as they are (a user with almost every
    item as positive cannot stall training).
    """

    def __init__(self, n_items: int, train_uids: np.ndarray, train_iids: np.ndarray, n_users: int, seed: int, max_rounds: int = 10):
        self.n_items = n_items
        self.keys = CSR.from_pairs(train_uids, train_iids, n_users).keys(n_items)
        self.rng = np.random.default_rng(seed)
        self.max_rounds = max_rounds

    def sample(self, uids: np.ndarray, n: int) -> np.ndarray:
        """(B, n) int64 negative item ids for ``uids`` (B,)."""
        uids = np.asarray(uids, dtype=np.int64)
        neg = self.rng.integers(0, self.n_items, (len(uids), n))
        for _ in range(self.max_rounds):
            bad = _contains(self.keys, uids[:, None] * self.n_items + neg)
            if not bad.any():
                break
            neg[bad] = self.rng.integers(0, self.n_items, int(bad.sum()))
        return neg
