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

Settings (``RecommenderArgs.strategy_args.bigrec``): ``run`` (a bigrec run's export: ``runs:/RUN``,
``runs:/RUN/bigrec`` or its local directory; :func:`apply_bigrec_run` then serves its adapter with
its gamma, prompt settings and history length), ``gamma`` (default: the run's; without a run 0,
grounding alone) and ``candidates`` (the shortlist the normalisation and reweighting see, default
1000: exact when the catalog is no larger; above it, items beyond the shortlist are never
returned). Time budget 10 s, then ``domain`` answers.

Served as measured, or refused at deploy time with the reason: a run grounded with ``llm_hidden``
or reweighted by a domain model is refused (only encoder grounding with popularity is served), as
is a bundle whose grounding index was built with another text encoder than the run's. A run with
beam search is served greedy (one title per request), which the deploy log says.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from bridgerec.llm.engine import GenerationParams
from bridgerec.llm.prompts import parse_next_item
from bridgerec.methods.bigrec_core import reweighted_scores, row_minmax
from bridgerec.serving.exports import adapter_llm, read_export
from bridgerec.serving.llm import LLMClient, next_item_request
from bridgerec.serving.strategies import Query, Ranked, Strategy, StrategyContext

__all__ = ["BIGREC", "rerank", "BIGRecExport", "load_bigrec_export", "apply_bigrec_run", "check_grounding_encoder"]


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


# ------------------------------------------------------------------------- a bigrec run's export
ENCODER_KEYS = ("model", "max_length", "normalize")  # the settings that change a title's vector


@dataclass(frozen=True)
class BIGRecExport:
    """What :func:`bridgerec.workflows.bigrec.export_bigrec` wrote: the adapter directory, the chosen
    gamma and the ``serving`` block (backbone, prompt settings, history length, title length,
    beams, grounding mode, reweighting, text encoder)."""

    source: str
    adapter_dir: str
    gamma: float
    serving: dict[str, Any]


def load_bigrec_export(source: str, tracking_uri: Optional[str] = None) -> BIGRecExport:
    """Read a bigrec run's export: ``runs:/RUN`` or ``runs:/RUN/bigrec`` (downloaded once) or a local directory."""
    local, meta = read_export(source, "bigrec", tracking_uri)
    return BIGRecExport(source, os.path.abspath(os.path.join(local, "adapter")), float(meta["gamma"]), meta["serving"])


def apply_bigrec_run(args, log=print):
    """``args`` (RecommenderArgs) with ``strategy_args.bigrec.run`` resolved: the LLM deployment serves
    the run's adapter on its backbone (``llm.model`` when given, else the run's packaged backbone)
    with its prompt settings, history length and title length, and ``gamma`` defaults to the run's.
    Refuses what the strategy cannot serve as measured (see the module docstring)."""
    from bridgerec._config_base import ConfigError

    settings = dict(args.strategy_args.get("bigrec", {}))
    if not settings.get("run"):
        return args
    export = load_bigrec_export(str(settings["run"]), args.tracking_uri)
    s, key = export.serving, f"strategy_args.bigrec.run={export.source}"
    if s["ground_with"] != "encoder":
        raise ConfigError(f"{key}: grounded with {s['ground_with']}; the bigrec strategy serves encoder grounding "
                          "only (train with method.bigrec.ground_with=encoder)")
    if s["reweight"] == "domain":
        raise ConfigError(f"{key}: reweighted by a domain model's scores; the bigrec strategy serves popularity "
                          "reweighting only (train with method.bigrec.reweight=popularity)")
    if s.get("num_beams", 1) > 1:
        log(f"[serve] bigrec: the run used {s['num_beams']} beams; served greedy, one title per request")
    llm = adapter_llm(args.llm, s, export.adapter_dir, key, history_len=int(s["history_len"]),
                      max_tokens=int(s["max_new_tokens"]))
    settings.setdefault("gamma", export.gamma)
    settings["encoder"] = {k: s["encoder"].get(k) for k in ENCODER_KEYS}
    log(f"[serve] bigrec: serving {export.source} (adapter on {llm.model}, gamma {settings['gamma']:g}, "
        f"history {llm.history_len}, titles <= {llm.max_tokens} tokens)")
    return args.model_copy(update={"llm": llm, "strategy_args": {**args.strategy_args, "bigrec": settings}})


def check_grounding_encoder(settings: dict[str, Any], bundle_meta: dict[str, Any]) -> None:
    """Refuse serving a bigrec run over a bundle whose grounding index was built with another
    text encoder than the one the run grounded (and chose gamma) with. ``settings``: the bigrec
    strategy's settings as :func:`apply_bigrec_run` leaves them (with the run's ``encoder``)."""
    from bridgerec._config_base import ConfigError

    want = settings["encoder"]
    if "grounding" not in bundle_meta:
        raise ConfigError("strategy_args.bigrec.run: the bundle has no grounding index (retrieval.grounding_index)")
    have = bundle_meta["grounding"].get("encoder") or {}
    diff = {k: (have.get(k), want.get(k)) for k in ENCODER_KEYS if have.get(k) != want.get(k)}
    if diff:
        raise ConfigError("strategy_args.bigrec.run: the bundle's grounding index was built with another text encoder "
                          "than the run's: " + ", ".join(f"{k} {a!r} (bundle) vs {b!r} (run)" for k, (a, b) in diff.items()))
