"""Llama4Rec's domain side: what the listwise prompts and the evaluation read from the domain model.

Two kinds, one interface (``item_emb``, :meth:`user_vectors`, :meth:`user_table`,
:meth:`similar_user_vectors`):

:class:`FixedDomain`
    MF or LightGCN: one exported vector per user, whatever history a prompt shows (the direct
    task).
:class:`HistoryDomain`
    a model that conditions on histories (SASRec; the sequential task): a user's vector is the
    model's embedding (:meth:`~bridgerec.models.base.DomainModel.embed_histories`) of the history
    known when the prompt is asked: the training items before the target for an instruction
    example, the training items for validation, training and validation items for test. Its
    exported user vectors read every known item, test included, and are never used. Similar users
    are found by cosine of each user's embedded TRAINING history (computed once).

Scores are inner products with ``item_emb`` in both.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import numpy as np

__all__ = ["FixedDomain", "HistoryDomain", "Llama4RecDomain", "as_domain"]


class FixedDomain:
    """Exported (U, d) user and (I, d) item vectors: histories are ignored."""

    conditions_on_history = False

    def __init__(self, users: np.ndarray, items: np.ndarray):
        self.users, self.item_emb = users, items

    def user_vectors(self, uids: Sequence[int], histories: Sequence[Sequence[int]]) -> np.ndarray:
        """(B, d) float32: the rows of ``uids``."""
        return np.asarray(self.users, np.float32)[np.asarray(uids, np.int64)]

    def user_table(self, indptr: np.ndarray, items: np.ndarray) -> np.ndarray:
        """(U, d): every user's vector (the exported table)."""
        return self.users

    def similar_user_vectors(self) -> np.ndarray:
        """(U, d): the vectors whose cosine finds similar users."""
        return self.users


class HistoryDomain:
    """A sequence model (anything with ``embed_histories`` and ``item_embeddings``, in eval mode)
    and the TRAINING histories (CSR ``(indptr, items)``) its similar users are found from."""

    conditions_on_history = True

    def __init__(self, model: Any, train_histories: tuple[np.ndarray, np.ndarray]):
        import torch

        self.model = model
        with torch.inference_mode():
            self.item_emb = model.item_embeddings().detach().float().cpu().numpy()  # (I, d)
        self._train = train_histories
        self._similar: Optional[np.ndarray] = None

    def user_vectors(self, uids: Sequence[int], histories: Sequence[Sequence[int]]) -> np.ndarray:
        """(B, d) float32: each history (oldest first) embedded by the model; ``uids`` only name
        the rows."""
        import torch

        if len(histories) != len(uids):
            raise ValueError(f"{len(uids)} users but {len(histories)} histories")
        if not len(histories):
            return np.zeros((0, self.item_emb.shape[1]), np.float32)
        with torch.inference_mode():
            return self.model.embed_histories([np.asarray(h, np.int64) for h in histories]).float().cpu().numpy()

    def user_table(self, indptr: np.ndarray, items: np.ndarray) -> np.ndarray:
        """(U, d): every user's vector from their row of the CSR ``(indptr, items)``."""
        n = len(indptr) - 1
        return self.user_vectors(np.arange(n), [items[indptr[u]:indptr[u + 1]] for u in range(n)])

    def similar_user_vectors(self) -> np.ndarray:
        """(U, d): each user's embedded training history (computed on first use)."""
        if self._similar is None:
            self._similar = self.user_table(*self._train)
        return self._similar


Llama4RecDomain = Union[FixedDomain, HistoryDomain]


def as_domain(domain: Any) -> Llama4RecDomain:
    """``domain`` itself, or a ``(users, items)`` pair as a :class:`FixedDomain`."""
    if isinstance(domain, (FixedDomain, HistoryDomain)):
        return domain
    users, items = domain
    return FixedDomain(users, items)
