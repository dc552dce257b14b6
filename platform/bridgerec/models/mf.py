"""Matrix factorisation trained with BPR (Rendle et al., 2009)."""

from __future__ import annotations

import torch
from torch import nn

from bridgerec.models.config import ModelConfig
from bridgerec.models.base import Batch, DomainModel, bpr_loss, check_embedding_shapes

__all__ = ["MF"]



class MF(DomainModel):
    """score(u, i) = <p_u, q_i>; loss = BPR + weight_decay * (|p_u|^2 + |q_i|^2 + |q_j|^2) / B."""

    def __init__(self, cfg: ModelConfig, n_users: int, n_items: int, **_: object):
        super().__init__()
        self.dim, self.n_users, self.n_items = cfg.dim, n_users, n_items
        self.reg = cfg.l2
        self.user = nn.Embedding(n_users, cfg.dim)
        self.item = nn.Embedding(n_items, cfg.dim)
        nn.init.normal_(self.user.weight, std=cfg.init_std)
        nn.init.normal_(self.item.weight, std=cfg.init_std)

    @torch.no_grad()
    def init_from_embeddings(self, users: torch.Tensor, items: torch.Tensor) -> None:
        """The tables ARE the exported embeddings: the trained model exactly."""
        check_embedding_shapes(self, users, items)
        self.user.weight.copy_(users)
        self.item.weight.copy_(items)

    def user_embeddings(self) -> torch.Tensor:
        return self.user.weight

    def item_embeddings(self) -> torch.Tensor:
        return self.item.weight

    def score(self, uids: torch.Tensor, iids: torch.Tensor) -> torch.Tensor:
        return (self.user(uids) * self.item(iids)).sum(-1)

    def full_scores(self, uids: torch.Tensor) -> torch.Tensor:
        return self.user(uids) @ self.item.weight.T

    def loss(self, batch: Batch) -> torch.Tensor:
        u = self.user(batch["uid"])  # (B, d)
        p = self.item(batch["pos"])  # (B, d)
        n = self.item(batch["neg"])  # (B, N, d)
        s_pos = (u * p).sum(-1)  # (B,)
        s_neg = torch.einsum("bd,bnd->bn", u, n)  # (B, N)
        reg = (u.pow(2).sum() + p.pow(2).sum() + n.pow(2).sum()) / len(u)
        return bpr_loss(s_pos, s_neg) + self.reg * reg
