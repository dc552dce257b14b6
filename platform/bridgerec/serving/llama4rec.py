"""The ``llama4rec`` serving strategy: the tuned LLM reranks the domain model's candidates and the
two orders are blended with the user's long-tail weight α_u (Llama4Rec's adaptive aggregation).

Pipeline per request, the same steps as the method's evaluation (:mod:`bridgerec.workflows.llama4rec`):

1. the Retriever's top ``max(k, n_candidates)`` items for the user (known items left out); the
   first ``n_candidates`` are the candidates, in the domain model's order;
2. with prompt augmentation, the ``n_similar`` users nearest the user by cosine of the bundle's
   user vectors (:meth:`Retriever.similar_users <bridgerec.serving.deployments.Retriever.similar_users>`)
   and their ``similar_history`` most recent known items, plus the domain order as a hint;
3. the listwise prompt of the one prompt module, candidates in the shuffle seeded by the run's seed
   and the user id (the list a known user saw in evaluation), within ``max_prompt_tokens``
   (counted with the served model's tokenizer) -> the LLM deployment, greedy, one line;
4. the answer parsed to candidate numbers; ``U = α_u·(−rank_LLM) + (1 − α_u)·(−rank_domain)`` over
   the candidates (:func:`~bridgerec.methods.llama4rec_core.aggregate_ranking`); the items past
   the candidates follow in the domain order. α_u comes from the user's known-item count by the
   run's rule (:class:`~bridgerec.methods.llama4rec_core.AlphaRule`; a user with no known items
   but a sent history: its length).

The response's ``details`` carry ``alpha_u``, the long-tail coefficient ``ell_u``, the known-item
count and the LLM's order of the candidates (item ids). An answer that names no candidate, an LLM
that is down or slower than the budget (10 s): ``domain`` answers and the response says why.

Not built in (an app without its settings has no weight to blend with): an app lists it when
``strategy_args.llama4rec`` is given (``bridgerec serve --llama4rec-run``), which
:func:`apply_llama4rec_run` turns into ``strategies: {llama4rec: ...}``.

Settings (``RecommenderArgs.strategy_args.llama4rec``): ``run`` (a llama4rec run's export:
``runs:/RUN``, ``runs:/RUN/llama4rec`` or its directory; :func:`apply_llama4rec_run` then serves
its adapter with its prompt settings and α rule) and any key below, which overrides the run's:
``n_candidates`` (10), ``history_len`` (10), ``prompt_aug`` (true), ``n_similar`` (2),
``similar_history`` (3), ``max_prompt_tokens`` (320; null: no budget), ``max_new_tokens`` (40),
``seed`` (0), and the weight: ``alpha1``/``alpha2``/``ell_min``/``ell_max`` (the adaptive rule)
or ``alpha`` (one fixed weight for everyone). Without a run or a weight the strategy refuses
to deploy.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any, Optional

import numpy as np

from bridgerec.llm.engine import GenerationParams
from bridgerec.llm.prompts import ItemView, engine_text
from bridgerec.methods.llama4rec_core import AlphaRule, aggregate_ranking, long_tail_coefficient, parse_ranking
from bridgerec.methods.llama4rec_data import render, shown_prompt, similar_items
from bridgerec.serving.exports import adapter_llm, read_export
from bridgerec.serving.strategies import Query, Ranked, Strategy, StrategyContext

__all__ = ["LLAMA4REC", "Llama4RecSettings", "apply_llama4rec_run", "rerank_candidates"]


@dataclass(frozen=True)
class Llama4RecSettings:
    """The strategy's settings (module docstring); ``rule`` None: the fixed ``alpha``."""

    n_candidates: int = 10
    history_len: int = 10
    prompt_aug: bool = True
    n_similar: int = 2
    similar_history: int = 3
    max_prompt_tokens: Optional[int] = 320
    max_new_tokens: int = 40
    seed: int = 0
    alpha: Optional[float] = None
    alpha1: Optional[float] = None
    alpha2: Optional[float] = None
    ell_min: Optional[float] = None
    ell_max: Optional[float] = None

    @classmethod
    def parse(cls, settings: dict[str, Any]) -> "Llama4RecSettings":
        """From ``strategy_args.llama4rec`` (a ConfigError names a bad key)."""
        from bridgerec._config_base import ConfigError

        known = {f.name for f in fields(cls)}
        extra = sorted(set(settings) - known - {"run"})
        if extra:
            raise ConfigError(f"strategy_args.llama4rec: unknown key(s) {extra}; known: {sorted(known | {'run'})}")
        try:
            out = cls(**{k: v for k, v in settings.items() if k in known})
            out.weight(1)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"strategy_args.llama4rec: {exc}") from None
        if out.n_candidates < 1:
            raise ConfigError(f"strategy_args.llama4rec.n_candidates must be >= 1, got {out.n_candidates}")
        return out

    @property
    def rule(self) -> Optional[AlphaRule]:
        keys = (self.alpha1, self.alpha2, self.ell_min, self.ell_max)
        if all(v is None for v in keys):
            return None
        if any(v is None for v in keys):
            raise ValueError("the adaptive rule needs alpha1, alpha2, ell_min and ell_max together")
        return AlphaRule(*(float(v) for v in keys))

    def weight(self, n_known: int) -> float:
        """α_u of a user with ``n_known`` known items."""
        rule = self.rule
        if rule is not None:
            return float(rule.alpha(int(n_known))[0])
        if self.alpha is None:
            raise ValueError("no weight: give run (a llama4rec run's export), alpha, or alpha1/alpha2/ell_min/ell_max")
        if not 0.0 <= float(self.alpha) <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        return float(self.alpha)


def rerank_candidates(domain_ids: list[int], llm_order: Optional[list[int]], alpha: float,
                      n_candidates: int) -> tuple[list[int], list[float]]:
    """The served list: the first ``n_candidates`` of the domain's ``domain_ids`` blended with the
    LLM's order of them (0-based positions into the domain order), then the rest in the domain
    order; scores are the blended utilities, the rest below every candidate's."""
    cands = domain_ids[:n_candidates]
    best, utility = aggregate_ranking(cands, llm_order, alpha)
    rest = domain_ids[n_candidates:]
    return best + rest, [float(u) for u in utility] + [-float(len(cands) + j) for j in range(1, len(rest) + 1)]


@lru_cache(maxsize=4)
def _tokenizer(path: str):
    from bridgerec.llm.backbone import load_tokenizer

    return load_tokenizer(path)


def _known(ctx: StrategyContext, q: Query) -> list[int]:
    """The user's items oldest first: the request's history, else the bundle's for a known user."""
    return list(q.history) if q.history else [int(i) for i in ctx.catalog.history(q.uid)]


async def _similar(ctx: StrategyContext, q: Query, s: Llama4RecSettings, own: set[int]) -> list[int]:
    if not (s.prompt_aug and s.n_similar > 0):
        return []
    users = await ctx.handle("retriever").similar_users.remote(q.uid, q.history, s.n_similar)
    c = ctx.catalog
    indptr, items = (c.history_indptr, c.history_items) if c.history_indptr is not None else (c.seen_indptr, c.seen_indices)
    return similar_items(indptr, items, users, s.similar_history, own)


async def _llama4rec(ctx: StrategyContext, q: Query) -> Ranked:
    from bridgerec.methods.llama4rec import to_domain_positions, token_counter
    from bridgerec.serving.llm import LLMClient

    client: LLMClient = ctx.handle("llm")
    s = Llama4RecSettings.parse(ctx.settings("llama4rec"))
    ids, _ = await ctx.handle("retriever").topk.remote(q.uid, q.history, max(q.k, s.n_candidates), q.exclude)
    ids = [int(i) for i in ids]
    known = _known(ctx, q)
    dom = ids[:s.n_candidates]
    if not dom:
        return Ranked([], [], "llama4rec")
    similar = await _similar(ctx, q, s, set(known))
    # a known user's shuffle is the one evaluation showed; an unknown one's is keyed by the history sent
    key = [q.uid] if q.uid is not None else [ctx.catalog.n_users, *known[-s.history_len:]]
    titles = ctx.catalog.titles
    p = render(shown_prompt(-1 if q.uid is None else q.uid, key, known[-s.history_len:], similar, dom, s.seed),
               lambda i: ItemView(int(i), str(titles[i])), augment=s.prompt_aug,
               version=client.info.settings.get("prompt_version", "v1"),
               count=token_counter(_tokenizer(client.info.path), client.chat) if s.max_prompt_tokens else None,
               max_tokens=s.max_prompt_tokens)
    text = await client.complete(engine_text(p.text, client.chat),
                                 GenerationParams(max_tokens=s.max_new_tokens, temperature=0.0, stop=("\n",)))
    shown = parse_ranking(text, len(p.candidates))
    if shown is None:
        raise ValueError(f"the LLM's ranking named no candidate: {text.strip()[:80]!r}")
    order = to_domain_positions(p, shown)
    n_known = len(known)
    alpha = s.weight(n_known)
    iids, scores = rerank_candidates(ids, order, alpha, s.n_candidates)
    details = {"alpha_u": alpha, "ell_u": float(long_tail_coefficient([n_known])[0]), "known_items": n_known,
               "llm_order": [str(ctx.catalog.item_ids[dom[k]]) for k in order]}
    return Ranked(iids[:q.k], scores[:q.k], "llama4rec", generated=text.strip(), details=details)


LLAMA4REC = Strategy(_llama4rec, budget_s=10.0, needs=("llm", "retriever"))
STRATEGY_PATH = "bridgerec.serving.llama4rec:LLAMA4REC"
"""Llama4Rec: the LLM's listwise order of the domain model's candidates blended with α_u (scores: the blended utilities)."""


def apply_llama4rec_run(args, log=print):
    """``args`` (RecommenderArgs) with ``strategy_args.llama4rec.run`` resolved: the LLM deployment
    serves the run's adapter (or its backbone untuned, for a run with ``tune: false``) with its
    chat template and prompt version; the prompt settings, seed and α (the adaptive rule, or the
    fixed weight of a ``fixed``/``llm``/``domain`` run) default to the run's. Then the settings
    are checked (a ConfigError names the key)."""
    import os

    settings = dict(args.strategy_args.get("llama4rec", {}))
    if "llama4rec" not in args.strategy_args:
        return args
    strategies = {"llama4rec": STRATEGY_PATH, **args.strategies}  # the app lists it only when it is configured
    if not settings.get("run"):
        Llama4RecSettings.parse(settings)
        return args.model_copy(update={"strategies": strategies})
    source = str(settings["run"])
    local, meta = read_export(source, "llama4rec", args.tracking_uri, need_adapter=False)
    serving, key = meta["serving"], f"strategy_args.llama4rec.run={source}"
    adapter = os.path.join(local, "adapter")
    llm = adapter_llm(args.llm, serving, adapter if os.path.isdir(adapter) else None, key)
    for name in ("n_candidates", "history_len", "prompt_aug", "n_similar", "similar_history", "max_prompt_tokens",
                 "max_new_tokens", "seed"):
        if name in serving:
            settings.setdefault(name, serving[name])
    if "alpha" not in settings:  # the run's weight, each key given here overriding it (alpha: one fixed weight)
        run_weight = meta["alpha_rule"] if meta.get("alpha_rule") else {"alpha": float(meta["choice"]["alpha"])}
        settings = {**run_weight, **settings}
    s = Llama4RecSettings.parse(settings)
    weight = (f"alpha1 {s.alpha1:g}, alpha2 {s.alpha2:g} over ell in [{s.ell_min:.2f}, {s.ell_max:.2f}]" if s.rule
              else f"fixed alpha {s.alpha:g}")
    log(f"[serve] llama4rec: serving {source} ({'adapter' if os.path.isdir(adapter) else 'untuned backbone'} on "
        f"{llm.model}, {s.n_candidates} candidates, {weight}, prompt augmentation {'on' if s.prompt_aug else 'off'})")
    return args.model_copy(update={"llm": llm, "strategies": strategies,
                                   "strategy_args": {**args.strategy_args, "llama4rec": settings}})
