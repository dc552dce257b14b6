"""BDLM entity tokens (preload through the projection) and the LoRA save / load / merge round trip."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from bridgerec.llm import prompts as P

N_USERS, N_ITEMS, D_DOMAIN = 6, 9, 16


@pytest.fixture()
def domain_emb():
    rng = np.random.default_rng(0)
    return rng.normal(size=(N_USERS, D_DOMAIN)).astype(np.float32), rng.normal(size=(N_ITEMS, D_DOMAIN)).astype(np.float32)


def _fresh(tiny_backbone):
    from bridgerec.llm.backbone import load_causal_lm, load_tokenizer

    return load_causal_lm(tiny_backbone.path, "float32"), load_tokenizer(tiny_backbone.path)


def _cfg(llm_config, **entity):
    llm = llm_config.llm.model_copy(deep=True)
    llm.entity_tokens = llm.entity_tokens.model_copy(update=entity)
    return llm


@pytest.mark.parametrize("init", ["learned", "fixed"])
def test_preloaded_rows_equal_the_projected_domain_embeddings(tiny_backbone, llm_config, domain_emb, init):
    from bridgerec.llm.entity import prepare_bdlm_model

    model, tok = _fresh(tiny_backbone)
    base_rows = model.get_input_embeddings().weight.detach().clone()
    peft_model, layout, proj = prepare_bdlm_model(model, tok, *domain_emb, _cfg(llm_config, init=init))
    assert layout.user_offset == base_rows.shape[0] and layout.item_offset == layout.user_offset + N_USERS
    assert tok.convert_tokens_to_ids("<u_0>") == layout.user_offset
    assert tok.convert_tokens_to_ids(f"<i_{N_ITEMS - 1}>") == layout.item_offset + N_ITEMS - 1
    ids = torch.tensor(layout.all_ids())
    with torch.no_grad():
        rows = peft_model.get_input_embeddings()(ids[None])[0]  # (n, d_model)
        expected = proj(torch.cat([torch.from_numpy(domain_emb[0]), torch.from_numpy(domain_emb[1])]))
    torch.testing.assert_close(rows, expected)
    # the projection keeps the scale of the existing rows; old rows are untouched
    assert abs(float(expected.std()) / float(base_rows.std()) - 1) < 1e-3
    with torch.no_grad():
        old = peft_model.get_input_embeddings()(torch.arange(base_rows.shape[0])[None])[0]
    torch.testing.assert_close(old, base_rows)
    assert proj.weight.requires_grad is (init == "learned")


def test_random_init_ignores_the_domain_model(tiny_backbone, llm_config, domain_emb):
    from bridgerec.llm.entity import prepare_bdlm_model

    model, tok = _fresh(tiny_backbone)
    _, layout, proj = prepare_bdlm_model(model, tok, *domain_emb, _cfg(llm_config, init="random"))
    assert proj is None and layout.n_items == N_ITEMS


def test_only_new_rows_and_lora_train(tiny_backbone, llm_config, domain_emb):
    from bridgerec.llm.entity import prepare_bdlm_model
    from bridgerec.llm.lora import trainable_parameter_names

    model, tok = _fresh(tiny_backbone)
    peft_model, layout, _ = prepare_bdlm_model(model, tok, *domain_emb, _cfg(llm_config))
    names = trainable_parameter_names(peft_model)
    assert names and all("lora_" in n or "trainable_tokens" in n for n in names)
    assert any("q_proj.lora_A" in n for n in names) and any("trainable_tokens" in n for n in names)
    # one SGD step moves entity rows but not the original vocabulary
    emb = peft_model.get_input_embeddings()
    vocab = torch.arange(layout.user_offset)
    with torch.no_grad():
        before_old, before_new = emb(vocab[None])[0].clone(), emb(torch.tensor(layout.all_ids())[None])[0].clone()
    prompt = P.bdlm_prompt(1, [P.ItemView(2, "x"), P.ItemView(3, "y")])
    ex = P.encode_example(tok, prompt.text, P.bdlm_target(P.ItemView(4, "z")))
    opt = torch.optim.SGD([p for p in peft_model.parameters() if p.requires_grad], lr=1.0)
    peft_model(**{k: torch.tensor([v]) for k, v in ex.items()}).loss.backward()
    opt.step()
    with torch.no_grad():
        after_old, after_new = emb(vocab[None])[0], emb(torch.tensor(layout.all_ids())[None])[0]
    torch.testing.assert_close(after_old, before_old)
    assert not torch.allclose(after_new, before_new)


def test_entity_tokens_are_single_ids(tiny_backbone, llm_config, domain_emb):
    from bridgerec.llm.entity import add_entity_tokens

    model, tok = _fresh(tiny_backbone)
    layout = add_entity_tokens(tok, model, N_USERS, N_ITEMS)
    ids = tok(P.bdlm_prompt(5, [P.ItemView(8, "t")]).text)["input_ids"]
    assert layout.user_offset + 5 in ids and layout.item_offset + 8 in ids
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    with pytest.raises(ValueError, match="already existed"):
        add_entity_tokens(tok, model, N_USERS, N_ITEMS)


@pytest.fixture(scope="module")
def adapter_run(tiny_backbone, llm_config, tmp_path_factory):
    """A BDLM model with non-trivial LoRA weights, saved as an adapter; its reference logits."""
    from bridgerec.llm.entity import prepare_bdlm_model
    from bridgerec.llm.lora import save_adapter

    rng = np.random.default_rng(0)
    model, tok = _fresh(tiny_backbone)
    peft_model, _, _ = prepare_bdlm_model(model, tok, rng.normal(size=(N_USERS, D_DOMAIN)),
                                          rng.normal(size=(N_ITEMS, D_DOMAIN)), _cfg(llm_config))
    with torch.no_grad():  # LoRA B starts at zero; make the adapter change the outputs
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    prompt = P.bdlm_prompt(2, [P.ItemView(1, "a"), P.ItemView(7, "b")]).text
    batch = {k: torch.tensor([v]) for k, v in P.encode_example(tok, prompt, " <i_3>").items()}
    peft_model.eval()
    with torch.no_grad():
        ref = peft_model(**batch).logits
    out = tmp_path_factory.mktemp("lora")
    adapter = save_adapter(peft_model, str(out / "adapter"), tok)
    return adapter, batch, ref, str(out / "models")


def test_lora_save_load_round_trip(tiny_backbone, adapter_run):
    from bridgerec.llm.backbone import load_causal_lm
    from bridgerec.llm.lora import load_adapter

    adapter, batch, ref, _ = adapter_run
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= set(os.listdir(adapter))
    loaded = load_adapter(load_causal_lm(tiny_backbone.path, "float32"), adapter).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, ref)


def _merged_config(llm_config, adapter_run):
    adapter, _, _, models_dir = adapter_run
    llm = llm_config.llm.model_copy(deep=True)
    llm.lora = llm.lora.model_copy(update={"adapter": adapter})
    llm.models_dir = models_dir
    return llm


def test_merge_for_serving_matches_the_adapter(tiny_backbone, llm_config, adapter_run):
    from bridgerec.llm.backbone import load_causal_lm
    from bridgerec.llm.lora import serving_model_path

    _, batch, ref, _ = adapter_run
    llm = _merged_config(llm_config, adapter_run)
    merged = serving_model_path(llm, tiny_backbone.path, llm_config.work_dir)
    assert merged != tiny_backbone.path
    assert serving_model_path(llm, tiny_backbone.path, llm_config.work_dir) == merged  # cached
    with torch.no_grad():
        torch.testing.assert_close(load_causal_lm(merged, "float32")(**batch).logits, ref, atol=1e-4, rtol=1e-4)
