"""The domain model's top-k over a bundle: one code path for the Retriever deployment and for
batch scoring (``bridgerec recommend``), so both return the same items for the same user.

A request is ``(uid, history, k, exclude)`` in dense ids: a known user is their exported vector.
A user unknown to the model (``uid`` None) is embedded from their history (oldest first): by the
model's own forward pass when the bundle holds a sequence model's weights
(:mod:`bridgerec.models.snapshot`; e.g. SASRec encodes the last ``max_seq_len`` items, exactly as
it encoded each known user's full history for the exported vectors), batched over the call's
history-only requests on CPU; otherwise as the mean of the history's item embeddings (MF and
LightGCN; also a sequence model whose bundle lacks its weights, with one warning at start-up).
The history and ``exclude`` are never returned. One faiss search answers the whole batch.
"""

from __future__ import annotations

import logging
import os
from typing import Optional, Sequence

import numpy as np

from bridgerec._csr import from_lists
from bridgerec.retrieval.bundle import RETRIEVAL_INDEX
from bridgerec.retrieval.config import RetrievalConfig
from bridgerec.retrieval.index import load_index

__all__ = ["DomainSearcher", "Request"]

Request = tuple  # (uid: int | None, history: list[int], k: int, exclude: list[int])
logger = logging.getLogger(__name__)


class DomainSearcher:
    def __init__(self, root: str, retrieval: Optional[dict] = None):
        from bridgerec.serving.bundle import load_vectors

        self.user_emb, self.item_emb = load_vectors(root)
        self.index = load_index(os.path.join(root, RETRIEVAL_INDEX), RetrievalConfig(**(retrieval or {})))
        if self.index.n != len(self.item_emb):
            raise ValueError(f"{root}: the retrieval index holds {self.index.n} items, the bundle {len(self.item_emb)}")
        self.history_model = _history_model(root)

    def user_vectors(self, requests: Sequence[Request]) -> np.ndarray:
        """(B, d) float32 query vectors: a known user's exported vector, else their history embedded
        (see the module docstring)."""
        queries = np.empty((len(requests), self.index.dim), dtype=np.float32)
        unknown = []
        for row, (uid, history, _, _) in enumerate(requests):
            if uid is not None:
                queries[row] = self.user_emb[uid]
            elif self.history_model is None:
                queries[row] = self.item_emb[np.asarray(history, dtype=np.int64)].mean(0)
            else:
                unknown.append(row)
        if unknown:
            import torch

            with torch.inference_mode():
                h = self.history_model.embed_histories([np.asarray(requests[r][1], dtype=np.int64) for r in unknown])
            queries[unknown] = h.float().numpy()
        return queries

    def search(self, requests: Sequence[Request]) -> list[tuple[list[int], list[float]]]:
        """(item ids, scores) per request, best first."""
        if not requests:
            return []
        queries = self.user_vectors(requests)
        indptr, excluded = from_lists([np.unique(np.asarray(list(exclude) + list(history), dtype=np.int64))
                                       for _, history, _, exclude in requests])
        ids, scores = self.index.search(queries, max(r[2] for r in requests), indptr, excluded)
        out = []
        for row, request in enumerate(requests):
            k = request[2]
            keep = ids[row, :k] >= 0
            out.append((ids[row, :k][keep].tolist(), scores[row, :k][keep].astype(float).tolist()))
        return out

    def similar_users(self, uid: Optional[int], history: Sequence[int], n: int) -> list[int]:
        """Users nearest the query vector of ``(uid, history)`` by cosine, ``uid`` left out (Llama4Rec's
        prompt augmentation: the same rule as :func:`~bridgerec.methods.llama4rec_data.similar_users`)."""
        from bridgerec.methods.llama4rec_data import nearest_users

        query = self.user_vectors([(uid, list(history), 0, [])])
        exclude = np.asarray([-1 if uid is None else int(uid)])
        return [int(v) for v in nearest_users(self.user_emb, query, n, exclude)[0]]

    def similar(self, iid: int, k: int) -> tuple[list[int], list[float]]:
        """Items nearest item ``iid`` by inner product of item embeddings (itself excluded)."""
        ids, scores = self.index.search(self.item_emb[iid : iid + 1], k, np.array([0, 1]), np.array([iid]))
        keep = ids[0] >= 0
        return ids[0][keep].tolist(), scores[0][keep].astype(float).tolist()


def _history_model(root: str):
    """The bundle's sequence model (CPU, eval mode), or None: then history-only users get the mean
    of their items' embeddings, with a warning when the model does condition on histories."""
    from bridgerec.models.snapshot import DESCRIPTION_FILE, load_domain_model, names_sequence_model, read_description

    desc = read_description(root)
    weights = desc.get("weights") if desc is not None else None
    if weights and os.path.exists(os.path.join(root, weights)):
        return load_domain_model(root)
    if desc is not None:
        sequence, why = desc.get("conditions_on_history", False), desc.get("reason", f"{weights} is missing")
    else:  # logged before domain_model.json: the config names the model
        sequence, why = names_sequence_model(root), f"logged without {DESCRIPTION_FILE}"
    if sequence:
        logger.warning("%s: the model conditions on histories but the bundle has no weights for it (%s); users "
                       "sent with only a history are embedded as the mean of their items' embeddings", root, why)
    return None
