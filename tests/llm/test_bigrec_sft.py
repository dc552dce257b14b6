"""BIGRec's instruction batches (:func:`bridgerec.methods.bigrec_core.encode_examples` padded by
:func:`bridgerec.training.sft.collate`) on the tiny
backbone's tokenizer: the loss sees the target title and EOS only, padding is masked, and a long
history is cut from the left so the target survives."""

from __future__ import annotations

import numpy as np
import torch

from bridgerec.llm import prompts as P
from bridgerec.methods.bigrec_core import Example, encode_examples, next_item_examples
from bridgerec.training.sft import collate

TITLES = {i: f"item title {i}" for i in range(20)}


def view(i):
    return P.ItemView(i, TITLES[i])


def test_instruction_batch_labels_only_the_target(tokenizer):
    examples = [Example(0, (1, 2, 3), 4), Example(1, (5,), 6)]
    batch = collate(encode_examples(tokenizer, examples, view, max_length=None), tokenizer.pad_token_id)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    for n, ex in enumerate(examples):
        alone = P.encode_example(tokenizer, P.next_item_prompt([view(i) for i in ex.history]).text,
                                 P.next_item_target(view(ex.target)))
        width = len(alone["input_ids"])
        assert batch["input_ids"][n, :width].tolist() == alone["input_ids"]
        assert int(batch["attention_mask"][n].sum()) == width
        labelled = batch["labels"][n][batch["labels"][n] != -100].tolist()
        assert labelled == [t for t in alone["labels"] if t != -100]
        assert labelled[-1] == tokenizer.eos_token_id
        assert P.parse_next_item(tokenizer.decode(labelled[:-1])) == TITLES[ex.target]
        assert (batch["labels"][n, width:] == -100).all()  # padding never counts


def test_instruction_batch_cuts_long_prompts_from_the_left(tokenizer):
    long = Example(0, tuple(range(15)), 19)
    batch = collate(encode_examples(tokenizer, [long], view, max_length=40), tokenizer.pad_token_id)
    assert batch["input_ids"].shape[1] == 40
    labelled = batch["labels"][0][batch["labels"][0] != -100].tolist()
    assert P.parse_next_item(tokenizer.decode(labelled[:-1])) == TITLES[19]
    assert torch.equal(batch["attention_mask"], torch.ones_like(batch["attention_mask"]))


def test_lora_steps_on_two_zero2_workers_change_the_adapter_and_nothing_else(ray_session, llm_config, tiny_backbone,
                                                                              tokenizer, dataset, tmp_path):
    """BIGRec's step 1 on Ray Train: 2 workers under DeepSpeed ZeRO-2 tune a LoRA adapter on the
    tiny backbone's instruction set; the base weights stay as they were (checked in the workers
    and again here), the adapter's B matrices (zero at init) move, and the loss goes down."""
    from bridgerec.config import Config
    from bridgerec.llm.backbone import load_causal_lm
    from bridgerec.llm.lora import load_adapter
    from bridgerec.models.histories import histories_for
    from bridgerec.training.sft import train_sft

    titles = dataset.items().set_index("iid")["title"].to_dict()
    item = lambda i: P.ItemView(i, str(titles[i]))  # noqa: E731
    examples = next_item_examples(*histories_for(dataset), history_len=5, samples=48, seed=0)
    rows = encode_examples(tokenizer, examples, item, max_length=96)
    cfg = Config.model_validate({**llm_config.model_dump(), "run_name": "bigrec-sft-zero2", "tracking": {"enabled": False},
                                 "train": {**llm_config.train.model_dump(), "num_workers": 2, "strategy": "deepspeed",
                                           "zero_stage": 2, "batch_size": 4, "epochs": 2, "lr": 3e-3}})
    res = train_sft(cfg, tiny_backbone.path, rows[:40], rows[40:], pad_id=tokenizer.pad_token_id or 0,
                    out_dir=str(tmp_path / "adapter"))
    assert [h["epoch"] for h in res.history] == [1, 2]
    assert all(h["frozen_unchanged"] == 1.0 for h in res.history)  # checked on rank 0 against the loaded weights
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    base = load_causal_lm(tiny_backbone.path, "float32", "cpu")
    original = {k: v.clone() for k, v in base.state_dict().items()}
    tuned = load_adapter(base, res.adapter_dir)
    state = tuned.state_dict()
    lora_b = [k for k in state if "lora_B" in k]
    assert lora_b and all(float(state[k].abs().sum()) > 0 for k in lora_b)  # B starts at zero: these trained
    base_after = {k.replace("base_model.model.", "").replace(".base_layer", ""): v for k, v in state.items() if "lora_" not in k}
    assert set(base_after) == set(original)
    assert all(torch.equal(base_after[k], original[k]) for k in original)


def test_llm_hidden_grounding_is_the_last_tokens_state_whatever_the_padding(tiny_backbone):
    """``ground_with: llm_hidden``: the base LLM's last-layer state of each text's last token, the
    same for a text alone and beside a longer one (left padding keeps the last token in place)."""
    from bridgerec.llm.backbone import load_causal_lm, load_tokenizer
    from bridgerec.methods.bigrec import embed_for_grounding

    texts = ["item title 3", "a much longer item title with many more words 7"]
    batch = embed_for_grounding(texts, "llm_hidden", backbone_path=tiny_backbone.path)
    alone = embed_for_grounding(texts[:1], "llm_hidden", backbone_path=tiny_backbone.path)
    model, tok = load_causal_lm(tiny_backbone.path, "float32"), load_tokenizer(tiny_backbone.path)
    with torch.no_grad():
        manual = model(**tok(texts[:1], return_tensors="pt"), output_hidden_states=True).hidden_states[-1][0, -1]
    assert batch.shape == (2, model.config.hidden_size)
    assert np.allclose(alone[0], manual.numpy(), atol=1e-5) and np.allclose(batch[0], alone[0], atol=1e-4)
    assert not np.allclose(batch[0], batch[1])
