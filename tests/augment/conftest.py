"""Session fixtures of the augmentation tests: one full run of every stage through vLLM.

The LLM settings are the root ``llm_config`` fixture's (tests/conftest.py), so both share the tiny backbone
built on disk. The run serves a merged BDLM adapter (entity tokens + LoRA), so it also checks that
a merged, vocabulary-extended checkpoint loads in vLLM through ray.data.llm.
"""

from __future__ import annotations

import numpy as np
import pytest

AUGMENT_TEST_OVERRIDES = {
    "shard_rows": 128,
    "profiles": {"max_tokens": 12, "max_history": 8},
    "attributes": {"columns": ["text", "genre"], "max_tokens": 8},
    "pairs": {"sparse_max_train": 2},
}


def augment_test_config(base, output_root: str, adapter: str | None = None):
    """``base`` is the root ``llm_config`` fixture (test LLM settings); adds the augmentation settings."""
    cfg = base.model_copy(deep=True)
    llm = cfg.llm.model_dump()
    llm["lora"] = {**llm["lora"], "adapter": adapter}
    cfg.llm = cfg.llm.model_validate(llm)
    aug = cfg.augment.model_dump()
    for key, value in AUGMENT_TEST_OVERRIDES.items():
        aug[key] = {**aug[key], **value} if isinstance(value, dict) else value
    cfg.augment = cfg.augment.model_validate({**aug, "output_root": output_root})
    return cfg


@pytest.fixture(scope="session")
def dataset(tiny_dataset):
    from bridgerec.data.dataset import DatasetDir

    return DatasetDir(tiny_dataset)


@pytest.fixture(scope="session")
def domain_embeddings(dataset, tmp_path_factory):
    """Random domain-model embeddings (U, 8), (I, 8) and the same as an .npz."""
    rng = np.random.default_rng(0)
    users = rng.normal(size=(dataset.n_users, 8)).astype(np.float32)
    items = rng.normal(size=(dataset.n_items, 8)).astype(np.float32)
    path = tmp_path_factory.mktemp("domain") / "domain.npz"
    np.savez(path, user_emb=users, item_emb=items)
    return users, items, str(path)


@pytest.fixture(scope="session")
def bdlm_adapter(llm_config, dataset, domain_embeddings, tmp_path_factory):
    """A BDLM adapter: entity tokens for every user/item, preloaded rows, non-zero LoRA weights."""
    import torch

    from bridgerec.llm.backbone import load_causal_lm, load_tokenizer, resolve_backbone
    from bridgerec.llm.entity import prepare_bdlm_model
    from bridgerec.llm.lora import save_adapter

    cfg = augment_test_config(llm_config, str(tmp_path_factory.mktemp("unused")))
    backbone = resolve_backbone(cfg.llm, cfg.work_dir, dataset)
    tok = load_tokenizer(backbone.path)
    model, _, _ = prepare_bdlm_model(load_causal_lm(backbone.path, "float32"), tok, domain_embeddings[0],
                                     domain_embeddings[1], cfg.llm)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    return save_adapter(model, str(tmp_path_factory.mktemp("bdlm") / "adapter"), tok)


@pytest.fixture(scope="session")
def aug_config(llm_config, bdlm_adapter, tmp_path_factory):
    return augment_test_config(llm_config, str(tmp_path_factory.mktemp("augment")), bdlm_adapter)


@pytest.fixture(scope="session")
def augmented(ray_session, aug_config, domain_embeddings):
    """Every stage once, LLM stages through ray.data.llm + vLLM on CPU: (results, seconds)."""
    import time

    from bridgerec.augment import run_augmentations

    t0 = time.time()
    stages = ["profiles", "text_embeddings", "pairs", "attributes", "prompt_aug"]
    results = run_augmentations(aug_config, stages, domain_embeddings=domain_embeddings[:2], log=lambda m: None)
    return results, time.time() - t0
