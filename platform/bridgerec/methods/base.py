"""The Method contract: a trainable wrapper around a domain model.

A method builds its extra modules from config, returns a dict of *named* losses for a batch (the
trainer sums them with ``method.loss_weights``), declares the augmentations it needs (their outputs
arrive as arrays in ``inputs``), scores users for evaluation, and exports its serving artifacts
(final user/item embeddings whose inner product is the score, plus any extra files).
"""

from __future__ import annotations

import abc
import os
from typing import Any, Callable, ClassVar, Optional

import numpy as np
import torch
from torch import nn

from bridgerec.models.base import Batch, DomainModel

__all__ = ["Method", "weighted_sum"]


class Method(nn.Module, abc.ABC):
    """``forward(batch) -> {loss name: scalar}``; ``full_scores(uids) -> (B, I)``."""

    name: ClassVar[str]
    required_augmentations: ClassVar[tuple[str, ...]] = ()
    """Augmentation outputs this method reads (keys of ``inputs``), e.g. ``item_text_emb``."""
    supports_zero3: ClassVar[bool] = True
    """False when the method reads the domain model's parameters outside its ``forward``."""
    trains_llm: ClassVar[bool] = False
    """True when what trains is the LLM (LoRA instruction tuning, :mod:`bridgerec.training.sft`),
    not the domain model: `bridgerec train` then runs the method's own workflow (``bigrec``)."""

    stream_needs: ClassVar[tuple[str, ...]] = ()
    """Trainer-derived stream columns (:data:`bridgerec.models.base.STREAM_COLUMNS`) the method's
    :meth:`stream_stage` reads, besides those of the domain model (e.g. ``pos_idx``)."""

    @classmethod
    def stream_stage(cls, cfg: Any, data: Any) -> Any:
        """None, or a Ray Data ``map_batches`` function (numpy batches of ``uid``, ``iid`` and the
        derived columns -> the same plus the method's own columns, e.g. tokenised prompts) that the
        driver applies to the training stream; ``cfg`` is the root config, ``data`` the DatasetDir."""
        return None

    def __init__(self, cfg: Any, domain: DomainModel, inputs: dict[str, Any]):
        """``cfg``: the ``method`` section (:class:`bridgerec.methods.config.MethodConfig`)."""
        super().__init__()
        self.cfg = cfg
        self.domain = domain
        missing = [k for k in self.required_augmentations if k not in inputs]
        if missing:
            raise ValueError(f"method {self.name!r} needs augmentation outputs {missing}; run `bridgerec augment` first")

    @property
    def _ddp_params_and_buffers_to_ignore(self) -> list[str]:
        """Every submodule's ``_ddp_params_and_buffers_to_ignore``, as names relative to the method.

        DDP reads the list only on the module it wraps (the method), so the exclusions of the
        domain model (e.g. LightGCN's sparse ``adj``, which DDP cannot broadcast) and of a
        method's own submodules (e.g. fixed semantic tables) are collected here with their prefix."""
        return [f"{prefix}.{name}" for prefix, module in self.named_modules() if module is not self
                for name in getattr(module, "_ddp_params_and_buffers_to_ignore", ())]

    @property
    def stream_columns(self) -> tuple[str, ...]:
        """The domain model's :attr:`~bridgerec.models.base.DomainModel.stream_columns`."""
        return self.domain.stream_columns

    def batch_inputs(self, stream: dict[str, torch.Tensor]) -> Batch:
        """The domain model's extra batch entries (see :meth:`DomainModel.batch_inputs`)."""
        return self.domain.batch_inputs(stream)

    @property
    def predicts_ratings(self) -> bool:
        """The domain model's :attr:`~bridgerec.models.base.DomainModel.predicts_ratings`."""
        return self.domain.predicts_ratings

    def predict_ratings(self, uids: torch.Tensor, iids: torch.Tensor) -> torch.Tensor:
        """The domain model's rating predictions (see :meth:`DomainModel.predict_ratings`)."""
        return self.domain.predict_ratings(uids, iids)

    @abc.abstractmethod
    def forward(self, batch: Batch) -> dict[str, torch.Tensor]: ...

    def begin_epoch(self, epoch: int, gather: Optional[Callable[[torch.Tensor], list[torch.Tensor]]] = None) -> None:
        """Called by the trainer on EVERY rank before an epoch's first step, so a method may
        recompute cached features here; ``gather(t)`` returns every rank's ``t`` in rank order (the
        trainer passes :func:`bridgerec.training.collectives.all_gather_tensors`; None: one process).
        Default: nothing."""

    def param_groups(self, lr: float) -> list[dict]:
        """The optimizer's parameter groups; default: every trainable parameter at ``lr``."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]

    def user_embeddings(self) -> torch.Tensor:
        return self.domain.user_embeddings()

    def item_embeddings(self) -> torch.Tensor:
        return self.domain.item_embeddings()

    def full_scores(self, uids: torch.Tensor) -> torch.Tensor:
        """(B, I) scores used for evaluation and serving."""
        return self.user_embeddings()[uids] @ self.item_embeddings().T

    @torch.no_grad()
    def export_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(U, d), (I, d) detached CPU embeddings; their inner product equals :meth:`full_scores`."""
        return self.user_embeddings().detach().cpu(), self.item_embeddings().detach().cpu()

    def export_artifacts(self, directory: str) -> None:
        """Write the serving bundle's method-specific files (default: embeddings only)."""
        users, items = self.export_embeddings()
        np.save(os.path.join(directory, "user_embeddings.npy"), users.numpy())
        np.save(os.path.join(directory, "item_embeddings.npy"), items.numpy())


def weighted_sum(losses: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """Sum of named losses; a name missing from ``weights`` has weight 1."""
    return sum(weights.get(name, 1.0) * value for name, value in losses.items())
