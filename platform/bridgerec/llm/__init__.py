"""LLM layer: backbones, tokenizer and entity tokens, LoRA, prompts, engines, text encoder.

- :mod:`~bridgerec.llm.backbone`: the `tiny` default (built from config) or any HF causal LM;
- :mod:`~bridgerec.llm.prompts`: the one prompt module (versioned templates, training encoding);
- :mod:`~bridgerec.llm.engine`: the Engine contract, ``build_engine`` (``vllm`` | ``hf``);
- :mod:`~bridgerec.llm.ray_llm`: ray.data.llm processors and the ray.serve.llm config;
- :mod:`~bridgerec.llm.entity`: BDLM ``<u_k>``/``<i_k>`` tokens preloaded from a domain model;
- :mod:`~bridgerec.llm.lora`: PEFT LoRA wrap / save / load / merge;
- :mod:`~bridgerec.llm.encoder`: the sentence encoder (MiniLM by default).

Names are resolved lazily (PEP 562), so importing the config (which imports
:mod:`bridgerec.llm.config`) does not import torch, transformers or vLLM.
"""

from bridgerec._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "LLMConfig": "config",
    "EncoderConfig": "config",
    "Backbone": "backbone",
    "resolve_backbone": "backbone",
    "load_tokenizer": "backbone",
    "load_causal_lm": "backbone",
    "model_fingerprint": "backbone",
    "Engine": "engine",
    "Generation": "engine",
    "GenerationParams": "engine",
    "ENGINES": "engine",
    "register_engine": "engine",
    "build_engine": "engine",
    "TextEncoder": "encoder",
    "default_encoder_path": "encoder",
    "EntityTokens": "entity",
    "EntityProjection": "entity",
    "add_entity_tokens": "entity",
    "preload_entity_rows": "entity",
    "prepare_bdlm_model": "entity",
    "apply_lora": "lora",
    "save_adapter": "lora",
    "load_adapter": "lora",
    "merge_adapter": "lora",
    "serving_model_path": "lora",
    "processor_config": "ray_llm",
    "build_generation_processor": "ray_llm",
    "serve_llm_config": "ray_llm",
    "build_llm_app": "ray_llm",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
