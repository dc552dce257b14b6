"""Shared part of the stages that call the LLM: cache key, provenance, prompt rendering in workers."""

from __future__ import annotations

import abc
import json
from typing import Any, Callable

import pandas as pd
import pyarrow as pa

from bridgerec.augment.base import Stage
from bridgerec.llm.engine import GenerationParams
from bridgerec.llm.prompts import PLAIN, ChatFormat, Prompt, engine_text

__all__ = ["LLMStage", "render_batch", "resolve", "llm_output_columns"]


def resolve(obj: Any) -> Any:
    """Values passed through ``fn_kwargs`` may be object refs (large shared inputs)."""
    import ray

    return ray.get(obj) if isinstance(obj, ray.ObjectRef) else obj


def render_batch(batch: pd.DataFrame, row_fn: Callable[..., Prompt], catalog: Any, sampling_json: str,
                 chat: ChatFormat = PLAIN, **options: Any) -> pd.DataFrame:
    """Ray Data batch function: ``row_fn(row, catalog, **options) -> Prompt`` for every row, in the
    backbone's chat format (the ``prompt`` column is the text the engine receives)."""
    catalog = resolve(catalog)
    prompts = [row_fn(row, catalog, **options) for row in batch.itertuples(index=False)]
    out = batch.copy()
    out["prompt"] = [engine_text(p, chat) for p in prompts]
    out["prompt_iids_json"] = [json.dumps(list(p.iids)) for p in prompts]
    out["sampling_json"] = sampling_json
    return out


def llm_output_columns(shard: pd.DataFrame) -> dict[str, Any]:
    """The columns every LLM stage output keeps: the prompt, the item ids it shows, token counts."""
    return {
        "prompt": shard["prompt"].astype(str).tolist() if len(shard) else [],
        "prompt_iids": [json.loads(s) for s in shard["prompt_iids_json"]] if len(shard) else [],
        "num_input_tokens": shard["num_input_tokens"].astype("int64").tolist() if len(shard) else [],
        "num_generated_tokens": shard["num_generated_tokens"].astype("int64").tolist() if len(shard) else [],
    }


class LLMStage(Stage):
    """A stage whose rows come from one generation each."""

    uses_llm = True
    list_columns = {"prompt_iids": pa.list_(pa.int64())}

    @abc.abstractmethod
    def params(self) -> GenerationParams:
        """Sampling parameters of the stage's generations."""

    @abc.abstractmethod
    def stage_config(self) -> dict[str, Any]:
        """The stage's own settings (part of the cache key)."""

    @abc.abstractmethod
    def row_prompt(self) -> tuple[Callable[..., Prompt], dict[str, Any]]:
        """(module-level ``fn(row, catalog, **options) -> Prompt``, options)."""

    @property
    def prompt_version(self) -> str:
        return self.cfg.llm.prompt_version

    def key_payload(self) -> dict[str, Any]:
        return {"stage": self.stage_config(), "model": self.ctx.model_id, "prompt_version": self.prompt_version,
                "chat": self.ctx.chat.to_dict(), "sampling": self.params().to_dict()}

    def provenance(self) -> dict[str, Any]:
        return {"model": self.ctx.model_id, "prompt_version": self.prompt_version,
                "sampling_params": json.dumps(self.params().to_dict(), sort_keys=True)}

    def render(self) -> tuple[Callable[..., pd.DataFrame], dict[str, Any]]:
        fn, options = self.row_prompt()
        kwargs = dict(row_fn=fn, catalog=self.ctx.catalog_ref, sampling_json=json.dumps(self.params().to_dict()),
                      chat=self.ctx.chat, version=self.prompt_version, **options)
        return render_batch, kwargs
