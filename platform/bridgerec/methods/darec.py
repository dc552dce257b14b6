"""DaRec (Yang et al., 2024, "DaRec: A Disentangled Alignment Framework for Large Language Model
and Recommender System"; arXiv 2408.08231) on any domain model.

The collaborative rows ``e`` of the domain model and the semantic rows ``s`` (LLM-profile or
item-text embeddings, :mod:`~bridgerec.methods.semantic`) are each projected into a shared and
a specific part; the losses of :class:`~bridgerec.methods.alignment.DisentangledAlignment`
(``orth``, ``shared``, ``global``, ``local``) run per entity type over the batch's distinct users
(``uid``) and distinct items (``pos`` ∪ ``neg``) and are summed over the two types. The local
alignment's K centers (per type) are spherical k-means centers of the detached shared parts of
the current batch (both sides), refreshed every ``method.darec.kmeans_every`` steps and kept as
(checkpointed) buffers.

Recommendation (``method.darec.enrich``): the final user/item representation is the
concatenation ``[e ; P_c^sh(e)]`` of the collaborative embedding and its aligned shared part, so

    score(u, i) = <e_u, e_i> + <P_c^sh(e_u), P_c^sh(e_i)>

and ``rec_shared = BPR(<P(e_u), P(e_pos)>, <P(e_u), P(e_neg)>)`` trains the shared part for
ranking next to the domain model's own loss ``rec``. (Concatenation rather than a sum keeps the
shared width free of the model width and leaves the collaborative score intact.) With
``enrich: false`` the domain model's embeddings are used alone and ``rec_shared`` is absent.
:meth:`export_embeddings` returns the concatenations, whose inner product is :meth:`full_scores`.

Loss names: ``rec``, ``rec_shared``, ``orth``, ``shared``, ``global``, ``local``; each has its
weight in ``method.loss_weights`` and its switch in ``method.darec`` (the paper's ablations).
"""

from __future__ import annotations

import numpy as np
import torch

from bridgerec.methods._common import AlignmentMethod, batch_entities
from bridgerec.methods.alignment import DisentangledAlignment, kmeans
from bridgerec.models.base import Batch, DomainModel, bpr_loss

__all__ = ["DaRec"]


class DaRec(AlignmentMethod):
    """``darec``; see the module docstring."""

    name = "darec"

    def __init__(self, cfg, domain: DomainModel, inputs: dict[str, np.ndarray]):
        super().__init__(cfg, domain, inputs)
        d = cfg.darec
        self.enrich = d.enrich
        self.shared_dim = d.dim or domain.dim
        losses = tuple(n for n, on in (("orth", d.orthogonal), ("shared", d.shared), ("global", d.global_align),
                                       ("local", d.local_align)) if on)
        self.align = (DisentangledAlignment(domain.dim, self.semantic.dim, self.shared_dim, losses, d.cluster_temperature)
                      if losses or self.enrich else None)
        self.n_clusters, self.kmeans_every, self.kmeans_iters = d.n_clusters, d.kmeans_every, d.kmeans_iters
        if "local" in losses:
            self.register_buffer("centers_user", torch.zeros(d.n_clusters, self.shared_dim))  # (K, k)
            self.register_buffer("centers_item", torch.zeros(d.n_clusters, self.shared_dim))  # (K, k)
            self.register_buffer("kmeans_step", torch.zeros((), dtype=torch.int64))
        self._cache: tuple[tuple, torch.Tensor, torch.Tensor] | None = None

    # -- training --------------------------------------------------------------------------------

    @property
    def _has_local(self) -> bool:
        return self.align is not None and "local" in self.align.losses

    @torch.no_grad()
    def _refresh_centers(self, kind: str, collab: torch.Tensor, semantic: torch.Tensor) -> None:
        s_c, s_s = self.align.shared_parts(collab, semantic)  # (n, k) each
        buf = getattr(self, f"centers_{kind}")
        warm = buf if int(self.kmeans_step) > 0 else None
        buf.copy_(kmeans(torch.cat([s_c, s_s]), warm, self.n_clusters, self.kmeans_iters).to(buf))

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        losses = {"rec": self.domain(batch)}
        if self.align is None:
            return losses
        users, items = self.domain.user_embeddings(), self.domain.item_embeddings()  # (U, d), (I, d)
        if self.enrich:
            p = self.align.collab_shared
            su, sp, sn = p(users[batch["uid"]]), p(items[batch["pos"]]), p(items[batch["neg"]])  # (B, k), (B, k), (B, N, k)
            losses["rec_shared"] = bpr_loss((su * sp).sum(-1), torch.einsum("bk,bnk->bn", su, sn))
        if not self.align.losses:
            return losses
        refresh = self._has_local and self.training and int(self.kmeans_step) % self.kmeans_every == 0
        uids, iids = batch_entities(batch)  # (n_u,), (n_i,)
        for kind, ids, table, sem in (("user", uids, users, self.semantic.user), ("item", iids, items, self.semantic.item)):
            c, s = table[ids], sem[ids].to(table.dtype)  # (n, d), (n, ds)
            if refresh:
                self._refresh_centers(kind, c, s)
            centers = getattr(self, f"centers_{kind}") if self._has_local else None
            for name, value in self.align(c, s, centers).items():
                losses[name] = losses[name] + value if name in losses else value
        if self._has_local and self.training:
            self.kmeans_step += 1
        return losses

    # -- scoring -----------------------------------------------------------------------------------

    def _final(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(users (U, d+k), items (I, d+k)) = [e ; P_c^sh(e)]; cached (detached) in eval mode."""
        if self.training:
            return self._enriched()
        key = tuple((p._version, p.data_ptr(), p.device, p.dtype) for p in self.parameters())
        if self._cache is None or self._cache[0] != key:
            with torch.no_grad():
                self._cache = (key, *self._enriched())
        return self._cache[1], self._cache[2]

    def _enriched(self) -> tuple[torch.Tensor, torch.Tensor]:
        users, items = self.domain.user_embeddings(), self.domain.item_embeddings()
        p = self.align.collab_shared
        return torch.cat([users, p(users)], -1), torch.cat([items, p(items)], -1)

    def train(self, mode: bool = True) -> "DaRec":
        self._cache = None
        return super().train(mode)

    def user_embeddings(self) -> torch.Tensor:
        return self._final()[0] if self.enrich else self.domain.user_embeddings()

    def item_embeddings(self) -> torch.Tensor:
        return self._final()[1] if self.enrich else self.domain.item_embeddings()

    def full_scores(self, uids: torch.Tensor) -> torch.Tensor:
        if not self.enrich:
            return self.domain.full_scores(uids)
        users, items = self._final()
        return users[uids] @ items.T  # (B, I)
