"""Negative sampling for training batches (uniform over the items a user has no training event with)."""

from __future__ import annotations

import numpy as np

from bridgerec._csr import CSR
from bridgerec._csr import contains as _contains

__all__ = ["NegativeSampler"]


class NegativeSampler:
    """Draw ``n`` negatives per user exactly uniformly from the items the user has no training
    event with.

    Most draws are settled by rejection sampling against the sorted ``uid * n_items + iid`` keys
    of the training pairs (cheap: a user's positives are a small share of the catalog). Draws still
    rejected after ``max_rounds`` rounds (users with a large share of the catalog as positives) are
    drawn *exactly*: an index ``r`` uniform in ``[0, n_items - |P_u|)`` is mapped to the ``r``-th
    item not in ``P_u`` through a binary search over the user's sorted positives, so no positive
    is ever returned. A user whose positives cover the whole catalog has no negative: that is an
    error (``ValueError``) rather than a silent positive.
    """

    def __init__(self, n_items: int, train_uids: np.ndarray, train_iids: np.ndarray, n_users: int, seed: int | tuple = 0, max_rounds: int = 10):
        self.n_items = n_items
        self.csr = CSR.from_pairs(train_uids, train_iids, n_users)
        self.keys = self.csr.keys(n_items)
        self.max_rounds = max_rounds
        self.reseed(*(seed if isinstance(seed, tuple) else (seed,)))

    def reseed(self, *seed: int) -> None:
        """Restart the generator from ``seed`` (e.g. ``(seed, epoch, rank)``: each rank and epoch
        draws its own reproducible stream)."""
        self.rng = np.random.default_rng([int(s) for s in seed])

    def sample(self, uids: np.ndarray, n: int) -> np.ndarray:
        """(B, n) int64 negative item ids for ``uids`` (B,)."""
        uids = np.asarray(uids, dtype=np.int64)
        neg = self.rng.integers(0, self.n_items, (len(uids), n))
        bad = _contains(self.keys, uids[:, None] * self.n_items + neg)
        for _ in range(self.max_rounds):
            if not bad.any():
                return neg
            neg[bad] = self.rng.integers(0, self.n_items, int(bad.sum()))
            bad = _contains(self.keys, uids[:, None] * self.n_items + neg)
        rows, cols = np.nonzero(bad)
        for r, c in zip(rows, cols):  # rare: users with a large share of the catalog as positives
            neg[r, c] = self._exact(int(uids[r]))
        return neg

    def _exact(self, u: int) -> int:
        pos = self.csr.row(u)  # sorted, distinct
        free = self.n_items - len(pos)
        if free <= 0:
            raise ValueError(f"user {u} has a training event with every item: no negative to sample")
        r = int(self.rng.integers(0, free))
        # the r-th non-positive: item = r + #{positives p_j with p_j - j <= r}
        return r + int(np.searchsorted(pos - np.arange(len(pos)), r, side="right"))
