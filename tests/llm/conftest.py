"""Session fixtures of the LLM tests: one tiny backbone and ONE engine of each kind.

The LLM settings come from the root ``llm_config`` fixture (tests/conftest.py): vLLM in-process
(seconds to start instead of a minute on a small CPU machine), an explicit 64 MiB KV cache, float32
so both engines decode the same greedy tokens.
"""

from __future__ import annotations

import pytest

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


# ------------------------------------------------------------------- SmolLM2 (a real pretrained LLM)


@pytest.fixture(scope="session")
def smollm2_config(llm_config):
    """The test LLM settings on the packaged SmolLM2-135M-Instruct backbone (a 256 MiB KV cache:
    its 30 layers need ~46 KiB per token in float32)."""
    cfg = llm_config.model_copy(deep=True)
    cfg.llm = cfg.llm.model_copy(update={"model": "smollm2-135m", "kv_cache_memory_bytes": 256 * 2**20,
                                         "max_model_len": 1024})
    return cfg


@pytest.fixture(scope="session")
def smollm2_backbone(smollm2_config):
    from bridgerec.llm.backbone import resolve_backbone

    return resolve_backbone(smollm2_config.llm, smollm2_config.work_dir)


@pytest.fixture(scope="session")
def smollm2_engines(smollm2_config, smollm2_backbone):
    """(vLLM, transformers) on SmolLM2, built once and closed together."""
    from bridgerec.llm.engine import build_engine

    engines = [build_engine(smollm2_config.llm, smollm2_backbone.path, engine=e) for e in ("vllm", "hf")]
    yield tuple(engines)
    for e in engines:
        e.close()
