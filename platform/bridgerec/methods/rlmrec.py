"""RLMRec (Ren et al., 2024, "Representation Learning with Large Language Models for
Recommendation", WWW; arXiv 2310.15950) on any domain model.

Both variants keep the domain model's own loss (``rec``) and add one alignment loss between its
collaborative rows ``e`` (``user_embeddings()``/``item_embeddings()``) and the semantic rows
``s`` of the same users/items (LLM-profile embeddings, or item text; see
:mod:`~bridgerec.methods.semantic`). Scoring is the domain model's own (the alignment only
shapes its embeddings).

- ``rlmrec-con`` (contrastive): ``align = Σ_side InfoNCE(e_b, MLP(s_b), τ)`` over the batch's
  distinct users (``uid``) and distinct items (``pos`` ∪ ``neg``), in-batch negatives.
- ``rlmrec-gen`` (generative, masked reconstruction): per step a fraction ``mask_ratio`` of the
  batch's distinct users and positive items is masked; a masked entity's own row is hidden and
  it is rebuilt from its collaborative context — the mean of its TRAINING neighbours' rows
  (a user's items, an item's users), which is what a masked node receives from one graph
  propagation in the paper's GNN backbones, here available to every backbone — and
  ``recon = Σ_side InfoNCE(MLP(context), s, τ)`` asks the MLP to recover its semantic row.

Loss names: ``rec`` and ``align`` (con) / ``recon`` (gen); weight them with ``method.loss_weights``
(λ). ``method.rlmrec.align_users`` / ``align_items`` switch the sides (the paper's ablations).
"""

from __future__ import annotations

import numpy as np
import torch

from bridgerec._csr import CSR
from bridgerec.methods._common import AlignmentMethod, batch_entities
from bridgerec.methods.alignment import ContrastiveAlignment, MaskedReconstruction
from bridgerec.models.base import Batch, DomainModel

__all__ = ["RLMRecCon", "RLMRecGen", "neighbour_mean"]


def _sides(cfg) -> tuple[str, ...]:
    r = cfg.rlmrec
    return tuple(side for side, on in (("users", r.align_users), ("items", r.align_items)) if on)


class RLMRecCon(AlignmentMethod):
    """``rlmrec-con``; see the module docstring."""

    name = "rlmrec-con"

    def __init__(self, cfg, domain: DomainModel, inputs: dict[str, np.ndarray]):
        super().__init__(cfg, domain, inputs)
        r = cfg.rlmrec
        self.sides = _sides(cfg)
        # built only when used: DDP needs every parameter to receive a gradient each step
        self.align = ContrastiveAlignment(self.semantic.dim, domain.dim, r.temperature, r.hidden_dim) if self.sides else None

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        losses = {"rec": self.domain(batch)}
        if self.align is None:
            return losses
        uids, iids = batch_entities(batch)  # (n_u,), (n_i,)
        terms = []
        if "users" in self.sides:
            e = self.domain.user_embeddings()[uids]  # (n_u, d)
            terms.append(self.align(e, self.semantic.user[uids].to(e.dtype)))
        if "items" in self.sides:
            e = self.domain.item_embeddings()[iids]  # (n_i, d)
            terms.append(self.align(e, self.semantic.item[iids].to(e.dtype)))
        losses["align"] = sum(terms)
        return losses

    def full_scores(self, uids: torch.Tensor) -> torch.Tensor:
        return self.domain.full_scores(uids)


def neighbour_mean(graph: CSR, rows: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """(m, d): for each of ``rows`` (m,), the mean of ``table`` (N, d) over its neighbours in
    ``graph`` (rows -> column ids of ``table``); a row without neighbours gives zeros."""
    pos, cols = graph.gather(rows.cpu().numpy())  # (nnz,), (nnz,)
    deg = np.bincount(pos, minlength=len(rows)).astype(np.float32)  # (m,)
    vals = (1.0 / np.maximum(deg, 1))[pos]  # (nnz,)
    index = torch.from_numpy(np.stack([pos, cols])).to(table.device)  # (2, nnz)
    mean_op = torch.sparse_coo_tensor(index, torch.from_numpy(vals).to(table), (len(rows), table.shape[0]),
                                      check_invariants=False)  # (m, N); indices are in range by construction
    return torch.sparse.mm(mean_op, table)  # (m, d)


class RLMRecGen(AlignmentMethod):
    """``rlmrec-gen``; see the module docstring."""

    name = "rlmrec-gen"
    required_augmentations = (*AlignmentMethod.required_augmentations, "train_interactions")

    def __init__(self, cfg, domain: DomainModel, inputs: dict[str, np.ndarray]):
        super().__init__(cfg, domain, inputs)
        r = cfg.rlmrec
        self.sides = _sides(cfg)
        self.mask_ratio = r.mask_ratio
        uids, iids = np.asarray(inputs["train_interactions"], dtype=np.int64)
        # numpy, never broadcast or checkpointed (like SASRec's histories)
        self._user_items = CSR.from_pairs(uids, iids, domain.n_users)
        self._item_users = CSR.from_pairs(iids, uids, domain.n_items)
        self.recon = MaskedReconstruction(domain.dim, self.semantic.dim, r.temperature, r.hidden_dim) if self.sides else None

    def _mask(self, ids: torch.Tensor) -> torch.Tensor:
        """A random ``mask_ratio`` share of ``ids`` (at least 2 when there are, so InfoNCE has a negative)."""
        n = len(ids)
        k = min(n, max(2, round(self.mask_ratio * n)))
        return ids[torch.randperm(n, device=ids.device)[:k]]

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        losses = {"rec": self.domain(batch)}
        if self.recon is None:
            return losses
        uids, iids = batch_entities(batch, with_negatives=False)  # positives have training users
        terms = []
        if "users" in self.sides:
            m = self._mask(uids)  # (m_u,)
            ctx = neighbour_mean(self._user_items, m, self.domain.item_embeddings())  # (m_u, d)
            terms.append(self.recon(ctx, self.semantic.user[m].to(ctx.dtype)))
        if "items" in self.sides:
            m = self._mask(iids)  # (m_i,)
            ctx = neighbour_mean(self._item_users, m, self.domain.user_embeddings())  # (m_i, d)
            terms.append(self.recon(ctx, self.semantic.item[m].to(ctx.dtype)))
        losses["recon"] = sum(terms)
        return losses

    def full_scores(self, uids: torch.Tensor) -> torch.Tensor:
        return self.domain.full_scores(uids)
