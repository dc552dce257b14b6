"""Config of the method plugins (wired into the root Config as ``method``).

``method.name`` picks the plugin and ``method.loss_weights`` weighs its named losses; the nested
sections hold each plugin's own settings (``rlmrec`` for ``rlmrec-con``/``rlmrec-gen``, ``darec``
for ``darec``) and where the LLM-side semantic embeddings come from (``semantic``).
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import model_validator

from bridgerec._config_base import Section

__all__ = ["MethodConfig", "SemanticInputConfig", "RLMRecConfig", "DaRecConfig"]


class SemanticInputConfig(Section):
    source: Literal["auto", "profiles", "item_text"] = "auto"
    """LLM-side (semantic) embeddings of users and items: `profiles` = text-encoder embeddings of the
    LLM profiles from the augmentation stages (profiles + text_embeddings; an error when there are
    none); `item_text` = encoder(title + text) per item and, per user, the mean of the user's
    TRAINING items' embeddings; `auto` = profiles where an entity has one, `item_text` otherwise."""
    embeddings_dir: Optional[str] = None
    """A finished text_embeddings stage output directory to read; None picks the newest one of this
    dataset and encoder under <augment root>/text_embeddings/ (preferring one with profiles)."""


class RLMRecConfig(Section):
    temperature: float = 0.2
    """τ of the InfoNCE losses (rlmrec-con alignment, rlmrec-gen reconstruction)."""
    hidden_dim: Optional[int] = None
    """Hidden width of the MLP between the semantic and collaborative spaces; None = the mean of the two dims."""
    align_users: bool = True
    """Ablation switch: align (con) / reconstruct (gen) user representations."""
    align_items: bool = True
    """Ablation switch: align (con) / reconstruct (gen) item representations. With both switches
    off the method has no alignment loss (it trains like `base`)."""
    mask_ratio: float = 0.2
    """rlmrec-gen: fraction of the batch's distinct users and positive items that are masked and
    reconstructed (at least 2 of each, so InfoNCE has a negative)."""

    @model_validator(mode="after")
    def _ranges(self) -> "RLMRecConfig":
        if self.temperature <= 0:
            raise ValueError("method.rlmrec.temperature must be > 0")
        if not 0 < self.mask_ratio <= 1:
            raise ValueError("method.rlmrec.mask_ratio must be in (0, 1]")
        if self.hidden_dim is not None and self.hidden_dim < 1:
            raise ValueError("method.rlmrec.hidden_dim must be >= 1")
        return self


class DaRecConfig(Section):
    dim: Optional[int] = None
    """Width of the shared and specific parts; None = model.dim."""
    orthogonal: bool = True
    """Ablation switch for the `orth` loss: shared and specific parts of each side are decorrelated."""
    shared: bool = True
    """Ablation switch for the `shared` loss: the two sides' shared parts of an entity are pulled together."""
    global_align: bool = True
    """Ablation switch for the `global` loss: the batch similarity matrices of the two shared parts match."""
    local_align: bool = True
    """Ablation switch for the `local` loss: cluster assignments and cluster-prototype similarities
    of the two shared parts match."""
    enrich: bool = True
    """Recommend with [collaborative; shared part] (adds the `rec_shared` BPR loss on the shared
    part); False recommends with the collaborative embeddings alone."""
    n_clusters: int = 8
    """K: k-means centers of the local structure alignment (per entity type)."""
    kmeans_every: int = 10
    """Refresh the k-means centers every this many training steps (on the detached shared parts of the batch)."""
    kmeans_iters: int = 10
    """Lloyd iterations per refresh (warm-started from the previous centers)."""
    cluster_temperature: float = 0.1
    """Temperature of the soft cluster assignments (softmax over cosine to the centers)."""

    @model_validator(mode="after")
    def _ranges(self) -> "DaRecConfig":
        if self.dim is not None and self.dim < 1:
            raise ValueError("method.darec.dim must be >= 1")
        if self.n_clusters < 2:
            raise ValueError("method.darec.n_clusters must be >= 2")
        if self.kmeans_every < 1 or self.kmeans_iters < 1:
            raise ValueError("method.darec.kmeans_every and method.darec.kmeans_iters must be >= 1")
        if self.cluster_temperature <= 0:
            raise ValueError("method.darec.cluster_temperature must be > 0")
        return self


class MethodConfig(Section):
    name: str = "base"
    """Method plugin (see `bridgerec methods`): base, rlmrec-con, rlmrec-gen, darec, ..."""
    loss_weights: dict[str, float] = {}
    """Weight per named loss (e.g. {align: 0.1}); a loss not listed has weight 1. Names: base: rec;
    rlmrec-con: rec, align; rlmrec-gen: rec, recon; darec: rec, rec_shared, orth, shared, global, local."""
    semantic: SemanticInputConfig = SemanticInputConfig()
    """Where the LLM-side embeddings of the alignment methods (rlmrec-*, darec) come from."""
    rlmrec: RLMRecConfig = RLMRecConfig()
    """RLMRec (arXiv 2310.15950) settings: rlmrec-con and rlmrec-gen."""
    darec: DaRecConfig = DaRecConfig()
    """DaRec (arXiv 2408.08231) settings."""
