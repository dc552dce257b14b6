"""The ``bigrec`` serving strategy: BIGRec's tuned LLM writes the next item's title, the Grounder
gives the L2 distances of the nearest items to it, and they are reweighted by popularity.

Pipeline per request: the ``next_item`` prompt over the user's most recent known items (or the
history sent) -> the LLM deployment (serve the tuned model: ``llm.model`` = the base backbone
with ``settings: {lora: {adapter: <adapter dir>}}``, merged once and cached, or a merged
directory) -> :meth:`Grounder.distances <bridgerec.serving.deployments.Grounder.distances>`
over the encoder's title index (known items left out) -> ``-(dist x (1 + prior)^(-gamma))`` with
``dist`` min-max normalised over the shortlist and ``prior`` the catalog's popularity, min-max
normalised (:func:`~bridgerec.methods.bigrec_core.reweighted_scores`, as in evaluation) -> top-k.
Grounding here is with the text encoder (``method.bigrec.ground_with: encoder``); the
``llm_hidden`` mode, which needs the LLM's hidden states at serving time, is evaluation-only.

Settings (``RecommenderArgs.strategy_args.bigrec``): ``gamma`` (default 0: grounding alone; use
the run's chosen gamma, its ``bigrec_gamma`` metric) and ``candidates`` (the shortlist the
normalisation and reweighting see, default 1000: exact when the catalog is no larger; above it,
items beyond the shortlist are never returned). Time budget 10 s, then ``domain`` answers.
"""

from __future__ import annotations

import numpy as np
import torch

from bridgerec.llm.engine import GenerationParams
from bridgerec.llm.prompts import parse_next_item
from bridgerec.methods.bigrec_core import reweighted_scores, row_minmax
from bridgerec.serving.llm import LLMClient, next_item_request
from bridgerec.serving.strategies import Query, Ranked, Strategy, StrategyContext

__all__ = ["BIGREC", "rerank"]


def rerank(ids: list[int], dist: list[float], popularity: np.ndarray, gamma: float, k: int) -> tuple[list[int], list[float]]:
    """Top ``k`` of the shortlist ``ids`` (with L2 distances ``dist``) by BIGRec's reweighted score;
    ``popularity`` (I,) counts of the whole catalog. Ties keep the shortlist's order."""
    if not ids:
        return [], []
    pop = popularity.astype(np.float64)
    prior = row_minmax(torch.from_numpy(pop[None, :]).float())[0, np.asarray(ids, np.int64)][None, :]
    scores = reweighted_scores(row_minmax(torch.tensor([dist], dtype=torch.float32)), prior, float(gamma))[0]
    order = torch.argsort(-scores, stable=True)[:k]
    return [int(ids[i]) for i in order], [float(scores[i]) for i in order]


async def _bigrec(ctx: StrategyContext, q: Query) -> Ranked:
    client: LLMClient = ctx.handle("llm")
    grounder = ctx.handle("grounder")
    settings = ctx.settings("bigrec")
    prompt, hist = next_item_request(ctx, q, client.info.history_len)
    title = parse_next_item(await client.complete(prompt, GenerationParams(max_tokens=client.info.max_tokens, temperature=0.0)))
    if not title:
        raise ValueError("the LLM generated no title")
    ids, dist = await grounder.distances.remote(title, int(settings.get("candidates", 1000)), sorted(set(q.exclude) | set(hist)))
    iids, scores = rerank(ids, dist, ctx.catalog.popularity, float(settings.get("gamma", 0.0)), q.k)
    return Ranked(iids, scores, "bigrec", generated=title)


BIGREC = Strategy(_bigrec, budget_s=10.0, needs=("llm", "grounder"))
"""BIGRec: generate a title, ground it, reweight by popularity (scores: minus the reweighted normalised distance)."""
