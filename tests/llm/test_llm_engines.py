"""The Engine contract on the tiny model: vLLM (CPU) and transformers give the same results."""

from __future__ import annotations

import numpy as np
import pytest

from bridgerec.llm.engine import ENGINES, Generation, GenerationParams, build_engine, register_engine

PROMPTS = ["The Galaxy Rocket", "A story about the coach and the league.", "Beyond the", "Fans of love will enjoy"]


def test_generate_shapes_and_greedy_tokens_match(vllm_engine, hf_engine):
    params = GenerationParams(max_tokens=12)
    gv, gh = vllm_engine.generate(PROMPTS, params), hf_engine.generate(PROMPTS, params)
    assert len(gv) == len(gh) == len(PROMPTS)
    for a, b in zip(gv, gh):
        assert isinstance(a, Generation) and isinstance(b, Generation)
        assert a.prompt_token_ids == b.prompt_token_ids
        assert a.token_ids == b.token_ids  # greedy, float32: same tokens
        assert a.text == b.text and a.finish_reason == b.finish_reason
        assert len(a.token_ids) <= 12 and a.finish_reason in ("stop", "length")
    assert len({tuple(g.token_ids) for g in gv}) > 1  # the warmed-up tiny model does not repeat one token


def test_allowed_token_ids_restrict_the_answer(vllm_engine, hf_engine, tokenizer):
    from bridgerec.augment.pairs import choice_token_ids

    allowed = choice_token_ids(tokenizer)
    params = GenerationParams(max_tokens=1, allowed_token_ids=allowed)
    for engine in (vllm_engine, hf_engine):
        gens = engine.generate(PROMPTS, params)
        assert all(len(g.token_ids) == 1 and g.token_ids[0] in allowed for g in gens)
        assert all(g.text in ("A", "B") for g in gens)


def test_stop_strings_cut_the_text(vllm_engine, hf_engine):
    params = GenerationParams(max_tokens=40, stop=("\n",))
    for engine in (vllm_engine, hf_engine):
        for g in engine.generate(PROMPTS, params):
            assert "\n" not in g.text


def test_embed_shapes_match_and_values_agree(vllm_engine, hf_engine, tiny_backbone):
    import json
    import os

    hidden = json.load(open(os.path.join(tiny_backbone.path, "config.json")))["hidden_size"]
    ev, eh = vllm_engine.embed(PROMPTS), hf_engine.embed(PROMPTS)
    assert ev.shape == eh.shape == (len(PROMPTS), hidden) and ev.dtype == eh.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ev, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(ev, eh, atol=1e-4)


def test_empty_inputs(vllm_engine, hf_engine):
    for engine in (vllm_engine, hf_engine):
        assert engine.generate([], GenerationParams()) == []


def test_registry_rejects_duplicates_and_unknown_names(llm_config, tiny_backbone):
    assert {"vllm", "hf"} <= set(ENGINES)
    with pytest.raises(ValueError, match="already registered"):
        register_engine("hf", lambda cfg, path: None)
    with pytest.raises(ValueError, match="unknown engine"):
        build_engine(llm_config.llm, tiny_backbone.path, engine="nope")


def test_generation_params_round_trip():
    p = GenerationParams(max_tokens=3, stop=["x"], allowed_token_ids=[5, 6])
    d = p.to_dict()
    assert d == {"max_tokens": 3, "temperature": 0.0, "top_p": 1.0, "seed": 0, "stop": ["x"], "allowed_token_ids": [5, 6]}
    assert GenerationParams().replace(**d) == p
    assert "allowed_token_ids" not in GenerationParams().to_dict()


def test_vllm_env_frees_the_reserved_core(monkeypatch):
    """vLLM's CPU backend keeps a core off its compute threads unless told otherwise (on 2 cores
    that halves throughput): llm.cpu_reserved_cores=0 by default, None keeps vLLM's choice, and a
    variable the user set wins. The Ray engine actors get the same environment."""
    from bridgerec.llm.config import LLMConfig
    from bridgerec.llm.ray_llm import engine_runtime_env
    from bridgerec.llm.vllm_engine import RESERVED_CPU_ENV, vllm_env

    monkeypatch.delenv(RESERVED_CPU_ENV, raising=False)
    assert vllm_env(LLMConfig())[RESERVED_CPU_ENV] == "0"
    assert RESERVED_CPU_ENV not in vllm_env(LLMConfig(cpu_reserved_cores=None))
    assert engine_runtime_env(LLMConfig(cpu_reserved_cores=1))["env_vars"][RESERVED_CPU_ENV] == "1"
    monkeypatch.setenv(RESERVED_CPU_ENV, "2")
    assert vllm_env(LLMConfig())[RESERVED_CPU_ENV] == "2"
