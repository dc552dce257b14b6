"""The DomainModel contract: what training, evaluation, methods and serving rely on."""

from __future__ import annotations

import abc
from typing import ClassVar, Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["DomainModel", "Batch", "STREAM_COLUMNS", "check_embedding_shapes"]

STREAM_COLUMNS = {
    "pos_idx": "int64 (B,): the event's index in its user's time-ordered training history (the order "
               "of :func:`bridgerec.models.histories.histories_for` on the train split), so the items "
               "before it are ``history[:pos_idx]``",
    "rating": "float32 (B,): the event's explicit rating (the dataset's ``rating`` column)",
}
"""The columns a model may ask for in :attr:`DomainModel.stream_columns`, and what they hold."""

Batch = dict[str, torch.Tensor]
"""A training batch: ``uid`` (B,), ``pos`` (B,), ``neg`` (B, N) int64; sequence models add
``seq`` (B, L) — the user's training history before the positive, 0-padded with item ids + 1."""


class DomainModel(nn.Module, abc.ABC):
    """A collaborative model over dense user ids ``0..n_users-1`` and item ids ``0..n_items-1``.

    Implementations: ``user_embeddings()`` (U, d), ``item_embeddings()`` (I, d) — the final
    representations used for inner-product retrieval; ``score(uids, iids)`` (B,);
    ``full_scores(uids)`` (B, I); ``loss(batch)`` a scalar; and the attribute ``dim``.

    A model that conditions on each user's interaction history (a sequence model) also
    implements :attr:`histories` and :meth:`set_histories`, so that the caller decides what is
    known history at each stage: the training items for training and validation, train +
    validation events at test time, every known event for serving
    (:func:`bridgerec.models.histories.histories_for`, ``conditioned_on``), and
    :meth:`embed_histories` for users it does not know. Other models keep the defaults: no
    histories, ``set_histories`` does nothing, ``embed_histories`` raises.
    """

    dim: int
    n_users: int
    n_items: int
    built_with = None
    """The ``model`` section (:class:`~bridgerec.models.config.ModelConfig`) this model was built
    from, set by :func:`~bridgerec.models.registry.build_model` (None when built directly); with
    the weights it rebuilds the model without the dataset (:mod:`bridgerec.models.snapshot`)."""
    stream_columns: ClassVar[tuple[str, ...]] = ()
    """Columns this model needs in each event of the training stream besides ``uid`` and ``iid``.
    The trainer derives the ones it knows (:data:`STREAM_COLUMNS`) and passes them to
    :meth:`batch_inputs`; it knows no model by name. A model whose columns depend on its config
    overrides :meth:`stream_columns_for` and sets this on the instance."""
    objectives: ClassVar[tuple[str, ...]] = ("ranking",)
    """The values of ``model.objective`` this model trains for (see
    :class:`~bridgerec.models.config.ModelConfig`); :func:`~bridgerec.models.registry.build_model`
    rejects the others."""
    predicts_ratings: bool = False
    """True when the model predicts explicit ratings (:meth:`predict_ratings`): the trainer then
    also validates RMSE/MAE, and reports add them."""

    @classmethod
    def stream_columns_for(cls, cfg) -> tuple[str, ...]:
        """The :attr:`stream_columns` a model built from ``cfg`` (the ``model`` section) asks for,
        known before it is built: the driver builds the training stream from it. Default: the
        class's :attr:`stream_columns`."""
        return cls.stream_columns

    @abc.abstractmethod
    def user_embeddings(self) -> torch.Tensor: ...

    @abc.abstractmethod
    def item_embeddings(self) -> torch.Tensor: ...

    @abc.abstractmethod
    def loss(self, batch: Batch) -> torch.Tensor: ...

    @property
    def histories(self) -> tuple[np.ndarray, np.ndarray] | None:
        """CSR ``(indptr (U+1,), items (nnz,))`` of the time-ordered items each user's
        representation is computed from now; None for models that do not condition on histories."""
        return None

    def set_histories(self, histories: tuple[np.ndarray, np.ndarray]) -> None:
        """Condition on ``histories`` (CSR as in :attr:`histories`) from now on; drops whatever
        was cached from the old ones. The default, for models without histories, ignores it."""

    def embed_histories(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        """(B, d) representations of users this model does not know, each from a list of item ids
        in time order (oldest first), computed as :meth:`user_embeddings` computes a known user's
        from its stored history (serving calls it for requests that carry only a history).
        Models that condition on histories implement it; the default raises NotImplementedError."""
        raise NotImplementedError(f"{type(self).__name__} has no forward pass over a history")

    def init_from_embeddings(self, users: torch.Tensor, items: torch.Tensor) -> None:
        """Set the free embedding tables so that this model exports the given (U, d) / (I, d)
        embeddings (BDLM's joint domain model starts as the pre-trained one). Models with free
        user/item tables implement it; the default raises NotImplementedError."""
        raise NotImplementedError(f"{type(self).__name__} cannot start from exported embeddings")

    def batch_inputs(self, stream: dict[str, torch.Tensor]) -> Batch:
        """Extra entries of a training batch, from one batch of the training stream (``uid``,
        ``iid`` (B,) and the :attr:`stream_columns`, CPU tensors) and this model's current
        histories; the trainer adds them to ``uid``/``pos``/``neg``. Default: none. Sequence
        models return ``seq`` (see :data:`Batch`)."""
        return {}

    def predict_ratings(self, uids: torch.Tensor, iids: torch.Tensor) -> torch.Tensor:
        """(B,) predicted ratings of user ``uids[b]`` for item ``iids[b]``, within the rating
        scale seen in training. Models with :attr:`predicts_ratings` implement it; the default
        raises NotImplementedError."""
        raise NotImplementedError(f"{type(self).__name__} does not predict ratings (model.objective=rating)")

    def score(self, uids: torch.Tensor, iids: torch.Tensor) -> torch.Tensor:
        """(B,) scores of user ``uids[b]`` for item ``iids[b]``."""
        return (self.user_embeddings()[uids] * self.item_embeddings()[iids]).sum(-1)

    def full_scores(self, uids: torch.Tensor) -> torch.Tensor:
        """(B, I) scores of every item for each user in ``uids``."""
        return self.user_embeddings()[uids] @ self.item_embeddings().T

    def forward(self, batch: Batch) -> torch.Tensor:
        """The training loss; calling the module (not ``.loss``) keeps DDP's gradient hooks."""
        return self.loss(batch)

    @torch.no_grad()
    def export_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(user (U, d), item (I, d)) final embeddings, detached on CPU, for retrieval/serving."""
        return self.user_embeddings().detach().cpu(), self.item_embeddings().detach().cpu()


def bpr_loss(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """BPR: -mean log sigmoid(s_pos - s_neg); ``pos`` (B,), ``neg`` (B, N)."""
    return -torch.nn.functional.logsigmoid(pos.unsqueeze(-1) - neg).mean()


def check_embedding_shapes(model: DomainModel, users: torch.Tensor, items: torch.Tensor) -> None:
    """Raise unless ``users`` is (n_users, dim) and ``items`` (n_items, dim) of ``model``."""
    want = ((model.n_users, model.dim), (model.n_items, model.dim))
    if (tuple(users.shape), tuple(items.shape)) != want:
        raise ValueError(f"embeddings {tuple(users.shape)} / {tuple(items.shape)} do not fit this "
                         f"{type(model).__name__}: {want[0]} / {want[1]} (another dataset or model.dim?)")
