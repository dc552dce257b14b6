"""The tiny backbone: an ordinary HF directory, tokenizer trained on the dataset text, reused by hash."""

from __future__ import annotations

import json
import os

import pytest


def test_tiny_is_an_ordinary_hf_directory(tiny_backbone, llm_config):
    names = set(os.listdir(tiny_backbone.path))
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    with open(os.path.join(tiny_backbone.path, "config.json")) as fh:
        cfg = json.load(fh)
    assert cfg["architectures"] == ["LlamaForCausalLM"]
    assert cfg["hidden_size"] == llm_config.llm.tiny.hidden_size
    assert cfg["num_hidden_layers"] == llm_config.llm.tiny.num_hidden_layers


def test_tiny_loads_in_transformers_and_is_small(tiny_backbone):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_backbone.path)
    assert sum(p.numel() for p in model.parameters()) < 2_000_000


def test_tokenizer_is_trained_on_the_dataset_text(tokenizer, dataset):
    items = dataset.items()
    words = {w.lower() for t in items["text"] for w in t.replace(",", " ").replace(".", " ").split()}
    # frequent dataset words are single tokens after a leading space (byte-level BPE)
    single = [w for w in words if len(tokenizer(" " + w, add_special_tokens=False)["input_ids"]) == 1]
    assert len(single) / len(words) > 0.5
    ids = tokenizer(items["title"].iloc[0])["input_ids"]
    assert ids[0] == tokenizer.bos_token_id


def test_resolve_reuses_the_built_directory(llm_config, dataset, tiny_backbone):
    from bridgerec.llm.backbone import resolve_backbone

    again = resolve_backbone(llm_config.llm, llm_config.work_dir, dataset)
    assert again.path == tiny_backbone.path and not again.built
    other = llm_config.llm.model_copy(update={"tiny": llm_config.llm.tiny.model_copy(update={"seed": 1})})
    from bridgerec.llm.backbone import _tiny_hash

    assert _tiny_hash(other.tiny, dataset.content_hash) != _tiny_hash(llm_config.llm.tiny, dataset.content_hash)


def test_a_path_or_hub_id_passes_through(llm_config, tiny_backbone):
    from bridgerec.llm.backbone import resolve_backbone

    local = resolve_backbone(llm_config.llm.model_copy(update={"model": tiny_backbone.path}), llm_config.work_dir)
    assert local.path == tiny_backbone.path and not local.built
    hub = resolve_backbone(llm_config.llm.model_copy(update={"model": "org/some-llm", "revision": "abc"}), llm_config.work_dir)
    assert hub.path == "org/some-llm" and len(hub.fingerprint) == 16


def test_tiny_needs_a_dataset(llm_config):
    from bridgerec.llm.backbone import resolve_backbone

    with pytest.raises(ValueError, match="needs a prepared dataset"):
        resolve_backbone(llm_config.llm, llm_config.work_dir, None)


def test_tiny_config_rejects_head_sizes_vllm_cpu_cannot_run():
    from bridgerec.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="head size"):
        load_config(None, ["llm.tiny.hidden_size=96", "llm.tiny.num_attention_heads=4"])
    with pytest.raises(ConfigError, match="augment.stages"):
        load_config(None, ["augment.stages=[profiles,nope]"])
