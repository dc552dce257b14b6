"""The Retriever and Grounder deployments of the recommender app.

Both load everything from the serving bundle at start-up (:mod:`bridgerec.serving.bundle`) and
answer through ``@serve.batch``: concurrent requests are searched as one faiss batch (set
``batching: false`` in the app's args to search each request alone, e.g. to measure the gain).

- :class:`Retriever`: user embeddings + the inner-product index (:class:`~bridgerec.serving.search.DomainSearcher`,
  shared with batch scoring). ``topk(uid, history, k, exclude)`` returns (dense item ids, scores).
- :class:`Grounder`: the text encoder + the L2 index over item-title embeddings;
  ``ground(text, k, exclude)`` maps free text (a generated title, a search query) to items
  (scores are negative squared L2 distances: higher is closer).
"""

from __future__ import annotations

import os
from collections import deque
from typing import Any, Optional, Sequence

import numpy as np
from ray import serve

from bridgerec._csr import from_lists
from bridgerec.retrieval.bundle import GROUNDING_INDEX

__all__ = ["Retriever", "Grounder"]


def _apply_batching(method: Any, settings: dict) -> None:
    method.set_max_batch_size(int(settings.get("max_batch_size", 64)))
    method.set_batch_wait_timeout_s(float(settings.get("batch_wait_timeout_s", 0.0)))


@serve.deployment(name="Retriever", max_ongoing_requests=64, max_queued_requests=256)
class Retriever:
    def __init__(self, bundle: dict, batching: Optional[dict] = None, retrieval: Optional[dict] = None):
        from bridgerec.serving.bundle import open_bundle
        from bridgerec.serving.search import DomainSearcher

        root, self.version = open_bundle(bundle)
        self.searcher = DomainSearcher(root, retrieval)
        self.batching = dict(batching or {"enabled": True})
        _apply_batching(self._batched, self.batching)
        self.n_batches = 0
        self.batch_sizes: deque[int] = deque(maxlen=1000)  # the recent ones (a long-lived replica must not grow)

    async def topk(self, uid: Optional[int], history: list[int], k: int, exclude: list[int]) -> tuple[list[int], list[float]]:
        request = (uid, list(history), int(k), list(exclude))
        if self.batching.get("enabled", True):
            return await self._batched(request)
        return self._search([request])[0]

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.0)
    async def _batched(self, requests: list[tuple]) -> list[tuple[list[int], list[float]]]:
        return self._search(requests)

    def _search(self, requests: list[tuple]) -> list[tuple[list[int], list[float]]]:
        self.n_batches += 1
        self.batch_sizes.append(len(requests))
        return self.searcher.search(requests)

    def item_vector_topk(self, iid: int, k: int) -> tuple[list[int], list[float]]:
        return self.searcher.similar(iid, k)

    def similar_users(self, uid: Optional[int], history: list[int], n: int) -> list[int]:
        """The ``n`` users nearest this one by cosine of the bundle's user vectors (a known user's
        own vector, else the history's query vector; the user left out)."""
        return self.searcher.similar_users(uid, history, n)

    def stats(self) -> dict[str, Any]:
        sizes = list(self.batch_sizes)
        return {"batches": self.n_batches, "mean_batch": float(np.mean(sizes)) if sizes else 0.0,
                "max_batch": int(max(sizes)) if sizes else 0, "index": self.searcher.index.kind,
                "items": self.searcher.index.n, "pid": os.getpid(), "version": self.version.as_dict()}

    def ping(self) -> str:
        return "ok"


@serve.deployment(name="Grounder", max_ongoing_requests=32, max_queued_requests=128)
class Grounder:
    def __init__(self, bundle: dict, batching: Optional[dict] = None, retrieval: Optional[dict] = None):
        from bridgerec.llm.config import EncoderConfig
        from bridgerec.llm.encoder import TextEncoder
        from bridgerec.retrieval.config import RetrievalConfig
        from bridgerec.retrieval.index import load_index
        from bridgerec.serving.bundle import load_catalog, open_bundle

        root, version = open_bundle(bundle)
        catalog = load_catalog(root, version)
        if not catalog.has_grounding:
            raise FileNotFoundError(f"the bundle {version.uri} has no grounding index ({GROUNDING_INDEX}); log the "
                                    "model with retrieval.grounding_index=true or run `bridgerec index build`")
        enc = dict(catalog.meta["grounding"].get("encoder") or {})
        self.encoder = TextEncoder(EncoderConfig(**enc))
        self.index = load_index(os.path.join(root, GROUNDING_INDEX), RetrievalConfig(**(retrieval or {})))
        self.batching = dict(batching or {"enabled": True})
        _apply_batching(self._batched, self.batching)

    async def ground(self, text: str, k: int, exclude: Sequence[int] = ()) -> tuple[list[int], list[float]]:
        request = (text, int(k), [int(i) for i in exclude])
        if self.batching.get("enabled", True):
            return await self._batched(request)
        return self._search([request])[0]

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0)
    async def _batched(self, requests: list[tuple[str, int, list[int]]]) -> list[tuple[list[int], list[float]]]:
        return self._search(requests)

    def _search(self, requests: list[tuple[str, int, list[int]]]) -> list[tuple[list[int], list[float]]]:
        vectors = self.encoder.encode([t for t, _, _ in requests])  # (B, d)
        indptr, excluded = from_lists([e for _, _, e in requests])
        ids, scores = self.index.search(vectors, max(k for _, k, _ in requests), indptr, excluded)
        return [(ids[r, :k][ids[r, :k] >= 0].tolist(), scores[r, :k][ids[r, :k] >= 0].astype(float).tolist())
                for r, (_, k, _) in enumerate(requests)]

    async def distances(self, text: str, n: int, exclude: Sequence[int] = ()) -> tuple[list[int], list[float]]:
        """The ``n`` items nearest to ``text`` (all of them when the catalog has at most ``n``) and
        their L2 distances, nearest first, ``exclude`` left out (reweighting strategies: ``bigrec``)."""
        vectors = self.encoder.encode([text])
        indptr, excluded = from_lists([[int(i) for i in exclude]])
        ids, scores = self.index.search(vectors, min(int(n), self.index.n), indptr, excluded)
        keep = ids[0] >= 0
        return ids[0][keep].tolist(), np.sqrt(np.maximum(-scores[0][keep].astype(np.float64), 0.0)).tolist()

    def ping(self) -> str:
        return "ok"
