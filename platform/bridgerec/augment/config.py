"""Config section of the LLM augmentation stages (``cfg.augment``; wired into the root Config).

Light on purpose (pydantic only). Every name in ``augment.stages`` is checked against
:data:`bridgerec.augment.base.STAGES` by the root config.
"""

from __future__ import annotations

from typing import Optional

from pydantic import model_validator

from bridgerec._config_base import Section

__all__ = [
    "AugmentConfig",
    "AttributesStageConfig",
    "PairsStageConfig",
    "ProfilesStageConfig",
    "PromptAugStageConfig",
    "TextEmbeddingsStageConfig",
]


class ProfilesStageConfig(Section):
    users: bool = True
    """Generate user profiles."""
    items: bool = True
    """Generate item profiles."""
    max_history: int = 20
    """Most recent training interactions shown in a user prompt."""
    max_text_chars: int = 160
    """Item descriptions are cut to this many characters in prompts."""
    item_co_items: int = 5
    """Items most often co-interacted with (training split only) shown in an item prompt."""
    max_tokens: int = 128
    """Most new tokens of a profile."""
    guided_json: bool = False
    """Constrain profiles to the answer's JSON schema with vLLM's guided decoding (llm.engine=vllm;
    compact JSON, no free whitespace). Unguided, SmolLM2-135M-Instruct wrote no parseable JSON for
    16 of 16 users, guided 14 of 16 (the rest cut by max_tokens keep their fields); the transformers
    engine has no guided decoding, so with llm.engine=hf the JSON is parsed as generated."""
    summary_max_chars: int = 240
    """Longest summary the guided JSON allows (keeps the answer inside max_tokens)."""
    reasoning_max_chars: int = 120
    """Longest reasoning the guided JSON allows."""


class PairsStageConfig(Section):
    sparse_max_train: int = 3
    """Users with at most this many training interactions count as sparse and get synthetic pairs."""
    pairs_per_user: int = 1
    """Item pairs sampled per sparse user (each yields one extra training triple)."""
    max_history: int = 10
    """Most recent training interactions shown in a pair prompt."""
    seed: int = 0
    """Seed of the pair sampling."""


class AttributesStageConfig(Section):
    columns: list[str] = ["text"]
    """Item columns whose empty/missing values the LLM fills."""
    max_tokens: int = 64
    """Most new tokens of a filled attribute."""


class TextEmbeddingsStageConfig(Section):
    items: bool = True
    """Embed item texts (title + description)."""
    profiles: bool = True
    """Embed the user and item profiles (runs the profiles stage first when needed)."""


class PromptAugStageConfig(Section):
    embeddings: Optional[str] = None
    """Domain-model embeddings: a trained run's `runs:/<run id>/model` (or `models:/<name>@<alias>`),
    a directory with user_embeddings.npy / item_embeddings.npy, or an .npz with `user_emb` (U, d)
    and `item_emb` (I, d); arrays can also be passed to run_augmentations directly."""
    n_similar_users: int = 3
    """Similar users (cosine of domain user embeddings) whose recent history augments a prompt."""
    similar_history: int = 5
    """Most recent training items of each similar user shown."""
    top_k: int = 10
    """Candidates from the domain model's top-K (training items excluded) in a ranking prompt."""
    max_history: int = 10
    """Most recent training interactions of the user shown."""


class AugmentConfig(Section):
    stages: list[str] = []
    """Augmentation stages to run (any subset, dependencies run first): profiles, text_embeddings,
    pairs, attributes, prompt_aug."""
    output_root: Optional[str] = None
    """Where stage outputs go; default <dataset_dir>/augment (then <stage>/<hash>/)."""
    shard_rows: int = 256
    """Rows per output Parquet shard (the unit of resume after an interruption)."""
    max_users: Optional[int] = None
    """Only the first N users take part (smoke runs); None means all."""
    max_items: Optional[int] = None
    """Only the first N items take part (smoke runs); None means all."""
    profiles: ProfilesStageConfig = ProfilesStageConfig()
    """User and item profiles (RLMRec style)."""
    pairs: PairsStageConfig = PairsStageConfig()
    """Llama4Rec preference pairs for sparse users."""
    attributes: AttributesStageConfig = AttributesStageConfig()
    """Llama4Rec filling of missing item attributes."""
    text_embeddings: TextEmbeddingsStageConfig = TextEmbeddingsStageConfig()
    """Text-encoder embeddings of item texts and profiles."""
    prompt_aug: PromptAugStageConfig = PromptAugStageConfig()
    """Prompt-augmentation records for the LLM ranker (similar users, domain top-K)."""

    @model_validator(mode="after")
    def _positive(self) -> "AugmentConfig":
        if self.shard_rows < 1:
            raise ValueError("augment.shard_rows must be >= 1")
        return self
