"""BDLM entity tokens: ``<u_k>`` / ``<i_k>`` for every user and item, preloaded from a domain model.

:func:`add_entity_tokens` extends the tokenizer (users first, then items, contiguous ids) and
resizes the model's embedding matrix. :func:`preload_entity_rows` writes the new rows from a
domain model's embeddings ``E`` (n, d_domain) through :class:`EntityProjection`
``rows = E @ W.T`` (n, d_model), where ``W`` (d_model, d_domain) keeps training (``learned``), stays
frozen (``fixed``), or is not used at all (``random``: rows drawn with the existing rows' scale,
the ablation). :func:`prepare_bdlm_model` does all of it and wraps the model in LoRA so that, by
default, only the LoRA weights, the new rows and (``learned``) the projection train.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from bridgerec.llm.config import EntityTokenConfig, LLMConfig
from bridgerec.llm.prompts import item_token, user_token

__all__ = [
    "EntityTokens",
    "EntityProjection",
    "add_entity_token_names",
    "add_entity_tokens",
    "entity_rows",
    "preload_entity_rows",
    "prepare_bdlm_model",
]


@dataclass(frozen=True)
class EntityTokens:
    """Token-id layout of the entity tokens: ``user_offset + uid`` and ``item_offset + iid``."""

    user_offset: int
    n_users: int
    item_offset: int
    n_items: int

    def user_ids(self, uids) -> np.ndarray:
        return self.user_offset + np.asarray(uids, dtype=np.int64)

    def item_ids(self, iids) -> np.ndarray:
        return self.item_offset + np.asarray(iids, dtype=np.int64)

    def all_ids(self) -> list[int]:
        return list(range(self.user_offset, self.user_offset + self.n_users)) + \
            list(range(self.item_offset, self.item_offset + self.n_items))


def add_entity_token_names(tokenizer: Any, n_users: int, n_items: int) -> EntityTokens:
    """Add ``<u_0..n_users-1>`` and ``<i_0..n_items-1>`` to the tokenizer (users first, then items,
    contiguous ids after the base vocabulary); the model is not touched.

    The tokens are ordinary added tokens (not special), so decoding keeps them visible.
    """
    from tokenizers import AddedToken

    base = len(tokenizer)
    names = [user_token(k) for k in range(n_users)] + [item_token(k) for k in range(n_items)]
    added = tokenizer.add_tokens([AddedToken(n, single_word=False, normalized=False) for n in names])
    if added != len(names):
        raise ValueError(f"{len(names) - added} entity tokens already existed in the tokenizer; add them once")
    layout = EntityTokens(base, n_users, base + n_users, n_items)
    ends = [(user_token(k), layout.user_offset + k) for k in {0, n_users - 1} if n_users] + \
        [(item_token(k), layout.item_offset + k) for k in {0, n_items - 1} if n_items]
    if any(tokenizer.convert_tokens_to_ids(tok) != want for tok, want in ends):
        raise RuntimeError("entity token ids are not contiguous")
    return layout


def add_entity_tokens(tokenizer: Any, model: Any, n_users: int, n_items: int) -> EntityTokens:
    """:func:`add_entity_token_names` and resize the model's embedding matrix to the new vocabulary."""
    layout = add_entity_token_names(tokenizer, n_users, n_items)
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    return layout


class EntityProjection(nn.Module):
    """``rows = E @ W.T``: domain embeddings (n, d_domain) -> LLM token rows (n, d_model)."""

    def __init__(self, d_domain: int, d_model: int, trainable: bool = True, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        weight = torch.randn(d_model, d_domain, generator=gen) / d_domain ** 0.5  # (d_model, d_domain)
        self.weight = nn.Parameter(weight, requires_grad=trainable)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return emb @ self.weight.T  # (n, d_domain) @ (d_domain, d_model) -> (n, d_model)

    @torch.no_grad()
    def match_scale(self, emb: torch.Tensor, target_std: float) -> None:
        """Rescale ``W`` so that ``forward(emb)`` has standard deviation ``target_std``."""
        std = float(self.forward(emb).std())
        if std > 0:
            self.weight.mul_(target_std / std)


def _as_tensor(x, dtype: torch.dtype) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).to(dtype)


@torch.no_grad()
def entity_rows(base_weight: torch.Tensor, user_emb, item_emb, cfg: EntityTokenConfig
                ) -> tuple[torch.Tensor, torch.Tensor, Optional[EntityProjection]]:
    """(user rows (U, d_model), item rows (I, d_model), projection or None) from the domain
    embeddings ``user_emb`` (U, d_domain) and ``item_emb`` (I, d_domain) (numpy arrays or tensors).

    ``base_weight`` (V, d_model) is the LLM's existing input embedding: its standard deviation is
    the scale the rows are matched to (``cfg.match_token_scale``) or drawn with (``cfg.init ==
    "random"``, which ignores the domain embeddings and returns no projection)."""
    d_model = base_weight.shape[1]
    base_std = float(base_weight.float().std())
    users = _as_tensor(user_emb, torch.float32)
    items = _as_tensor(item_emb, torch.float32)
    if cfg.init == "random":
        gen = torch.Generator().manual_seed(cfg.seed)
        return (torch.randn(len(users), d_model, generator=gen) * base_std,
                torch.randn(len(items), d_model, generator=gen) * base_std, None)
    if users.shape[1] != items.shape[1]:
        raise ValueError("user and item domain embeddings must have the same dimension")
    proj = EntityProjection(users.shape[1], d_model, trainable=cfg.init == "learned", seed=cfg.seed)
    if cfg.match_token_scale:
        proj.match_scale(torch.cat([users, items]), base_std)
    return proj(users), proj(items), proj


@torch.no_grad()
def preload_entity_rows(model: Any, layout: EntityTokens, user_emb, item_emb, cfg: EntityTokenConfig
                        ) -> Optional[EntityProjection]:
    """Write the entity rows of the input embedding from the domain embeddings; returns the projection.

    ``user_emb`` (n_users, d_domain) and ``item_emb`` (n_items, d_domain): numpy arrays or tensors.
    With ``cfg.init == "random"`` no projection is built and None is returned.
    """
    weight = model.get_input_embeddings().weight  # (V, d_model)
    if len(user_emb) != layout.n_users or len(item_emb) != layout.n_items:
        raise ValueError(f"domain embeddings have {len(user_emb)} users / {len(item_emb)} items; "
                         f"the tokenizer has {layout.n_users} / {layout.n_items}")
    rows_u, rows_i, proj = entity_rows(weight[: layout.user_offset], user_emb, item_emb, cfg)
    weight[layout.user_offset: layout.user_offset + layout.n_users] = rows_u.to(weight.dtype)
    weight[layout.item_offset: layout.item_offset + layout.n_items] = rows_i.to(weight.dtype)
    return proj


def prepare_bdlm_model(model: Any, tokenizer: Any, user_emb, item_emb, cfg: LLMConfig
                       ) -> tuple[Any, EntityTokens, Optional[EntityProjection]]:
    """Entity tokens + preload + LoRA: returns (peft model, token layout, projection or None).

    Only LoRA weights and the entity rows train unless ``llm.entity_tokens.train_base_embeddings``
    (then the whole input embedding trains).
    """
    n_users, n_items = len(user_emb), len(item_emb)
    layout = add_entity_tokens(tokenizer, model, n_users, n_items)
    proj = preload_entity_rows(model, layout, user_emb, item_emb, cfg.entity_tokens)
    from bridgerec.llm.lora import apply_lora

    if cfg.entity_tokens.train_base_embeddings:
        peft_model = apply_lora(model, cfg.lora, modules_to_save=["embed_tokens"])
    else:
        peft_model = apply_lora(model, cfg.lora, trainable_token_indices=layout.all_ids())
    return peft_model, layout, proj
