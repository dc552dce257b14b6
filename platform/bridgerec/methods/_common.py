"""Pieces the alignment methods share: their base class, the semantic tables, batch entities, the ZeRO guard."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from bridgerec.methods.base import Method
from bridgerec.models.base import Batch, DomainModel

__all__ = ["AlignmentMethod", "SemanticTables", "batch_entities"]


class SemanticTables(nn.Module):
    """The fixed LLM-side rows ``user`` (U, ds) and ``item`` (I, ds) as non-persistent buffers:
    they move with ``.to()`` but are inputs, not weights (never checkpointed, never trained)."""

    def __init__(self, domain: DomainModel, inputs: dict[str, np.ndarray]):
        super().__init__()
        user, item = np.asarray(inputs["user_semantic"], np.float32), np.asarray(inputs["item_semantic"], np.float32)
        if user.shape[0] != domain.n_users or item.shape[0] != domain.n_items or user.shape[1] != item.shape[1]:
            raise ValueError(f"semantic embeddings {user.shape} / {item.shape} do not fit {domain.n_users} users / "
                             f"{domain.n_items} items with one width")
        self.dim = int(user.shape[1])
        self.register_buffer("user", torch.from_numpy(user), persistent=False)
        self.register_buffer("item", torch.from_numpy(item), persistent=False)

    # Constants identical on every rank: DDP must not broadcast them before each forward.
    _ddp_params_and_buffers_to_ignore = ["user", "item"]


def batch_entities(batch: Batch, with_negatives: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(distinct users (n_u,), distinct items (n_i,)) of a batch: ``uid``; ``pos`` (and ``neg``)."""
    items = torch.cat([batch["pos"], batch["neg"].reshape(-1)]) if with_negatives else batch["pos"]
    return torch.unique(batch["uid"]), torch.unique(items)


class AlignmentMethod(Method):
    """A method that aligns the domain model with fixed LLM-side rows (``self.semantic``).

    Subclasses build their alignment modules after ``super().__init__``. The alignment losses
    read the domain model's embeddings outside its own ``forward``, which ZeRO-3 does not gather:
    ``supports_zero3 = False`` (the trainer refuses the combination before any work)."""

    required_augmentations = ("user_semantic", "item_semantic")
    supports_zero3 = False

    def __init__(self, cfg, domain: DomainModel, inputs: dict[str, np.ndarray]):
        super().__init__(cfg, domain, inputs)
        self.semantic = SemanticTables(domain, inputs)
