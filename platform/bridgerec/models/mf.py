"""Matrix factorisation: BPR on implicit feedback (Rendle et al., 2009), or, with
``model.objective=rating``, biased MF with a squared loss on explicit ratings (Koren et al., 2009)."""

from __future__ import annotations

import torch
from torch import nn

from bridgerec.models.config import ModelConfig
from bridgerec.models.base import Batch, DomainModel, bpr_loss, check_embedding_shapes

__all__ = ["MF"]


class MF(DomainModel):
    """``objective=ranking``: score(u, i) = <p_u, q_i>; loss = BPR + l2 * (|p_u|^2 + |q_i|^2 + |q_j|^2) / B.

    ``objective=rating``: score(u, i) = r̂ = mu + b_u + b_i + <p_u, q_i>, the predicted rating
    (unclipped, so rankings have no ties); loss = mean (r̂ - r)^2 + l2 * (|p_u|^2 + |q_i|^2 +
    b_u^2 + b_i^2) / B. ``mu`` and the rating scale ``[r_min, r_max]`` are buffers set from the
    train split's ``rating_stats`` at build time (not trained; saved with the weights, so a model
    rebuilt without the dataset gets them back from its state dict); :meth:`predict_ratings`
    clips r̂ to the scale. The exported embeddings are ``[p_u, 1, mu + b_u]`` and
    ``[q_i, b_i, 1]`` (``dim = model.dim + 2``), whose inner product is r̂ exactly, so
    inner-product retrieval ranks as :meth:`full_scores` does.
    """

    objectives = ("ranking", "rating")

    @classmethod
    def stream_columns_for(cls, cfg: ModelConfig) -> tuple[str, ...]:
        return ("rating",) if cfg.objective == "rating" else ()

    def __init__(self, cfg: ModelConfig, n_users: int, n_items: int, rating_stats: dict | None = None, **_: object):
        super().__init__()
        self.dim, self.n_users, self.n_items = cfg.dim, n_users, n_items
        self.reg = cfg.l2
        self.user = nn.Embedding(n_users, cfg.dim)
        self.item = nn.Embedding(n_items, cfg.dim)
        nn.init.normal_(self.user.weight, std=cfg.init_std)
        nn.init.normal_(self.item.weight, std=cfg.init_std)
        self.predicts_ratings = cfg.objective == "rating"
        if self.predicts_ratings:
            self._init_rating(cfg, rating_stats)

    def _init_rating(self, cfg: ModelConfig, stats: dict | None) -> None:
        """Biases (zero) and the mu / scale buffers; without ``stats`` (a rebuild that loads a
        state dict next) mu is 0 and the scale unbounded until the weights are loaded."""
        self.stream_columns = self.stream_columns_for(cfg)
        self.dim = cfg.dim + 2
        self.user_bias = nn.Embedding(self.n_users, 1)
        self.item_bias = nn.Embedding(self.n_items, 1)
        nn.init.zeros_(self.user_bias.weight)
        nn.init.zeros_(self.item_bias.weight)
        stats = stats or {"mean": 0.0, "min": float("-inf"), "max": float("inf")}
        self.register_buffer("mu", torch.tensor(float(stats["mean"])))
        self.register_buffer("r_min", torch.tensor(float(stats["min"])))
        self.register_buffer("r_max", torch.tensor(float(stats["max"])))

    @torch.no_grad()
    def init_from_embeddings(self, users: torch.Tensor, items: torch.Tensor) -> None:
        """The tables ARE the exported embeddings (with the bias columns under ``rating``): the trained model exactly."""
        check_embedding_shapes(self, users, items)
        d = self.user.embedding_dim
        self.user.weight.copy_(users[:, :d])
        self.item.weight.copy_(items[:, :d])
        if self.predicts_ratings:
            self.item_bias.weight.copy_(items[:, d:d + 1])
            self.user_bias.weight.copy_(users[:, d + 1:] - self.mu)

    def user_embeddings(self) -> torch.Tensor:
        if not self.predicts_ratings:
            return self.user.weight
        w = self.user.weight
        return torch.cat([w, torch.ones_like(w[:, :1]), self.mu + self.user_bias.weight], dim=1)

    def item_embeddings(self) -> torch.Tensor:
        if not self.predicts_ratings:
            return self.item.weight
        w = self.item.weight
        return torch.cat([w, self.item_bias.weight, torch.ones_like(w[:, :1])], dim=1)

    def batch_inputs(self, stream: dict[str, torch.Tensor]) -> Batch:
        return {"rating": stream["rating"].float()} if self.predicts_ratings else {}

    def score(self, uids: torch.Tensor, iids: torch.Tensor) -> torch.Tensor:
        s = (self.user(uids) * self.item(iids)).sum(-1)
        if self.predicts_ratings:
            s = s + self.mu + self.user_bias(uids).squeeze(-1) + self.item_bias(iids).squeeze(-1)
        return s

    def full_scores(self, uids: torch.Tensor) -> torch.Tensor:
        s = self.user(uids) @ self.item.weight.T
        if self.predicts_ratings:
            s = s + self.mu + self.user_bias(uids) + self.item_bias.weight.T
        return s

    def predict_ratings(self, uids: torch.Tensor, iids: torch.Tensor) -> torch.Tensor:
        """r̂ clipped to the training split's rating scale ``[r_min, r_max]``."""
        if not self.predicts_ratings:
            return super().predict_ratings(uids, iids)
        return torch.clamp(self.score(uids, iids), self.r_min, self.r_max)

    def loss(self, batch: Batch) -> torch.Tensor:
        return self._rating_loss(batch) if self.predicts_ratings else self._bpr_loss(batch)

    def _bpr_loss(self, batch: Batch) -> torch.Tensor:
        u = self.user(batch["uid"])  # (B, d)
        p = self.item(batch["pos"])  # (B, d)
        n = self.item(batch["neg"])  # (B, N, d)
        s_pos = (u * p).sum(-1)  # (B,)
        s_neg = torch.einsum("bd,bnd->bn", u, n)  # (B, N)
        reg = (u.pow(2).sum() + p.pow(2).sum() + n.pow(2).sum()) / len(u)
        return bpr_loss(s_pos, s_neg) + self.reg * reg

    def _rating_loss(self, batch: Batch) -> torch.Tensor:
        """Squared error of r̂ against ``batch["rating"]`` (the rated item is ``pos``; ``neg`` is unused)."""
        uid, iid = batch["uid"], batch["pos"]
        u, q = self.user(uid), self.item(iid)  # (B, d)
        bu, bi = self.user_bias(uid).squeeze(-1), self.item_bias(iid).squeeze(-1)  # (B,)
        pred = self.mu + bu + bi + (u * q).sum(-1)
        reg = (u.pow(2).sum() + q.pow(2).sum() + bu.pow(2).sum() + bi.pow(2).sum()) / len(u)
        return (pred - batch["rating"].to(pred.dtype)).pow(2).mean() + self.reg * reg
