"""LoRA through PEFT: wrap a model, save and load adapters, merge an adapter for serving.

An adapter directory is PEFT's (``adapter_config.json``, ``adapter_model.safetensors``); when the
vocabulary was extended (BDLM entity tokens) the tokenizer is saved beside it, and loading or
merging resizes the base model to that tokenizer first. Merged models are cached under
``<models_dir>/merged-<hash>`` so vLLM and Serve load an ordinary checkpoint.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from typing import Any, Optional, Sequence

from bridgerec.llm.config import LLMConfig, LoRAConfig

__all__ = [
    "peft_lora_config",
    "apply_lora",
    "save_adapter",
    "load_adapter",
    "merge_adapter",
    "serving_model_path",
    "trainable_parameter_names",
]


def peft_lora_config(cfg: LoRAConfig, trainable_token_indices: Optional[Sequence[int]] = None,
                     modules_to_save: Optional[Sequence[str]] = None):
    """A ``peft.LoraConfig`` for a causal LM from our config.

    ``trainable_token_indices``: embedding rows that train (PEFT TrainableTokens; BDLM entity rows);
    ``modules_to_save``: modules trained in full (e.g. ``embed_tokens`` when all rows train).
    """
    from peft import LoraConfig, TaskType

    return LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        trainable_token_indices=list(trainable_token_indices) if trainable_token_indices is not None else None,
        modules_to_save=list(modules_to_save) if modules_to_save else None,
    )


def apply_lora(model: Any, cfg: LoRAConfig, trainable_token_indices: Optional[Sequence[int]] = None,
               modules_to_save: Optional[Sequence[str]] = None):
    """Wrap ``model`` in a PEFT model: only LoRA weights (and the given rows/modules) train."""
    from peft import get_peft_model

    return get_peft_model(model, peft_lora_config(cfg, trainable_token_indices, modules_to_save))


def trainable_parameter_names(model: Any) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]


def save_adapter(peft_model: Any, out_dir: str, tokenizer: Any = None) -> str:
    """Save the adapter (and the tokenizer, needed when the vocabulary was extended)."""
    os.makedirs(out_dir, exist_ok=True)
    peft_model.save_pretrained(out_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    return out_dir


def _has_tokenizer(path: str) -> bool:
    return os.path.exists(os.path.join(path, "tokenizer_config.json"))


def load_adapter(base_model: Any, adapter_dir: str, is_trainable: bool = False):
    """``base_model`` with the adapter at ``adapter_dir`` (resized first to the adapter's tokenizer)."""
    from peft import PeftModel

    if _has_tokenizer(adapter_dir):
        from bridgerec.llm.backbone import load_tokenizer

        n = len(load_tokenizer(adapter_dir))
        if base_model.get_input_embeddings().weight.shape[0] != n:
            base_model.resize_token_embeddings(n, mean_resizing=False)
    return PeftModel.from_pretrained(base_model, adapter_dir, is_trainable=is_trainable)


def merge_adapter(base_path: str, adapter_dir: str, out_dir: str, dtype: str = "auto") -> str:
    """Merge the adapter into the base weights and save an ordinary checkpoint (+ tokenizer) to ``out_dir``."""
    from bridgerec.llm.backbone import load_causal_lm, load_tokenizer

    tmp = f"{out_dir}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    base = load_causal_lm(base_path, dtype, "cpu")
    merged = load_adapter(base, adapter_dir).merge_and_unload()
    merged.save_pretrained(tmp)
    tok = load_tokenizer(adapter_dir if _has_tokenizer(adapter_dir) else base_path, padding_side="right")
    tok.save_pretrained(tmp)
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    os.rename(tmp, out_dir)
    return out_dir


def _dir_key(path: str) -> str:
    h = hashlib.sha256(os.path.abspath(path).encode())
    for root, _, files in sorted(os.walk(path)):
        for name in sorted(files):
            full = os.path.join(root, name)
            h.update(f"{os.path.relpath(full, path)}:{os.path.getsize(full)}:{int(os.path.getmtime(full))}".encode())
    return h.hexdigest()[:16]


def serving_model_path(cfg: LLMConfig, base_path: str, work_dir: str) -> str:
    """The checkpoint engines load: ``base_path``, or the base merged with ``cfg.lora.adapter`` (cached)."""
    if not cfg.lora.adapter:
        return base_path
    models_dir = cfg.models_dir or os.path.join(work_dir, "models")
    key = hashlib.sha256(f"{base_path}|{_dir_key(cfg.lora.adapter)}".encode()).hexdigest()[:16]
    out = os.path.abspath(os.path.join(models_dir, f"merged-{key}"))
    if not os.path.exists(os.path.join(out, "config.json")):
        os.makedirs(models_dir, exist_ok=True)
        merge_adapter(base_path, cfg.lora.adapter, out, cfg.dtype)
    return out
