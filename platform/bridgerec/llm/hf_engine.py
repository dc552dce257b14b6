"""The transformers engine: ``generate`` behind the :class:`~bridgerec.llm.engine.Engine` contract.

Prompts are batched (``llm.hf_batch_size``) with left padding; greedy when temperature is 0, so
the tokens match the vLLM engine on the same weights. ``embed`` runs right-padded forward passes
(causal attention: real tokens never see the padding) and mean-pools the final hidden states.
"""

from __future__ import annotations

import gc
from typing import Any, Sequence

import numpy as np

from bridgerec.llm.config import LLMConfig
from bridgerec.llm.engine import Engine, Generation, GenerationParams, cut_at_stop

__all__ = ["HFEngine"]


def _allowed_tokens_processor(allowed: Sequence[int]):
    """A logits processor that keeps only ``allowed`` token ids."""
    import torch
    from transformers import LogitsProcessor

    class _Allowed(LogitsProcessor):
        def __init__(self) -> None:
            self.ids = torch.tensor(list(allowed), dtype=torch.long)

        def __call__(self, input_ids, scores):  # scores: (B, V)
            mask = torch.full_like(scores, float("-inf"))
            mask[:, self.ids.to(scores.device)] = 0.0
            return scores + mask

    return _Allowed()


class HFEngine(Engine):
    """transformers ``AutoModelForCausalLM.generate`` on one device."""

    name = "hf"

    def __init__(self, cfg: LLMConfig, model_path: str):
        from bridgerec.llm.backbone import load_causal_lm, load_tokenizer
        from bridgerec.runtime import default_device

        self.cfg = cfg
        self.model_path = model_path
        self.device = cfg.device or default_device()
        self._tok = load_tokenizer(model_path, cfg.revision, padding_side="left")
        self._model: Any = load_causal_lm(model_path, cfg.dtype, self.device, cfg.revision)

    def tokenizer(self):
        return self._tok

    def _encode(self, texts: Sequence[str], padding_side: str):
        self._tok.padding_side = padding_side
        enc = self._tok(list(texts), return_tensors="pt", padding=True, add_special_tokens=True)
        longest = int(enc["attention_mask"].sum(1).max())
        if longest > self.cfg.max_model_len:
            raise ValueError(f"a prompt has {longest} tokens, more than llm.max_model_len={self.cfg.max_model_len}")
        return {k: v.to(self.device) for k, v in enc.items()}

    def generate(self, prompts: Sequence[str], params: GenerationParams) -> list[Generation]:
        if params.json_schema is not None:
            raise ValueError("the transformers engine (llm.engine=hf) has no schema-constrained decoding; use "
                             "llm.engine=vllm, or turn the stage's guided JSON off (augment.profiles.guided_json=false)")
        import torch

        out: list[Generation] = []
        bs = self.cfg.hf_batch_size
        for start in range(0, len(prompts), bs):
            chunk = prompts[start:start + bs]
            enc = self._encode(chunk, "left")
            kw: dict[str, Any] = dict(max_new_tokens=params.max_tokens, pad_token_id=self._tok.pad_token_id,
                                      eos_token_id=self._tok.eos_token_id)
            if params.temperature > 0:
                torch.manual_seed(params.seed)  # transformers samples from the global generator
                kw.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
            else:
                kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            if params.allowed_token_ids is not None:
                kw["logits_processor"] = [_allowed_tokens_processor(params.allowed_token_ids)]
            if params.stop:
                kw.update(stop_strings=list(params.stop), tokenizer=self._tok)
            with torch.no_grad():
                seqs = self._model.generate(**enc, **kw)  # (B, T_prompt + T_new)
            width = enc["input_ids"].shape[1]
            for row, mask, seq in zip(enc["input_ids"], enc["attention_mask"], seqs):
                out.append(self._to_generation(row[mask.bool()].tolist(), seq[width:].tolist(), params))
        return out

    def _beam_search(self, prompts: list[str], beam_width: int, max_tokens: int,
                     stop: tuple[str, ...]) -> list[list[Generation]]:
        import torch

        params = GenerationParams(max_tokens=max_tokens, stop=tuple(stop))
        out: list[list[Generation]] = []
        bs = max(1, self.cfg.hf_batch_size // beam_width)
        for start in range(0, len(prompts), bs):
            chunk = prompts[start:start + bs]
            enc = self._encode(chunk, "left")
            kw: dict[str, Any] = dict(max_new_tokens=max_tokens, pad_token_id=self._tok.pad_token_id,
                                      eos_token_id=self._tok.eos_token_id, num_beams=beam_width,
                                      num_return_sequences=beam_width, do_sample=False, early_stopping=True,
                                      temperature=None, top_p=None, top_k=None, output_scores=True,
                                      return_dict_in_generate=True)
            if stop:
                kw.update(stop_strings=list(stop), tokenizer=self._tok)
            with torch.no_grad():
                res = self._model.generate(**enc, **kw)  # sequences: (B * beams, T), each prompt's beams best first
            width = enc["input_ids"].shape[1]
            scores = res.sequences_scores.tolist() if getattr(res, "sequences_scores", None) is not None else None
            for j, (row, mask) in enumerate(zip(enc["input_ids"], enc["attention_mask"])):
                beams = []
                for b in range(beam_width):
                    k = j * beam_width + b
                    g = self._to_generation(row[mask.bool()].tolist(), res.sequences[k][width:].tolist(), params)
                    if scores is not None:
                        g.extra["cum_logprob"] = float(scores[k])  # length-normalised, as transformers ranks beams
                    beams.append(g)
                out.append(beams)
        return out

    def _to_generation(self, prompt_ids: list[int], new: list[int], params: GenerationParams) -> Generation:
        eos, pad = self._tok.eos_token_id, self._tok.pad_token_id
        finish = "length"
        if eos in new:
            new, finish = new[: new.index(eos)], "stop"
        elif pad != eos:
            new = [t for t in new if t != pad]
        text = self._tok.decode(new, skip_special_tokens=True)
        if params.stop:
            text, stopped = cut_at_stop(text, params.stop)
            finish = "stop" if stopped else finish
        return Generation(text=text, token_ids=new, prompt_token_ids=prompt_ids, finish_reason=finish)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        chunks = []
        bs = self.cfg.hf_batch_size
        for start in range(0, len(texts), bs):
            enc = self._encode(texts[start:start + bs], "right")
            with torch.no_grad():
                hidden = self._model(**enc, output_hidden_states=True).hidden_states[-1]  # (B, T, H)
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)  # (B, H)
            chunks.append(torch.nn.functional.normalize(pooled.float(), dim=-1).cpu().numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, 0), dtype=np.float32)

    def close(self) -> None:
        self._model = None
        gc.collect()
