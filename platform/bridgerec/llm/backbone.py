"""Backbones: the `tiny` default built from config, or any Hugging Face causal LM by path / hub id.

The tiny backbone is a small Llama whose byte-level BPE tokenizer is trained on the dataset's
text (item titles and descriptions, user texts) plus the fixed words of the prompt templates; a
short language-model warm-up on the same text (``llm.tiny.warmup_steps``) makes its generations
read like item text rather than one repeated token. It
is saved as an ordinary Hugging Face directory (``config.json``, ``model.safetensors``,
``tokenizer.json``), so transformers, vLLM and ray.data.llm / ray.serve.llm all load it like any
other checkpoint. Its directory name is a hash of the dataset's content hash and the tiny config,
so the same inputs reuse the same directory and a different dataset or shape builds a new one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from typing import Iterable, Optional

from bridgerec.llm.config import LLMConfig, TinyModelConfig
from bridgerec.llm.prompts import template_corpus

__all__ = [
    "TINY",
    "SPECIAL_TOKENS",
    "Backbone",
    "resolve_backbone",
    "build_tiny_backbone",
    "dataset_corpus",
    "model_fingerprint",
    "load_tokenizer",
    "load_causal_lm",
    "torch_dtype",
]

TINY = "tiny"
"""Name of the built-in backbone in ``llm.model``."""
SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
"""Special tokens of the tiny tokenizer."""
_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
_DONE = ".bridgerec-backbone.json"


@dataclass(frozen=True)
class Backbone:
    """A loadable backbone: ``path`` for transformers/vLLM and a ``fingerprint`` for cache keys."""

    path: str
    fingerprint: str
    built: bool = False


def torch_dtype(name: str):
    """Map a config dtype name to a torch dtype (``auto`` -> ``"auto"``)."""
    import torch

    return {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def _tiny_hash(tiny: TinyModelConfig, data_hash: str) -> str:
    payload = json.dumps({"tiny": tiny.model_dump(), "data": data_hash, "templates": template_corpus()}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def dataset_corpus(dataset, max_texts: int) -> list[str]:
    """Item titles + descriptions and user texts of a :class:`~bridgerec.data.dataset.DatasetDir`."""
    items = dataset.items()
    texts = [f"{t}\n{x}" for t, x in zip(items["title"].astype(str), items["text"].fillna("").astype(str))]
    users = dataset.users()
    if "text" in users:
        texts += [t for t in users["text"].fillna("").astype(str) if t]
    return texts[:max_texts]


def _train_tokenizer(texts: Iterable[str], vocab_size: int):
    """A byte-level BPE tokenizer (BOS prepended) wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [SPECIAL_TOKENS[k] for k in ("pad_token", "bos_token", "eos_token", "unk_token")]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2, show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    bos = SPECIAL_TOKENS["bos_token"]
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A $B",
                                                       special_tokens=[(bos, tok.token_to_id(bos))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)
    fast.chat_template = _CHAT_TEMPLATE
    return fast


def _warm_up(model, tokenizer, texts: list[str], tiny: TinyModelConfig) -> None:
    """A few causal-LM steps on the dataset text (blocks of ``warmup_seq_len`` tokens)."""
    import torch

    if tiny.warmup_steps <= 0 or not texts:
        return
    ids: list[int] = []
    for t in texts:
        ids += tokenizer(t, add_special_tokens=True)["input_ids"] + [tokenizer.eos_token_id]
    n = len(ids) // tiny.warmup_seq_len
    if n == 0:
        return
    blocks = torch.tensor(ids[: n * tiny.warmup_seq_len]).view(n, tiny.warmup_seq_len)  # (N, T)
    gen = torch.Generator().manual_seed(tiny.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=tiny.warmup_lr, weight_decay=0.0)
    threads = torch.get_num_threads()
    # A model this small gains nothing from intra-op threads, and OpenMP spin-waits make it many
    # times slower when the machine is busy; one thread is fastest everywhere.
    torch.set_num_threads(1)
    model.train()
    try:
        for _ in range(tiny.warmup_steps):
            batch = blocks[torch.randint(0, n, (tiny.warmup_batch_size,), generator=gen)]  # (B, T)
            loss = model(input_ids=batch, labels=batch).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
        model.eval()


def build_tiny_backbone(texts: list[str], tiny: TinyModelConfig, out_dir: str) -> str:
    """Train the tokenizer on ``texts``, build a tiny Llama (random init + a short LM warm-up on
    ``texts``), save both to ``out_dir``.

    Written to a temporary directory and renamed, so a crash never leaves a half-written model.
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tmp = f"{out_dir}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    texts = list(texts)
    tokenizer = _train_tokenizer(texts + template_corpus(), tiny.vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=tiny.hidden_size,
        intermediate_size=tiny.intermediate_size,
        num_hidden_layers=tiny.num_hidden_layers,
        num_attention_heads=tiny.num_attention_heads,
        num_key_value_heads=tiny.num_key_value_heads,
        max_position_embeddings=tiny.max_position_embeddings,
        tie_word_embeddings=tiny.tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    torch.manual_seed(tiny.seed)
    model = LlamaForCausalLM(config)
    _warm_up(model, tokenizer, texts, tiny)
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    n_params = sum(p.numel() for p in model.parameters())
    with open(os.path.join(tmp, _DONE), "w") as fh:
        json.dump({"kind": TINY, "tiny": tiny.model_dump(), "n_params": n_params, "vocab": len(tokenizer)}, fh, indent=2)
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(os.path.dirname(os.path.abspath(out_dir)), exist_ok=True)
    os.rename(tmp, out_dir)
    return out_dir


def model_fingerprint(path: str, revision: Optional[str] = None) -> str:
    """A short stable identity of a model for cache keys.

    Local directory: hash of its ``config.json`` and the names and sizes of its files; otherwise
    (a hub id) the id and revision.
    """
    h = hashlib.sha256()
    if os.path.isdir(path):
        cfg = os.path.join(path, "config.json")
        if os.path.exists(cfg):
            with open(cfg, "rb") as fh:
                h.update(fh.read())
        for name in sorted(os.listdir(path)):
            full = os.path.join(path, name)
            if os.path.isfile(full):
                h.update(f"{name}:{os.path.getsize(full)}".encode())
    else:
        h.update(f"{path}@{revision or 'main'}".encode())
    return h.hexdigest()[:16]


def resolve_backbone(llm: LLMConfig, work_dir: str, dataset=None) -> Backbone:
    """The backbone named by ``llm.model``, building the tiny one when needed.

    ``dataset`` (a DatasetDir) is required for ``tiny``: its text trains the tokenizer and its
    content hash names the model directory (``<models_dir>/tiny-<hash>``).
    """
    if llm.model != TINY:
        return Backbone(llm.model, model_fingerprint(llm.model, llm.revision))
    if dataset is None:
        raise ValueError("llm.model=tiny needs a prepared dataset (its text trains the tokenizer)")
    key = _tiny_hash(llm.tiny, dataset.content_hash)
    out = os.path.abspath(os.path.join(llm.models_dir or os.path.join(work_dir, "models"), f"tiny-{key}"))
    built = False
    if not os.path.exists(os.path.join(out, _DONE)):
        build_tiny_backbone(dataset_corpus(dataset, llm.tiny.corpus_max_texts), llm.tiny, out)
        built = True
    return Backbone(out, f"tiny-{key}", built)


def load_tokenizer(path: str, revision: Optional[str] = None, padding_side: str = "left"):
    """The tokenizer of a backbone (left padding for batched generation)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, revision=revision)
    tok.padding_side = padding_side
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(path: str, dtype: str = "auto", device: str = "cpu", revision: Optional[str] = None):
    """A transformers causal LM on ``device`` in eval mode."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype(dtype), revision=revision)
    return model.to(device).eval()
