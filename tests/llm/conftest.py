"""Session fixtures of the LLM tests: one tiny backbone and ONE engine of each kind.

vLLM runs in-process (``llm.vllm_multiprocessing=false``: seconds to start instead of a minute on
a small CPU machine) with an explicit 64 MiB KV cache; float32 so both engines decode the same
greedy tokens.
"""

from __future__ import annotations

import pytest

LLM_TEST_OVERRIDES = {
    "dtype": "float32",
    "max_model_len": 512,
    "vllm_multiprocessing": False,
    "kv_cache_memory_bytes": 64 * 2**20,
    "hf_batch_size": 8,
    "tiny": {"warmup_steps": 40},
}
"""The LLM settings of the tests (tests/augment uses the same ones, so the backbone is shared on disk)."""


def llm_test_config(base):
    """``base`` (the session tiny config) with the test LLM settings."""
    cfg = base.model_copy(deep=True)
    cfg.llm = cfg.llm.model_validate({**cfg.llm.model_dump(), **LLM_TEST_OVERRIDES,
                                      "tiny": {**cfg.llm.tiny.model_dump(), **LLM_TEST_OVERRIDES["tiny"]}})
    return cfg


@pytest.fixture(scope="session")
def llm_config(tiny_config):
    return llm_test_config(tiny_config)


@pytest.fixture(scope="session")
def dataset(tiny_dataset):
    from bridgerec.data.dataset import DatasetDir

    return DatasetDir(tiny_dataset)


@pytest.fixture(scope="session")
def tiny_backbone(llm_config, dataset):
    from bridgerec.llm.backbone import resolve_backbone

    return resolve_backbone(llm_config.llm, llm_config.work_dir, dataset)


@pytest.fixture(scope="session")
def vllm_engine(llm_config, tiny_backbone):
    from bridgerec.llm.engine import build_engine

    engine = build_engine(llm_config.llm, tiny_backbone.path, engine="vllm")
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def hf_engine(llm_config, tiny_backbone):
    from bridgerec.llm.engine import build_engine

    engine = build_engine(llm_config.llm, tiny_backbone.path, engine="hf")
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def tokenizer(tiny_backbone):
    from bridgerec.llm.backbone import load_tokenizer

    return load_tokenizer(tiny_backbone.path)
