"""The domain model's top-k over a bundle: one code path for the Retriever deployment and for
batch scoring (``bridgerec recommend``), so both return the same items for the same user.

A request is ``(uid, history, k, exclude)`` in dense ids: a known user is their exported vector;
a user unknown to the model (``uid`` None) is the mean of their history's item embeddings (exact
for MF's and LightGCN's item space; an approximation for SASRec, whose user vector is a forward
pass over the sequence). The history and ``exclude`` are never returned. One faiss search
answers the whole batch.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np

from bridgerec.retrieval.bundle import RETRIEVAL_INDEX
from bridgerec.retrieval.config import RetrievalConfig
from bridgerec.retrieval.index import load_index

__all__ = ["DomainSearcher", "Request"]

Request = tuple  # (uid: int | None, history: list[int], k: int, exclude: list[int])


class DomainSearcher:
    def __init__(self, root: str, retrieval: Optional[dict] = None):
        from bridgerec.serving.bundle import load_vectors

        self.user_emb, self.item_emb = load_vectors(root)
        self.index = load_index(os.path.join(root, RETRIEVAL_INDEX), RetrievalConfig(**(retrieval or {})))
        if self.index.n != len(self.item_emb):
            raise ValueError(f"{root}: the retrieval index holds {self.index.n} items, the bundle {len(self.item_emb)}")

    def search(self, requests: Sequence[Request]) -> list[tuple[list[int], list[float]]]:
        """(item ids, scores) per request, best first."""
        if not requests:
            return []
        queries = np.empty((len(requests), self.index.dim), dtype=np.float32)
        excl: list[np.ndarray] = []
        for row, (uid, history, _, exclude) in enumerate(requests):
            if uid is not None:
                queries[row] = self.user_emb[uid]
            else:
                queries[row] = self.item_emb[np.asarray(history, dtype=np.int64)].mean(0)
            excl.append(np.unique(np.asarray(list(exclude) + list(history), dtype=np.int64)))
        indptr = np.zeros(len(requests) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in excl], out=indptr[1:])
        ids, scores = self.index.search(queries, max(r[2] for r in requests), indptr, np.concatenate(excl))
        out = []
        for row, request in enumerate(requests):
            k = request[2]
            keep = ids[row, :k] >= 0
            out.append((ids[row, :k][keep].tolist(), scores[row, :k][keep].astype(float).tolist()))
        return out

    def similar(self, iid: int, k: int) -> tuple[list[int], list[float]]:
        """Items nearest item ``iid`` by inner product of item embeddings (itself excluded)."""
        ids, scores = self.index.search(self.item_emb[iid : iid + 1], k, np.array([0, 1]), np.array([iid]))
        keep = ids[0] >= 0
        return ids[0][keep].tolist(), scores[0][keep].astype(float).tolist()
