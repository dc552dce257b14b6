"""Config section of the domain models (``cfg.model``; wired into the root Config).

Light on purpose: importing it does not import torch or the models. ``model.name`` is checked
against :data:`bridgerec.models.registry.MODELS` by the root config.
"""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from bridgerec._config_base import Section

__all__ = ["ModelConfig"]


class ModelConfig(Section):
    name: str = "mf"
    """Domain model from the registry (see `bridgerec models`)."""
    dim: int = 64
    """Embedding dimension."""
    init_std: float = 0.1
    """Standard deviation of the normal initialisation of embeddings."""
    l2: float = 1e-4
    """L2 penalty on the embeddings used in a batch (BPR regulariser), per example."""
    n_layers: int = 2
    """LightGCN: propagation layers; SASRec: self-attention blocks."""
    n_heads: int = 2
    """SASRec: attention heads (must divide dim)."""
    max_seq_len: int = 50
    """SASRec: the most recent items of a user's history that the encoder sees."""
    dropout: float = 0.2
    """SASRec: dropout on embeddings and attention blocks."""
    seq_loss: Literal["ce", "bpr"] = "ce"
    """SASRec: full-softmax cross-entropy over items, or BPR against the sampled negatives."""
    objective: Literal["ranking", "rating"] = "ranking"
    """What the model is trained for. ``ranking``: each model's own ranking loss (MF/LightGCN
    BPR, SASRec per model.seq_loss). ``rating`` (mf only): predict the explicit rating,
    r = mu + b_u + b_i + <p_u, q_i> with mu the training split's mean rating (fixed at build
    time), trained with squared loss + model.l2; scores rank by predicted rating, reported
    predictions are clipped to the training split's [min, max] rating, validation reports
    RMSE/MAE and train.select_metric defaults to rmse."""

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> "ModelConfig":
        if self.dim % self.n_heads:
            raise ValueError(f"model.n_heads ({self.n_heads}) must divide model.dim ({self.dim})")
        return self
