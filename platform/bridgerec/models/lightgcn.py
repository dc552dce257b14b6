"""LightGCN (He et al., 2020, "LightGCN: Simplifying and Powering Graph Convolution Network
for Recommendation", SIGIR; arXiv 2002.02126).

The user-item interaction graph has ``N = U + I`` nodes (users ``0..U-1``, item ``i`` at node
``U + i``) and the binary bipartite adjacency ``A``. With degrees ``D = diag(A 1)``::

    Â      = D^-1/2 A D^-1/2                  (isolated nodes: row and column of zeros)
    E^(0)  = [P; Q]                           free user/item embeddings, (N, d)
    E^(k+1)= Â E^(k)                          k = 0..K-1, K = cfg.n_layers
    E      = 1/(K+1) * sum_k E^(k)            final representations
    loss   = BPR(<e_u, e_i+>, <e_u, e_i->) + λ (|e_u^(0)|² + |e_i+^(0)|² + |e_i-^(0)|²) / B

``Â`` is a sparse COO buffer (non-persistent: it is derived from ``train_pairs``, never
trained, and is identical on every rank, so DDP does not broadcast it); no dense ``N × N``
matrix is ever formed. The free embeddings are direct parameters of the module, so DeepSpeed
ZeRO-3 gathers them in this module's own forward hook, and the propagation runs inside
``forward()``/``loss()``. In eval mode ``user_embeddings()``/``item_embeddings()``/
``full_scores()`` propagate once and reuse the result until ``train()`` is called or a
parameter changes (in place or by ``.to()``); cached embeddings are detached.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from bridgerec.models.config import ModelConfig
from bridgerec.models.base import Batch, DomainModel, bpr_loss, check_embedding_shapes

__all__ = ["LightGCN", "normalized_adjacency"]


def normalized_adjacency(uids: np.ndarray, iids: np.ndarray, n_users: int, n_items: int) -> torch.Tensor:
    """The symmetric-normalized bipartite adjacency ``D^-1/2 A D^-1/2`` as a coalesced sparse COO
    float32 tensor of shape (U+I, U+I); repeated (user, item) pairs count once."""
    uids, iids = np.asarray(uids, dtype=np.int64), np.asarray(iids, dtype=np.int64)
    if len(uids) != len(iids):
        raise ValueError(f"train_pairs: {len(uids)} user ids but {len(iids)} item ids")
    if len(uids) and (uids.min() < 0 or uids.max() >= n_users or iids.min() < 0 or iids.max() >= n_items):
        raise ValueError(f"train_pairs: ids outside 0..{n_users - 1} (users) / 0..{n_items - 1} (items)")
    pairs = np.unique(uids * n_items + iids)  # deduplicated edges
    u, i = pairs // n_items, pairs % n_items + n_users  # item nodes follow the users
    rows, cols = np.concatenate([u, i]), np.concatenate([i, u])  # (2E,) both directions
    n = n_users + n_items
    deg = np.bincount(rows, minlength=n).astype(np.float64)  # (N,)
    d_inv_sqrt = np.zeros(n)
    np.divide(1.0, np.sqrt(deg), out=d_inv_sqrt, where=deg > 0)
    values = (d_inv_sqrt[rows] * d_inv_sqrt[cols]).astype(np.float32)  # (2E,)
    index = torch.from_numpy(np.stack([rows, cols]))  # (2, 2E)
    return torch.sparse_coo_tensor(index, torch.from_numpy(values), (n, n), check_invariants=False).coalesce()


class LightGCN(DomainModel):
    """LightGCN over ``train_pairs=(uids, iids)``; see the module docstring for the formulas."""

    def __init__(self, cfg: ModelConfig, n_users: int, n_items: int, train_pairs=None, **_: object):
        super().__init__()
        if train_pairs is None:
            raise ValueError("the lightgcn model needs train_pairs=(uids, iids)")
        self.dim, self.n_users, self.n_items = cfg.dim, n_users, n_items
        self.n_layers, self.reg = cfg.n_layers, cfg.l2
        self.user_emb = nn.Parameter(torch.randn(n_users, cfg.dim) * cfg.init_std)  # (U, d) = P
        self.item_emb = nn.Parameter(torch.randn(n_items, cfg.dim) * cfg.init_std)  # (I, d) = Q
        self.register_buffer("adj", normalized_adjacency(*train_pairs, n_users, n_items), persistent=False)
        # A constant, identical on every rank: DDP must not broadcast it before each forward.
        self._ddp_params_and_buffers_to_ignore = ["adj"]
        self._cache: tuple[tuple, torch.Tensor, torch.Tensor] | None = None

    # -- propagation -------------------------------------------------------------------------

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(users (U, d), items (I, d)): the layer-mean of ``Â^k E^(0)``, k = 0..K, with gradients."""
        final = self._propagate_from(torch.cat([self.user_emb, self.item_emb]))  # (N, d)
        return final[: self.n_users], final[self.n_users :]

    def _param_key(self) -> tuple:
        return tuple((p._version, p.data_ptr(), p.device, p.dtype) for p in (self.user_emb, self.item_emb))

    def _embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Propagated embeddings: fresh in train mode, cached (detached) in eval mode."""
        if self.training:
            return self.propagate()
        key = self._param_key()
        if self._cache is None or self._cache[0] != key:
            with torch.no_grad():
                self._cache = (key, *self.propagate())
        return self._cache[1], self._cache[2]

    def train(self, mode: bool = True) -> "LightGCN":
        self._cache = None
        return super().train(mode)

    # -- DomainModel -------------------------------------------------------------------------

    @torch.no_grad()
    def init_from_embeddings(self, users: torch.Tensor, items: torch.Tensor, tol: float = 1e-5,
                             max_iter: int = 500) -> None:
        """The layer-0 tables whose propagation gives the exported embeddings: ``E0`` solving
        ``M E0 = E`` with ``M = 1/(K+1) sum_k Â^k`` (symmetric; positive definite for even K, PSD
        otherwise, where the exported ``E`` lies in its range), by conjugate gradients. The model
        then scores as the trained one did (to ``tol``, relative); raises when CG does not reach it."""
        check_embedding_shapes(self, users, items)
        target = torch.cat([users, items]).to(self.user_emb.dtype)  # (N, d)
        x = _conjugate_gradients(self._propagate_from, target, tol, max_iter)
        self.user_emb.copy_(x[: self.n_users])
        self.item_emb.copy_(x[self.n_users:])
        self._cache = None

    def _propagate_from(self, x: torch.Tensor) -> torch.Tensor:
        """``M x``: the layer mean of ``Â^k x``, k = 0..K (what :meth:`propagate` does to the tables)."""
        adj = self.adj if self.adj.dtype == x.dtype else self.adj.to(x.dtype)
        total = x
        for _ in range(self.n_layers):
            x = torch.sparse.mm(adj, x)
            total = total + x
        return total / (self.n_layers + 1)

    def user_embeddings(self) -> torch.Tensor:
        return self._embeddings()[0]

    def item_embeddings(self) -> torch.Tensor:
        return self._embeddings()[1]

    def score(self, uids: torch.Tensor, iids: torch.Tensor) -> torch.Tensor:
        users, items = self._embeddings()
        return (users[uids] * items[iids]).sum(-1)  # (B,)

    def full_scores(self, uids: torch.Tensor) -> torch.Tensor:
        users, items = self._embeddings()
        return users[uids] @ items.T  # (B, I)

    def loss(self, batch: Batch) -> torch.Tensor:
        users, items = self.propagate()  # (U, d), (I, d)
        uid, pos, neg = batch["uid"], batch["pos"], batch["neg"]
        u, p, n = users[uid], items[pos], items[neg]  # (B, d), (B, d), (B, N, d)
        s_pos = (u * p).sum(-1)  # (B,)
        s_neg = torch.einsum("bd,bnd->bn", u, n)  # (B, N)
        reg = self.user_emb[uid].pow(2).sum() + self.item_emb[pos].pow(2).sum() + self.item_emb[neg].pow(2).sum()
        return bpr_loss(s_pos, s_neg) + self.reg * reg / len(uid)


def _conjugate_gradients(apply, b: torch.Tensor, tol: float, max_iter: int) -> torch.Tensor:
    """``x`` with ``apply(x) = b`` for a symmetric positive (semi-)definite linear map, every column
    of ``b`` (N, d) solved at once; raises when the relative residual stays above ``tol``."""
    x = torch.zeros_like(b, dtype=torch.float64)
    b64 = b.double()
    r = b64.clone()
    p = r.clone()
    rs = (r * r).sum(0)  # (d,)
    norm_b = b64.norm().clamp_min(1e-30)
    for _ in range(max_iter):
        if r.norm() <= tol * norm_b:
            return x.to(b.dtype)
        ap = apply(p.to(b.dtype)).double()
        alpha = rs / (p * ap).sum(0).clamp_min(1e-30)
        x += alpha * p
        r -= alpha * ap
        rs_new = (r * r).sum(0)
        p = r + (rs_new / rs.clamp_min(1e-30)) * p
        rs = rs_new
    if r.norm() > tol * norm_b:
        raise RuntimeError(f"LightGCN: the layer-0 tables of these embeddings were not found (relative residual "
                           f"{float(r.norm() / norm_b):.2e} after {max_iter} conjugate-gradient steps)")
    return x.to(b.dtype)
