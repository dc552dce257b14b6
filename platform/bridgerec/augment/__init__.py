"""Ray Data augmentation stages that call the LLM engines and the text encoder.

Stages (config ``augment.stages``; any subset, dependencies run first):

- ``profiles``: RLMRec user/item profiles from training interactions only;
- ``text_embeddings``: text-encoder embeddings of item texts and profiles;
- ``pairs``: Llama4Rec preference pairs for sparse users (extra training triples);
- ``attributes``: Llama4Rec filling of missing item attributes;
- ``prompt_aug``: Llama4Rec prompt-augmentation records (similar users, domain top-K).

Each writes Parquet with provenance columns to ``<dataset_dir>/augment/<stage>/<hash>/``, keyed by
a content hash of its inputs, resumable shard by shard. :func:`run_augmentations` runs them.
"""

from bridgerec.augment.catalog import Catalog
from bridgerec.augment.base import (
    PROVENANCE_COLUMNS,
    STAGES,
    AugmentContext,
    Stage,
    StageResult,
    load_domain_embeddings,
    read_stage_output,
    register_stage,
)

# stage modules register themselves on import; this list is the registry's content
from bridgerec.augment.profiles import ProfilesStage, parse_profile
from bridgerec.augment.text_embeddings import TextEmbeddingsStage, embedding_matrix, item_text
from bridgerec.augment.pairs import PairsStage, synthetic_triples
from bridgerec.augment.attributes import AttributesStage, fill_item_attributes
from bridgerec.augment.prompt_aug import PromptAugStage
from bridgerec.augment.runner import load_stage, plan_stages, run_augmentations, stage_output_dir

__all__ = [
    "run_augmentations",
    "stage_output_dir",
    "load_stage",
    "plan_stages",
    "read_stage_output",
    "STAGES",
    "Stage",
    "StageResult",
    "AugmentContext",
    "load_domain_embeddings",
    "Catalog",
    "register_stage",
    "PROVENANCE_COLUMNS",
    "ProfilesStage",
    "TextEmbeddingsStage",
    "PairsStage",
    "AttributesStage",
    "PromptAugStage",
    "parse_profile",
    "embedding_matrix",
    "item_text",
    "synthetic_triples",
    "fill_item_attributes",
]
