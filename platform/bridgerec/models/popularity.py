"""Popularity baseline: every user gets items ranked by training interaction count."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from bridgerec._csr import item_counts
from bridgerec.models.config import ModelConfig
from bridgerec.models.base import Batch, DomainModel

__all__ = ["Popularity"]


class Popularity(DomainModel):
    """score(u, i) = number of training interactions of i. Needs ``train_pairs``; nothing trains."""

    def __init__(self, cfg: ModelConfig, n_users: int, n_items: int, train_pairs=None, **_: object):
        super().__init__()
        if train_pairs is None:
            raise ValueError("the popularity model needs train_pairs")
        self.dim, self.n_users, self.n_items = 1, n_users, n_items
        counts = item_counts(train_pairs[1], n_items).astype(np.float32)
        self.register_buffer("counts", torch.from_numpy(counts))

    def user_embeddings(self) -> torch.Tensor:
        return torch.ones(self.n_users, 1)

    def item_embeddings(self) -> torch.Tensor:
        return self.counts.unsqueeze(-1)

    def loss(self, batch: Batch) -> torch.Tensor:
        return torch.zeros((), requires_grad=True)
