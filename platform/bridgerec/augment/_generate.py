"""Generation over a Ray Dataset with the configured engine.

``vllm``: a ray.data.llm processor (``build_processor`` + ``vLLMEngineProcessorConfig``);
``hf``: an actor pool of the transformers engine. Both take rows with ``prompt`` and
``sampling_json`` and return the same columns (:data:`~bridgerec.llm.ray_llm.GENERATED_COLUMNS`).
"""

from __future__ import annotations

import json

import pandas as pd

from bridgerec.llm.config import LLMConfig
from bridgerec.llm.engine import GenerationParams
from bridgerec.llm.ray_llm import GENERATED_COLUMNS, build_generation_processor

__all__ = ["generate_dataset"]


class _HFGenerate:
    """Ray Data actor: the transformers engine on one batch (rows grouped by sampling parameters)."""

    def __init__(self, cfg_json: str, model_path: str):
        from bridgerec.llm.hf_engine import HFEngine

        self.engine = HFEngine(LLMConfig.model_validate_json(cfg_json), model_path)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        batch = batch.reset_index(drop=True)
        texts: list[str] = [""] * len(batch)
        n_new, n_in = [0] * len(batch), [0] * len(batch)
        for sampling_json, idx in batch.groupby("sampling_json").groups.items():
            params = GenerationParams().replace(**json.loads(sampling_json))
            idx = list(idx)
            for i, g in zip(idx, self.engine.generate(batch.loc[idx, "prompt"].tolist(), params)):
                texts[i], n_new[i], n_in[i] = g.text, g.num_tokens, len(g.prompt_token_ids)
        out = batch.drop(columns=["sampling_json"])
        out["generated_text"], out["num_generated_tokens"], out["num_input_tokens"] = texts, n_new, n_in
        return out


def generate_dataset(ds, cfg: LLMConfig, model_path: str, keep_columns: tuple[str, ...]):
    """``ds`` rows (``prompt``, ``sampling_json``, ``keep_columns``) -> ``keep_columns`` + generated columns."""
    if cfg.engine == "vllm":
        return build_generation_processor(cfg, model_path, keep_columns)(ds)
    from ray.data import ActorPoolStrategy

    cols = list(dict.fromkeys([*keep_columns, "prompt", "sampling_json"]))
    return ds.select_columns(cols).map_batches(
        _HFGenerate,
        fn_constructor_kwargs=dict(cfg_json=cfg.model_dump_json(), model_path=model_path),
        batch_size=cfg.batch_size,
        batch_format="pandas",
        compute=ActorPoolStrategy(size=cfg.concurrency),
        num_cpus=cfg.num_cpus,
    ).select_columns([*keep_columns, *GENERATED_COLUMNS])
