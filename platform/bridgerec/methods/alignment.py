"""Alignment losses between collaborative and semantic (LLM-side) representations.

Each is an ``nn.Module`` over plain embedding tensors, so it works with any domain model's
``user_embeddings()``/``item_embeddings()``; the method plugins (:mod:`~bridgerec.methods.rlmrec`,
:mod:`~bridgerec.methods.darec`) only pick the rows of a batch and compose them.

- :class:`ContrastiveAlignment` (RLMRec-Con): ``MLP(s)`` -> collaborative space, InfoNCE;
- :class:`MaskedReconstruction` (RLMRec-Gen): ``MLP(context of a masked entity)`` -> semantic space, InfoNCE;
- :class:`DisentangledAlignment` (DaRec): shared/specific projections, orthogonality, shared
  closeness, global (similarity-matrix) and local (cluster) structure alignment.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["info_nce", "mlp", "ContrastiveAlignment", "MaskedReconstruction", "DisentangledAlignment", "kmeans"]


def mlp(d_in: int, d_out: int, hidden: int | None = None) -> nn.Sequential:
    """RLMRec's two-layer map: Linear(d_in, h) -> LeakyReLU -> Linear(h, d_out), h = (d_in + d_out) // 2."""
    h = hidden or max(1, (d_in + d_out) // 2)
    return nn.Sequential(nn.Linear(d_in, h), nn.LeakyReLU(), nn.Linear(h, d_out))


def info_nce(anchor: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """In-batch InfoNCE; ``anchor``, ``target`` (n, d), row ``i`` of each is a positive pair::

        loss = -1/n sum_i log( exp(cos(a_i, t_i)/τ) / sum_j exp(cos(a_i, t_j)/τ) )
    """
    a, t = F.normalize(anchor, dim=-1), F.normalize(target, dim=-1)  # (n, d)
    logits = a @ t.T / temperature  # (n, n)
    return F.cross_entropy(logits, torch.arange(len(a), device=a.device))


class ContrastiveAlignment(nn.Module):
    """RLMRec-Con: ``InfoNCE(e, MLP(s), τ)`` with the collaborative rows ``e`` as anchors."""

    def __init__(self, semantic_dim: int, collab_dim: int, temperature: float, hidden: int | None = None):
        super().__init__()
        self.proj = mlp(semantic_dim, collab_dim, hidden)
        self.temperature = temperature

    def forward(self, collab: torch.Tensor, semantic: torch.Tensor) -> torch.Tensor:
        """``collab`` (n, d), ``semantic`` (n, ds) of the same n entities -> scalar."""
        return info_nce(collab, self.proj(semantic), self.temperature)


class MaskedReconstruction(nn.Module):
    """RLMRec-Gen: ``InfoNCE(MLP(c), s, τ)``, where ``c`` (n, d) is the collaborative context a
    masked entity is rebuilt from (the method passes the mean of its interaction neighbours'
    embeddings, its own row being masked) and ``s`` (n, ds) its semantic row."""

    def __init__(self, collab_dim: int, semantic_dim: int, temperature: float, hidden: int | None = None):
        super().__init__()
        self.proj = mlp(collab_dim, semantic_dim, hidden)
        self.temperature = temperature

    def forward(self, context: torch.Tensor, semantic: torch.Tensor) -> torch.Tensor:
        return info_nce(self.proj(context), semantic, self.temperature)


@torch.no_grad()
def kmeans(x: torch.Tensor, centers: torch.Tensor | None, k: int, iters: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(k, d) spherical k-means centers of the rows of ``x`` (n, d) (cosine assignment, unit
    centers), warm-started from ``centers`` or from ``k`` distinct rows (with repeats when n < k).
    An empty cluster keeps its previous center."""
    x = F.normalize(x.detach().float(), dim=-1)  # (n, d)
    if centers is None:
        idx = torch.randperm(len(x), generator=generator)[:k] if len(x) >= k else torch.randint(len(x), (k,), generator=generator)
        centers = x[idx.to(x.device)]
    c = F.normalize(centers.float(), dim=-1)  # (k, d)
    for _ in range(iters):
        assign = (x @ c.T).argmax(1)  # (n,)
        sums = torch.zeros_like(c).index_add_(0, assign, x)  # (k, d)
        counts = torch.bincount(assign, minlength=k)  # (k,)
        c = torch.where(counts[:, None] > 0, F.normalize(sums, dim=-1), c)
    return c


def _cosine_matrix(x: torch.Tensor) -> torch.Tensor:
    x = F.normalize(x, dim=-1)
    return x @ x.T


def _cross_correlation_sq(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean over feature pairs (p, q) of corr(a[:, p], b[:, q])^2 over the batch rows, in [0, 1]::

        orth(A, B) = || Â^T B̂ ||_F^2 / (k_a k_b),   Â = column-centred, column-normalised A
    """
    a = F.normalize(a - a.mean(0, keepdim=True), dim=0)  # (n, k_a)
    b = F.normalize(b - b.mean(0, keepdim=True), dim=0)  # (n, k_b)
    return (a.T @ b).pow(2).mean()  # (k_a, k_b) -> scalar


def _sym_kl(p_log: torch.Tensor, q_log: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ½ (KL(p‖q) + KL(q‖p)); inputs are log-probabilities (n, K)."""
    p, q = p_log.exp(), q_log.exp()
    return 0.5 * ((p * (p_log - q_log)).sum(-1) + (q * (q_log - p_log)).sum(-1)).mean()


class DisentangledAlignment(nn.Module):
    """DaRec's disentangled structure alignment of one collaborative side ``c`` and one semantic
    side ``s`` (the same n entities, one entity type at a time). With linear projections::

        S_c = P_c^sh(c),  P_c = P_c^sp(c),  S_s = P_s^sh(s),  P_s = P_s^sp(s)           (n, k)
        orth   = orth(S_c, P_c) + orth(S_s, P_s)             squared cross-correlation, see above
        shared = mean_i (1 - cos(S_c[i], S_s[i]))
        global = mean_ij (cos(S_c[i], S_c[j]) - cos(S_s[i], S_s[j]))^2        (n x n) matrices
        local  = symKL(q_c, q_s) + mean_ab (cos(M_c[a], M_c[b]) - cos(M_s[a], M_s[b]))^2
                 q_x = softmax(cos(S_x, C) / τ_k)       soft assignments to the K centers C, (n, K)
                 M_x = normalize(q_x^T normalize(S_x))  each side's cluster prototypes, (K, k)

    ``C`` (K, k) are spherical k-means centers of the detached shared parts of both sides,
    refreshed by the method every ``kmeans_every`` steps (one set per entity type). Only the
    modules the enabled losses need are built (DDP requires every parameter to get a gradient).
    """

    LOSSES = ("orth", "shared", "global", "local")

    def __init__(self, collab_dim: int, semantic_dim: int, dim: int, losses: tuple[str, ...], cluster_temperature: float):
        super().__init__()
        unknown = set(losses) - set(self.LOSSES)
        if unknown:
            raise ValueError(f"unknown DaRec losses {sorted(unknown)}; known: {self.LOSSES}")
        self.losses = tuple(losses)
        self.tau = cluster_temperature
        self.collab_shared = nn.Linear(collab_dim, dim)  # also the method's enrichment (DaRec.enrich)
        self.semantic_shared = nn.Linear(semantic_dim, dim) if self.losses else None
        if "orth" in self.losses:
            self.collab_specific = nn.Linear(collab_dim, dim)
            self.semantic_specific = nn.Linear(semantic_dim, dim)

    def shared_parts(self, collab: torch.Tensor, semantic: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(S_c, S_s), each (n, k)."""
        return self.collab_shared(collab), self.semantic_shared(semantic)

    def forward(self, collab: torch.Tensor, semantic: torch.Tensor, centers: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """``collab`` (n, d), ``semantic`` (n, ds), ``centers`` (K, k) or None -> {loss name: scalar}."""
        if not self.losses:
            return {}
        s_c, s_s = self.shared_parts(collab, semantic)  # (n, k) each
        out: dict[str, torch.Tensor] = {}
        if "orth" in self.losses:
            out["orth"] = _cross_correlation_sq(s_c, self.collab_specific(collab)) + _cross_correlation_sq(s_s, self.semantic_specific(semantic))
        if "shared" in self.losses:
            out["shared"] = (1 - F.cosine_similarity(s_c, s_s, dim=-1)).mean()
        if "global" in self.losses:
            out["global"] = (_cosine_matrix(s_c) - _cosine_matrix(s_s)).pow(2).mean()  # (n, n)
        if "local" in self.losses:
            if centers is None:
                raise ValueError("the local DaRec loss needs k-means centers")
            c = F.normalize(centers.to(s_c.dtype), dim=-1)  # (K, k)
            n_c, n_s = F.normalize(s_c, dim=-1), F.normalize(s_s, dim=-1)  # (n, k)
            q_c, q_s = F.log_softmax(n_c @ c.T / self.tau, -1), F.log_softmax(n_s @ c.T / self.tau, -1)  # (n, K)
            m_c = F.normalize(q_c.exp().T @ n_c, dim=-1)  # (K, k)
            m_s = F.normalize(q_s.exp().T @ n_s, dim=-1)  # (K, k)
            out["local"] = _sym_kl(q_c, q_s) + (m_c @ m_c.T - m_s @ m_s.T).pow(2).mean()
        return out
