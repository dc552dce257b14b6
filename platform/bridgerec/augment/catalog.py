"""What prompts may show: item texts and the TRAINING histories of users, in compact arrays.

A :class:`Catalog` is built once on the driver from the dataset directory and shipped to Ray Data
workers through the object store. It holds only the ``train`` split and the item texts: a prompt
rendered from it cannot mention a validation or test interaction, and candidates sampled with it
cannot depend on the held-out splits either way (neither avoid nor favour a held-out item).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from bridgerec._csr import item_counts, row_offsets
from bridgerec.llm.prompts import ItemView

__all__ = ["Catalog", "csr_by_user"]


def csr_by_user(uids: np.ndarray, n_users: int, *cols: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Group rows by user (stable): ``indptr`` (n_users + 1,) and the columns re-ordered."""
    order = np.argsort(uids, kind="stable")
    return row_offsets(uids, n_users), [c[order] for c in cols]


@dataclass
class Catalog:
    n_users: int
    n_items: int
    titles: np.ndarray  # (I,) object
    texts: np.ndarray  # (I,) object
    indptr: np.ndarray  # (U + 1,) train history offsets
    hist_iids: np.ndarray  # (E_train,) items, chronological per user
    hist_ratings: np.ndarray  # (E_train,) float

    @classmethod
    def from_dataset(cls, dataset) -> "Catalog":
        """Train histories (sorted by time) and item texts of a DatasetDir."""
        items = dataset.items()
        n_u, n_i = dataset.n_users, dataset.n_items
        train = dataset.frame("train", ["uid", "iid", "ts", "rating"]).sort_values(["uid", "ts", "iid"], kind="stable")
        uids = train["uid"].to_numpy(np.int64)
        indptr, (iids, ratings) = csr_by_user(uids, n_u, train["iid"].to_numpy(np.int64),
                                              train["rating"].to_numpy(np.float64))
        texts = items["text"].where(items["text"].notna(), "").astype(str).to_numpy(object)
        return cls(n_u, n_i, items["title"].astype(str).to_numpy(object), texts, indptr, iids, ratings)

    # -- per user ---------------------------------------------------------------------------
    def train_items(self, uid: int) -> np.ndarray:
        return self.hist_iids[self.indptr[uid]:self.indptr[uid + 1]]

    def n_train(self, uid: int) -> int:
        return int(self.indptr[uid + 1] - self.indptr[uid])

    def history(self, uid: int, max_n: int, with_rating: bool = True) -> list[ItemView]:
        """The user's most recent ``max_n`` training items, oldest first."""
        lo, hi = self.indptr[uid], self.indptr[uid + 1]
        lo = max(lo, hi - max_n)
        return [self.item(int(i), float(r) if with_rating else None)
                for i, r in zip(self.hist_iids[lo:hi], self.hist_ratings[lo:hi])]

    # -- per item ---------------------------------------------------------------------------
    def item(self, iid: int, rating: float | None = None) -> ItemView:
        return ItemView(int(iid), str(self.titles[iid]), str(self.texts[iid]), rating)

    def item_train_counts(self) -> np.ndarray:
        return item_counts(self.hist_iids, self.n_items)

    def co_items(self, iids: np.ndarray, top_n: int) -> list[np.ndarray]:
        """For each item, the ``top_n`` items most often chosen by the same users in TRAIN (ties by id)."""
        users_of = pd.Series(np.repeat(np.arange(self.n_users), np.diff(self.indptr))).groupby(self.hist_iids).agg(list)
        out = []
        for iid in iids:
            users = users_of.get(int(iid), [])
            if not users:
                out.append(np.zeros(0, dtype=np.int64))
                continue
            counts = np.bincount(np.concatenate([self.train_items(u) for u in users]), minlength=self.n_items)
            counts[iid] = 0
            nz = np.flatnonzero(counts)
            best = nz[np.lexsort((nz, -counts[nz]))][:top_n]
            out.append(best.astype(np.int64))
        return out
