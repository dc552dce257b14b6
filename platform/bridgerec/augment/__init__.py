"""Ray Data augmentation stages that call the LLM engines and the text encoder.

Stages (config ``augment.stages``; any subset, dependencies run first):

- ``profiles``: RLMRec user/item profiles from training interactions only;
- ``text_embeddings``: text-encoder embeddings of item texts and profiles;
- ``pairs``: Llama4Rec preference pairs for sparse users (extra training triples);
- ``attributes``: Llama4Rec filling of missing item attributes;
- ``prompt_aug``: Llama4Rec prompt-augmentation records (similar users, domain top-K).

Each writes Parquet with provenance columns to ``<dataset_dir>/augment/<stage>/<hash>/``, keyed by
a content hash of its inputs, resumable shard by shard. :func:`run_augmentations` runs them.

Names resolve lazily (PEP 562): importing :mod:`bridgerec.augment.config` or the stage registry
(as the root config does) does not import pandas, Ray or the LLM layer.
"""

from bridgerec._lazy import lazy_exports

_EXPORTS = {
    "Catalog": "catalog",
    "PROVENANCE_COLUMNS": "base",
    "AugmentContext": "base",
    "Stage": "base",
    "StageResult": "base",
    "load_domain_embeddings": "base",
    "read_stage_output": "base",
    "STAGES": "registry",
    "register_stage": "registry",
    "AugmentConfig": "config",
    "ProfilesStage": "profiles",
    "parse_profile": "profiles",
    "TextEmbeddingsStage": "text_embeddings",
    "embedding_matrix": "text_embeddings",
    "item_text": "text_embeddings",
    "PairsStage": "pairs",
    "synthetic_triples": "pairs",
    "AttributesStage": "attributes",
    "fill_item_attributes": "attributes",
    "PromptAugStage": "prompt_aug",
    "load_stage": "runner",
    "plan_stages": "runner",
    "run_augmentations": "runner",
    "stage_output_dir": "runner",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
