"""``bigrec``: BIGRec (arXiv 2308.08434): LoRA-tune the LLM to write the next item's title, ground it to items, reweight.

BIGRec does not train the domain model: it tunes the LLM with LoRA to write the next item's title
(:mod:`bridgerec.training.sft` on the instruction set of
:func:`~bridgerec.methods.bigrec_core.next_item_examples`), then grounds what the tuned LLM
writes to real items. The :class:`BIGRec` module is the grounding side, what evaluation and
export read: the item vectors, each user's generated-title vector (set per evaluation stage,
since the prompt shows the history known at that stage), the popularity prior and gamma;
``full_scores`` is ``-(dist x (1 + prior)^(-gamma))`` (:func:`~bridgerec.methods.bigrec_core.reweighted_scores`);
with several beams per user (``method.bigrec.num_beams``) each beam's scores are merged by rank
(:func:`~bridgerec.methods.bigrec_core.merge_by_rank`).

The LLM-side helpers here render the prompts (the one prompt module's ``next_item`` template in
the backbone's chat format), generate through an :class:`~bridgerec.llm.engine.Engine` (vLLM or
transformers), parse the titles and embed texts for grounding (``method.bigrec.ground_with``:
the text encoder, or the base LLM's last-layer hidden state of the last token as in the paper).
The workflow that strings them together is :mod:`bridgerec.workflows.bigrec`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import numpy as np
import torch

from bridgerec.methods.base import Method
from bridgerec.methods.bigrec_core import grounding_distances, merge_by_rank, reweighted_scores, row_minmax
from bridgerec.models.base import Batch

__all__ = ["BIGRec", "GeneratedTitles", "next_item_prompts", "generate_titles", "embed_for_grounding", "grounding_embedder", "last_token_states"]


class BIGRec(Method):
    name = "bigrec"
    trains_llm: ClassVar[bool] = True

    def __init__(self, cfg, domain, inputs):
        super().__init__(cfg, domain, inputs)
        self.bcfg = cfg.bigrec
        self.register_buffer("item_vectors", torch.zeros(domain.n_items, 1))
        self.register_buffer("generated", torch.zeros(domain.n_users, 1))  # the first (best) beam's vectors
        self.more_beams: list[torch.Tensor] = []  # the other beams' (n_users, d) tables, best first
        self.register_buffer("prior", torch.zeros(1, domain.n_items))
        self.gamma = float(self.bcfg.gamma or 0.0)
        self._grounded, self._reweight = False, False
        self._domain: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        raise RuntimeError("bigrec tunes the LLM (bridgerec.training.sft via bridgerec.workflows.bigrec), "
                           "not the domain model: it has no domain-model training step")

    def set_grounding(self, item_vectors: np.ndarray, prior: torch.Tensor | None,
                      domain: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """The item vectors (I, d) titles are grounded to, and what reweights them: the (1, I)
        ``prior``, or ``domain`` = (user, item) embeddings of a domain model, whose scores
        (user . item, min-max normalised per user) are the prior; neither: grounding alone."""
        self.item_vectors = torch.as_tensor(np.asarray(item_vectors, np.float32))
        self.prior = prior.float() if prior is not None else torch.zeros(1, self.item_vectors.shape[0])
        self._domain = None
        if domain is not None:
            users, items = (torch.as_tensor(np.asarray(x, np.float32)) for x in domain)
            if users.shape[1] != items.shape[1] or items.shape[0] != self.item_vectors.shape[0]:
                raise ValueError(f"domain embeddings user {tuple(users.shape)} / item {tuple(items.shape)} do not fit "
                                 f"{self.item_vectors.shape[0]} items")
            self._domain = (users, items)
        self._reweight = prior is not None or domain is not None
        self._grounded = True

    def _aux(self, uids: torch.Tensor) -> torch.Tensor | None:
        if not self._reweight:
            return None
        if self._domain is None:
            return self.prior
        users, items = self._domain
        return row_minmax(users[uids.cpu()] @ items.T)

    def set_generated(self, uids: np.ndarray, vectors: np.ndarray) -> None:
        """The generated-title vectors of ``uids`` for the stage evaluated next: (n, d), one title
        per user, or (beams, n, d), best beam first."""
        v = np.asarray(vectors, np.float32)
        beams = v[None] if v.ndim == 2 else v
        rows = torch.as_tensor(np.asarray(uids, np.int64))
        tables = []
        for beam in beams:
            table = torch.zeros(self.domain.n_users, self.item_vectors.shape[1])
            table[rows] = torch.as_tensor(beam)
            tables.append(table)
        self.generated, self.more_beams = tables[0], tables[1:]

    def scores(self, uids: torch.Tensor, gamma: float | None = None) -> torch.Tensor:
        if not self._grounded:
            raise RuntimeError("BIGRec.set_grounding was not called: no item vectors to ground to")
        g = self.gamma if gamma is None else gamma
        per_beam, aux = [], self._aux(uids)
        for table in (self.generated, *self.more_beams):
            dist = grounding_distances(table[uids.cpu()].numpy(), self.item_vectors.numpy())
            per_beam.append(reweighted_scores(dist, aux, g))
        return merge_by_rank(per_beam)

    def full_scores(self, uids: torch.Tensor) -> torch.Tensor:
        return self.scores(uids)

    @torch.no_grad()
    def export_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The generated-title vectors and the item vectors: their L2 distance is the grounding
        distance before normalisation and reweighting (not an inner-product score)."""
        return self.generated.detach().cpu(), self.item_vectors.detach().cpu()


# ----------------------------------------------------------------------------- the LLM side


def next_item_prompts(histories: tuple[np.ndarray, np.ndarray], uids: np.ndarray, view, history_len: int,
                      chat: Any = None, version: str = "v1") -> list[str]:
    """The engine text of the ``next_item`` prompt for each user: the up to ``history_len`` most
    recent items of the user's history (CSR ``histories``), oldest first."""
    from bridgerec.llm.prompts import PLAIN, engine_text, next_item_prompt
    from bridgerec.models.histories import recent_items

    indptr, items = histories
    out = []
    for u in np.asarray(uids, np.int64).tolist():
        hist = recent_items(indptr, items, u, history_len)
        out.append(engine_text(next_item_prompt([view(int(i)) for i in hist], version=version), chat or PLAIN))
    return out


@dataclass
class GeneratedTitles:
    titles: list[str]  # parsed (the quoted title, else the first line); the best beam's with beam search
    raw: list[str]
    seconds: float
    tokens: int
    beams: list[list[str]] = field(default_factory=list)  # per prompt, every beam's parsed title, best first

    @property
    def per_second(self) -> float:
        return len(self.titles) / max(self.seconds, 1e-9)


def generate_titles(engine, prompts: Sequence[str], max_new_tokens: int, num_beams: int = 1) -> GeneratedTitles:
    """One title per prompt through ``engine`` (vLLM or transformers): greedy, or with
    ``num_beams > 1`` beam search (every beam kept in ``beams``; ``titles`` is the best beam's)."""
    from bridgerec.llm.engine import GenerationParams
    from bridgerec.llm.prompts import parse_next_item

    t0 = time.time()
    if num_beams > 1:
        per_prompt = engine.beam_search(list(prompts), num_beams, max_new_tokens, stop=("\n",))
    else:
        gens = engine.generate(list(prompts), GenerationParams(max_tokens=max_new_tokens, temperature=0.0, stop=("\n",)))
        per_prompt = [[g] for g in gens]
    seconds = time.time() - t0
    raw = [beams[0].text for beams in per_prompt]
    beams = [[parse_next_item(g.text) for g in gens] for gens in per_prompt]
    beams = [b + b[-1:] * (num_beams - len(b)) for b in beams]  # an engine may end with fewer beams than asked
    return GeneratedTitles([b[0] for b in beams], raw, seconds, sum(g.num_tokens for gens in per_prompt for g in gens), beams)


def last_token_states(model_path: str, texts: Sequence[str], batch_size: int = 16, dtype: str = "float32") -> np.ndarray:
    """(N, hidden) last-layer hidden state of each text's last token under the causal LM at
    ``model_path`` (BIGRec's grounding embedding; left padding keeps the last token in place)."""
    from bridgerec.llm.backbone import load_causal_lm, load_tokenizer

    tok = load_tokenizer(model_path, padding_side="left")
    model = load_causal_lm(model_path, dtype, "cpu")
    out = []
    with torch.no_grad():
        for s in range(0, len(texts), batch_size):
            enc = tok([str(t) for t in texts[s:s + batch_size]], return_tensors="pt", padding=True)
            hidden = model(**enc, output_hidden_states=True).hidden_states[-1]
            out.append(hidden[:, -1, :].float().numpy())
    width = int(model.config.hidden_size)
    return np.concatenate(out) if out else np.zeros((0, width), np.float32)


def grounding_embedder(ground_with: str, encoder_cfg=None, backbone_path: str | None = None):
    """``texts -> vectors`` in the grounding space, its model loaded once: the text encoder's
    (``encoder``) or the base LLM's last-token hidden states (``llm_hidden``, needs ``backbone_path``)."""
    if ground_with == "encoder":
        from bridgerec.llm.encoder import TextEncoder

        encoder = TextEncoder(encoder_cfg)
        return lambda texts: encoder.encode(list(texts))
    if ground_with == "llm_hidden":
        if not backbone_path:
            raise ValueError("method.bigrec.ground_with=llm_hidden needs the backbone's path")
        return lambda texts: last_token_states(backbone_path, list(texts))
    raise ValueError(f"method.bigrec.ground_with: unknown mode {ground_with!r} (encoder, llm_hidden)")


def embed_for_grounding(texts: Sequence[str], ground_with: str, encoder_cfg=None, backbone_path: str | None = None) -> np.ndarray:
    """Vectors of ``texts`` in the grounding space (one call of :func:`grounding_embedder`)."""
    return grounding_embedder(ground_with, encoder_cfg, backbone_path)(texts)
