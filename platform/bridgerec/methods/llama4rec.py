"""``llama4rec``: Llama4Rec (arXiv 2401.13870): the LLM reranks the domain model's candidates
listwise, and the two orders are blended per user by the long-tail weight α_u.

Like ``bigrec`` this method tunes the LLM (LoRA, :mod:`bridgerec.training.sft`, on the listwise
examples of :mod:`bridgerec.methods.llama4rec_data`), not the domain model; the workflow is
:mod:`bridgerec.workflows.llama4rec`. The :class:`Llama4Rec` module is what evaluation reads: the
domain model's scores (``method.llama4rec.domain_run``), with each evaluated user's top
``n_candidates`` replaced by the blended order (:func:`~bridgerec.methods.llama4rec_core.aggregate_ranking`),
set per split by :meth:`Llama4Rec.set_rankings`; the items below the candidates keep the domain
order, so Recall/NDCG at cut-offs past the candidate list are the domain model's there. For a
sequence domain model the workflow sets, per split, the user vectors embedded from the history
known at that split's time (:meth:`Llama4Rec.set_domain`), as the model's own evaluation does.

The LLM side here renders prompts in the backbone's chat format, generates the rankings through an
:class:`~bridgerec.llm.engine.Engine` (vLLM or transformers) and parses them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Optional, Sequence

import numpy as np
import torch

from bridgerec.methods.base import Method
from bridgerec.methods.llama4rec_core import aggregate_ranking, parse_ranking
from bridgerec.models.base import Batch

__all__ = ["Llama4Rec", "Rankings", "generate_rankings", "encode_ranking_examples", "token_counter",
           "to_domain_positions"]


class Llama4Rec(Method):
    trains_llm: ClassVar[bool] = True

    def __init__(self, cfg, domain, inputs):
        super().__init__(cfg, domain, inputs)
        self.register_buffer("users", torch.zeros(domain.n_users, 1))
        self.register_buffer("items", torch.zeros(domain.n_items, 1))
        self._reranked: dict[int, list[int]] = {}

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        raise RuntimeError("llama4rec tunes the LLM (bridgerec.training.sft via bridgerec.workflows.llama4rec), "
                           "not the domain model: it has no domain-model training step")

    def set_domain(self, users: np.ndarray, items: np.ndarray) -> None:
        """The domain model's (U, d) / (I, d) embeddings: its inner product is the base score (a
        sequence model's user vectors: those of the split being evaluated)."""
        self.users = torch.as_tensor(np.asarray(users, np.float32))
        self.items = torch.as_tensor(np.asarray(items, np.float32))

    def set_rankings(self, uids: Sequence[int], candidates: Sequence[Sequence[int]],
                     llm_orders: Sequence[Optional[Sequence[int]]], alphas: Sequence[float]) -> None:
        """Each user's final order of its candidates (given in the DOMAIN order), blended from the
        LLM's order (0-based positions into that user's candidates; None = unparseable) by α_u."""
        self._reranked = {int(u): aggregate_ranking(list(c), o, float(a))[0]
                          for u, c, o, a in zip(uids, candidates, llm_orders, alphas)}

    def user_embeddings(self) -> torch.Tensor:
        return self.users

    def item_embeddings(self) -> torch.Tensor:
        return self.items

    def full_scores(self, uids: torch.Tensor) -> torch.Tensor:
        scores = self.users[uids.cpu()] @ self.items.T
        if not self._reranked:
            return scores
        top = scores.max().item() + 1.0
        for row, u in enumerate(uids.tolist()):
            order = self._reranked.get(int(u))
            if order:
                n = len(order)
                scores[row, torch.as_tensor(order)] = top + torch.arange(n, 0, -1, dtype=scores.dtype)
        return scores


# ----------------------------------------------------------------------------- the LLM side


def token_counter(tokenizer: Any, chat: Any = None) -> Callable[[str], int]:
    """``count(text)``: the tokens a prompt takes once rendered for the engine (the token budget's
    measure, the same in tuning, evaluation and serving)."""
    from bridgerec.llm.prompts import PLAIN, encode_prompt, engine_text

    return lambda text: len(encode_prompt(tokenizer, engine_text(text, chat or PLAIN)))


def encode_ranking_examples(tokenizer: Any, prompts: Sequence[Any], *, chat: Any = None,
                            max_length: Optional[int] = None) -> list[dict[str, list[int]]]:
    """Rendered training prompts (:func:`~bridgerec.methods.llama4rec_data.render`) with their
    answers (:func:`~bridgerec.methods.llama4rec_data.answer_order`) as supervised examples."""
    from bridgerec.llm.prompts import PLAIN, encode_example, ranking_target
    from bridgerec.methods.llama4rec_data import answer_order

    return [encode_example(tokenizer, p.text, ranking_target(answer_order(p)), chat=chat or PLAIN, max_length=max_length)
            for p in prompts]


@dataclass
class Rankings:
    """The LLM's answers to a list of prompts: per prompt the 0-based order of its SHOWN
    candidates (None = unparseable), the raw text, and the throughput."""

    orders: list[Optional[list[int]]]
    raw: list[str]
    seconds: float

    @property
    def parse_rate(self) -> float:
        return sum(o is not None for o in self.orders) / max(len(self.orders), 1)

    @property
    def per_second(self) -> float:
        return len(self.orders) / max(self.seconds, 1e-9)


def generate_rankings(engine: Any, prompts: Sequence[Any], chat: Any = None, max_new_tokens: int = 40) -> Rankings:
    """Greedy rankings of rendered prompts through ``engine`` (one line each)."""
    from bridgerec.llm.engine import GenerationParams
    from bridgerec.llm.prompts import PLAIN, engine_text

    texts = [engine_text(p.text, chat or PLAIN) for p in prompts]
    t0 = time.time()
    gens = engine.generate(texts, GenerationParams(max_tokens=max_new_tokens, temperature=0.0, stop=("\n",)))
    seconds = time.time() - t0
    raw = [g.text for g in gens]
    return Rankings([parse_ranking(t, len(p.candidates)) for t, p in zip(raw, prompts)], raw, seconds)


def to_domain_positions(prompt: Any, shown_order: Optional[Sequence[int]]) -> Optional[list[int]]:
    """An order of the SHOWN candidates (0-based) as positions into the prompt's DOMAIN order."""
    if shown_order is None:
        return None
    where = {iid: k for k, iid in enumerate(prompt.domain)}
    return [where[prompt.candidates[k]] for k in shown_order]
